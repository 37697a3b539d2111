"""Sufficient statistics of a prediction against references, computed block by block.

Every metric is a ratio of sums (sum of |e| over a weighted count, sum of SSIM-map values over their count, ...),
so one kernel computes the sums of a block, blocks are merged by adding, samples are pooled by adding, and
numpy input is simply the one-block case. The kernel works on pieces of a few thousand pixels (pixel-wise sums)
and on slabs of 32 rows (SSIM) in float64, so its temporaries are a few megabytes whatever the block size.

SSIM needs 5 pixels of context. A block is scored as if zeros lay beyond it, except within 5 pixels of the
edges marked ``inner`` (chunk boundaries inside the scene): those pixels are left to the seam tasks of
:mod:`.blocks`, which score them from 10-pixel strips of the blocks on both sides. A chunked array therefore gives
the numbers of the in-memory one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._inputs import check_weights, is_dask
from .structural import BLAS_ONE_THREAD, HALO, blur, ssim_from_moments, window_reach

#: Values above this are digital numbers, not reflectance.
_DN_LIMIT = 100.0
#: Output rows per SSIM slab (the blur works on 32-row slabs too).
_SLAB_ROWS = 32
_MIN_KEYS = ("tmin",)
_MAX_KEYS = ("tmax", "pred_max", "ref_max")
Stats = dict[str, np.ndarray]


@dataclass(frozen=True)
class Spec:
    """What the block tasks of one evaluation compute: the same for every block.

    ``columns[j]`` lists, for each weighting of comparison ``j``, its row in the weight stack of a piece: row 0 is
    all ones when ``ones`` (a weighting ``None``), the given weights follow in order. ``shape`` is the scene's
    (H, W), for ``border="valid"``.
    """

    columns: tuple[tuple[int, ...], ...]
    ones: bool
    parts: frozenset[str]
    data_range: float
    border: str
    shape: tuple[int, int]
    names: tuple[tuple[str, str], ...]


def make_spec(
    weights: Sequence[Sequence[Any]],
    names: Sequence[tuple[str, str]],
    *,
    parts: frozenset[str],
    data_range: float,
    border: str,
    shape: tuple[int, int],
) -> tuple[Spec, list[Any]]:
    """The :class:`Spec` of comparisons with these weightings (``None`` = all ones), and the given weights in order."""
    ones = any(wt is None for wts in weights for wt in wts)
    given = [wt for wts in weights for wt in wts if wt is not None]
    columns, index = [], int(ones)
    for wts in weights:
        row = []
        for wt in wts:
            row.append(0 if wt is None else index)
            index += wt is not None
        columns.append(tuple(row))
    spec = Spec(tuple(columns), ones, frozenset(parts), float(data_range), border, tuple(shape), tuple(names))
    return spec, given


def empty_stats(spec: Spec, n: int, c: int) -> list[tuple[Stats, list[Stats]]]:
    """Zeroed sums per comparison: the ranges and maxima (``common``) and one dict per weighting sharing them."""
    out = []
    for cols in spec.columns:
        common = {"tmin": np.full((n, c), np.inf), "tmax": np.full((n, c), -np.inf)}
        common |= {key: np.zeros(n) for key in ("nan", "pred_max", "ref_max")}
        keys = [("n", (n, c)), ("abs", (n, c)), ("sq", (n, c))]
        keys += [("sam_sum", (n,)), ("sam_n", (n,))] if "sam" in spec.parts else []
        keys += [("ssim_sum", (n,)), ("ssim_n", (n,))] if "ssim" in spec.parts else []
        out.append((common, [common | {key: np.zeros(shape) for key, shape in keys} for _ in cols]))
    return out


def flat(stats: list[tuple[Stats, list[Stats]]]) -> list[Stats]:
    """One dict per weighting of each comparison, in order."""
    return [d for _, dicts in stats for d in dicts]


def block_sums(
    spec: Spec,
    pred: np.ndarray,
    refs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    *,
    origin: tuple[int, int] = (0, 0),
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> list[tuple[Stats, list[Stats]]]:
    """The sums of one block.

    Parameters
    ----------
    pred, refs : (n, C, h, w) float arrays
        The block of the prediction and of each reference.
    weights : (n or 1, h, w) arrays in [0, 1]
        The given weights (``None`` weightings are not passed), checked here.
    origin : (row, column) of the block in the scene, for ``border="valid"``.
    inner : (top, bottom, left, right)
        Edges that are chunk boundaries inside the scene: SSIM leaves the pixels within 5 of them to the seams.

    Returns per comparison ``common`` and one dict per weighting: ``n``, ``abs``, ``sq``, ``tmin``, ``tmax``
    (n, C) — weighted count, sum of |e| and e², range of the reference over valid values — and ``nan``,
    ``pred_max``, ``ref_max`` (n,), plus ``sam_sum``, ``sam_n``, ``ssim_sum``, ``ssim_n`` (n,) when asked for.
    """
    n, c, h, w = pred.shape
    for wt in weights:
        check_weights(wt)
    stats = empty_stats(spec, n, c)
    top, bottom, left, right = (HALO * bool(edge) for edge in inner)
    for i in range(n):
        x, ys = pred[i], [ref[i] for ref in refs]
        wts = [wt[i if len(wt) == n else 0] for wt in weights]
        pixel_sums(spec, x, ys, wts, stats, i)
        if "ssim" in spec.parts:
            rows, cols = counted(spec, origin, (top, h - bottom), (left, w - right))
            ssim_sums(spec, x, ys, wts, rows, cols, stats, i)
    for (common, _), pair in zip(stats, spec.names, strict=True):
        _check_reflectance(common, pair)
    return stats


def counted(
    spec: Spec, origin: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The rows and columns of a window (at ``origin`` in the scene) whose SSIM counts, ``border`` applied."""
    if spec.border != "valid":
        return rows, cols
    bounds = []
    for (a, b), start, size in zip((rows, cols), origin, spec.shape, strict=True):
        bounds.append((max(a, HALO - start), min(b, size - HALO - start)))
    return bounds[0], bounds[1]


def _stack_weights(spec: Spec, weights: Sequence[np.ndarray], index: tuple[slice, slice], size: int) -> np.ndarray:
    """The weights of a piece as rows of a (K, size) float64 array, row 0 all ones when ``spec.ones``."""
    rows = [np.ones(size)] if spec.ones else []
    rows += [np.asarray(wt[index], dtype=np.float64).reshape(-1) for wt in weights]
    return np.stack(rows)


def _wsums(planes: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Weighted sums (m, K) of planes (m, S) with weights (K, S)."""
    m, k = len(planes), len(wts)
    if min(m, k) == 1:  # numpy hands such products to BLAS GEMV/DOT, which thread far sooner
        return np.einsum("ms,ks->mk", planes, wts)
    step = max(1, BLAS_ONE_THREAD // (m * k))  # GEMMs small enough to run on the calling thread
    return sum(planes[:, s : s + step] @ wts[:, s : s + step].T for s in range(0, planes.shape[1], step))


def pixel_sums(
    spec: Spec,
    x: np.ndarray,
    ys: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    stats: list[tuple[Stats, list[Stats]]],
    i: int,
) -> None:
    """Add the pixel-wise sums (counts, errors, ranges, SAM) of sample ``i``: ``x``, ``ys`` (C, h, w)."""
    c, h, w = x.shape
    size = max(1, BLAS_ONE_THREAD // (c * (len(weights) + spec.ones)))  # pixels per piece: one GEMM each
    step_r, step_c = max(1, size // w), min(w, size)
    for r0 in range(0, h, step_r):
        for c0 in range(0, w, step_c):
            index = (slice(r0, r0 + step_r), slice(c0, c0 + step_c))
            p = np.asarray(x[:, index[0], index[1]], dtype=np.float64).reshape(c, -1)
            wts = _stack_weights(spec, weights, index, p.shape[1])
            pp = None  # Σ p² per pixel, shared by the comparisons without NaN
            for j, y in enumerate(ys):
                t = np.asarray(y[:, index[0], index[1]], dtype=np.float64).reshape(c, -1)
                with np.errstate(invalid="ignore", over="ignore"):  # NaN is found from the sums, then left out
                    pp = _add_pixels(spec, stats[j], i, p, t, wts, j, pp)


def _add_pixels(
    spec: Spec,
    stats: tuple[Stats, list[Stats]],
    i: int,
    p: np.ndarray,
    t: np.ndarray,
    wts: np.ndarray,
    j: int,
    pp: np.ndarray | None,
) -> np.ndarray | None:
    """Add the sums of one piece (p, t: (C, S)) of comparison ``j``; returns Σ p² per pixel when all values count."""
    common, dicts = stats
    e = p - t
    sums = np.stack([_wsums(np.abs(e), wts), _wsums(e * e, wts)])
    valid = None
    if np.isfinite(sums).all():  # the usual case: no NaN, every value counts
        counts = np.broadcast_to(wts.sum(axis=1), sums.shape[1:])
        tmin, tmax, p0, t0 = t.min(axis=1), t.max(axis=1), p, t
    else:  # NaN (or inf) somewhere: leave those values out
        valid = np.isfinite(p) & np.isfinite(t)
        p0, t0 = np.where(valid, p, 0.0), np.where(valid, t, 0.0)
        e = p0 - t0
        sums = np.stack([_wsums(np.abs(e), wts), _wsums(e * e, wts)])
        counts = _wsums(valid.astype(np.float64), wts)
        tmin = np.where(valid, t, np.inf).min(axis=1)
        tmax = np.where(valid, t, -np.inf).max(axis=1)
        common["nan"][i] += valid.size - np.count_nonzero(valid)
    common["tmin"][i] = np.minimum(common["tmin"][i], tmin)
    common["tmax"][i] = np.maximum(common["tmax"][i], tmax)
    common["pred_max"][i] = max(common["pred_max"][i], np.abs(p0).max(initial=0.0))
    common["ref_max"][i] = max(common["ref_max"][i], np.abs(t0).max(initial=0.0))
    for d, col in zip(dicts, spec.columns[j], strict=True):
        d["n"][i] += counts[:, col]
        d["abs"][i] += sums[0][:, col]
        d["sq"][i] += sums[1][:, col]
    if "sam" not in spec.parts:
        return pp
    if valid is not None or pp is None:
        norm_p = np.einsum("cs,cs->s", p0, p0)
    else:
        norm_p = pp
    angle = _spectral_angle(np.einsum("cs,cs->s", p0, t0), np.einsum("cs,cs->s", t0, t0), norm_p)
    if valid is None:
        sam = np.concatenate([_wsums(angle[None], wts)[0], wts.sum(axis=1)])
    else:
        pixel_valid = valid.all(axis=0)
        angle[~pixel_valid] = 0.0
        sam = _wsums(np.stack([angle, pixel_valid.astype(np.float64)]), wts).reshape(-1)
    k = len(wts)
    for d, col in zip(dicts, spec.columns[j], strict=True):
        d["sam_sum"][i] += sam[col]
        d["sam_n"][i] += sam[k + col]
    return norm_p if valid is None else pp


def ssim_sums(
    spec: Spec,
    x: np.ndarray,
    ys: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    rows: tuple[int, int],
    cols: tuple[int, int],
    stats: list[tuple[Stats, list[Stats]]],
    i: int,
) -> None:
    """Add the SSIM sums of the pixels ``rows × cols`` of a window, zeros assumed beyond it.

    ``x``, ``ys``: (C, hh, ww); ``weights``: (hh, ww) each. The window must hold 5 pixels of context around the
    counted pixels wherever the scene goes on.
    """
    (a, b), (c0, c1) = rows, cols
    if a >= b or c0 >= c1:
        return
    width = c1 - c0
    planes = np.empty((2 + 3 * len(ys), _SLAB_ROWS + 2 * HALO, width + 2 * HALO))
    moments = np.empty((len(planes), _SLAB_ROWS, width))
    for r0 in range(a, b, _SLAB_ROWS):
        r = min(_SLAB_ROWS, b - r0)
        index = (slice(r0, r0 + r), slice(c0, c1))
        wts = _stack_weights(spec, weights, index, r * width)
        slab = (planes[:, : r + 2 * HALO], moments[:, :r])
        with np.errstate(invalid="ignore", over="ignore"):  # NaN is found from the sums, then left out
            sums, counts = _ssim_slab(spec, x, ys, (r0, c0), slab, wts, careful=False)
        if not np.isfinite(sums).all():  # NaN (or inf) within reach: redo, leaving out the pixels it reaches
            sums, counts = _ssim_slab(spec, x, ys, (r0, c0), slab, wts, careful=True)
        for j, (_, dicts) in enumerate(stats):
            for d, col in zip(dicts, spec.columns[j], strict=True):
                d["ssim_sum"][i] += sums[j, col]
                d["ssim_n"][i] += counts[j, col]


def _ssim_slab(
    spec: Spec,
    x: np.ndarray,
    ys: Sequence[np.ndarray],
    corner: tuple[int, int],
    slab: tuple[np.ndarray, np.ndarray],
    wts: np.ndarray,
    *,
    careful: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM sums and counts (comparisons, K) of one slab whose first counted pixel is ``corner``.

    ``slab`` holds the buffers: planes (x, x², then y, y², x·y per reference) with the 5-pixel margin, and their
    window means. ``careful`` zeroes non-finite values and leaves out the pixels whose window reaches one.
    """
    planes, moments = slab
    r, width = moments.shape[1:]
    (r0, c0), (hh, ww) = corner, x.shape[1:]
    lo, hi = max(r0 - HALO, 0), min(r0 + r + HALO, hh)
    left, right = max(c0 - HALO, 0), min(c0 + width + HALO, ww)
    inside = (slice(lo - r0 + HALO, hi - r0 + HALO), slice(left - c0 + HALO, right - c0 + HALO))
    if inside[0].stop - inside[0].start < planes.shape[1] or inside[1].stop - inside[1].start < planes.shape[2]:
        planes.fill(0.0)  # beyond the window: zeros, as SSIM pads
    total = np.zeros((len(ys), r, width))
    valid_count = np.zeros((len(ys), r, width)) if careful else None
    for band in range(x.shape[0]):
        planes[0][inside] = x[band, lo:hi, left:right]
        for j, y in enumerate(ys):
            planes[2 + 3 * j][inside] = y[band, lo:hi, left:right]
        bad = []
        if careful:
            for k in (0, *range(2, len(planes), 3)):  # x, then each y
                bad.append(~np.isfinite(planes[k]))
                planes[k][bad[-1]] = 0.0
        np.multiply(planes[0], planes[0], out=planes[1])
        for k in range(2, len(planes), 3):
            np.multiply(planes[k], planes[k], out=planes[k + 1])
            np.multiply(planes[0], planes[k], out=planes[k + 2])
        blur(planes, out=moments)
        for j in range(len(ys)):
            k = 2 + 3 * j
            smap = ssim_from_moments(
                moments[0], moments[k], moments[1], moments[k + 1], moments[k + 2], spec.data_range
            )
            if careful:
                reach = window_reach(bad[0] | bad[1 + j])[HALO : HALO + r, HALO : HALO + width]
                valid = ~reach & np.isfinite(smap)
                smap[~valid] = 0.0
                valid_count[j] += valid
            total[j] += smap
    sums = _wsums(total.reshape(len(ys), -1), wts)
    if careful:
        return sums, _wsums(valid_count.reshape(len(ys), -1), wts)
    return sums, np.broadcast_to(x.shape[0] * wts.sum(axis=1), sums.shape)


def _check_reflectance(common: Stats, names: tuple[str, str]) -> None:
    """Refuse digital numbers: the scores are defined on reflectance."""
    for key, name in zip(("pred_max", "ref_max"), names, strict=True):
        if common[key].max(initial=0.0) > _DN_LIMIT:
            raise ValueError(
                f"{name}: expected reflectance in [0, 1], found values up to {common[key].max():g} (DN?); "
                "scale Sentinel-2 DN with xcloudfree.sensors.reflectance first"
            )


def _spectral_angle(dot: np.ndarray, norm_t2: np.ndarray, norm_p2: np.ndarray) -> np.ndarray:
    """Angle (radians) from Σ t·p, Σ t², Σ p² per pixel: 0 where both spectra are zero, π/2 where one is."""
    norm_t, norm_p = np.sqrt(norm_t2), np.sqrt(norm_p2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / norm_t / norm_p  # the reference's order of operations, for the last digits
    angle = np.arccos(np.clip(cos, -1.0, 1.0))
    zero_t, zero_p = norm_t == 0, norm_p == 0
    angle[zero_t | zero_p] = np.pi / 2
    angle[zero_t & zero_p] = 0.0
    return angle


def _combine(key: str, stacked: np.ndarray) -> np.ndarray:
    if key in _MIN_KEYS:
        return stacked.min(axis=0)
    if key in _MAX_KEYS:
        return stacked.max(axis=0)
    return stacked.sum(axis=0)


def concat(parts: Sequence[list[Stats]]) -> list[Stats]:
    """Stack the statistics of consecutive sample blocks along the sample axis."""
    return [{key: np.concatenate([g[key] for g in group]) for key in group[0]} for group in zip(*parts, strict=True)]


def pool(stats: Stats) -> Stats:
    """Statistics of all samples taken as one (a batch of one): the pooled figure."""
    return {key: _combine(key, value)[None] for key, value in stats.items()}


def comparison_stats(
    pred: Any,
    comparisons: Sequence[tuple[Any, Sequence[Any], tuple[str, str]]],
    *,
    parts: frozenset[str],
    border: str,
    data_range: float,
) -> Any:
    """Per-sample statistics of ``pred`` (N, C, H, W) against references.

    ``comparisons`` holds ``(ref, weights, (pred name, ref name))`` triples; the result is one flat list of dicts,
    a dict per weighting of each comparison in order, or a Delayed of it for Dask input. On Dask each chunk is read
    once and scored against every reference in one task (:mod:`.blocks`).
    """
    refs = [ref for ref, _, _ in comparisons]
    spec, given = make_spec(
        [wts for _, wts, _ in comparisons],
        [pair for _, _, pair in comparisons],
        parts=parts,
        data_range=data_range,
        border=border,
        shape=pred.shape[-2:],
    )
    if any(is_dask(a) for a in (pred, *refs, *given)):
        from .blocks import lazy_stats

        return lazy_stats(spec, pred, refs, given)
    return flat(block_sums(spec, pred, refs, given))


def layout(stats: list[Stats]) -> list[tuple[int, str, tuple[int, ...]]]:
    """(group, key, per-sample shape) of each stretch of the packed vector, in packing order."""
    return [(g, key, value.shape[1:]) for g, d in enumerate(stats) for key, value in d.items()]


def pack(stats: list[Stats]) -> np.ndarray:
    """The statistics as one (n, size) array, in the order :func:`layout` describes."""
    return np.concatenate([value.reshape(len(value), -1) for d in stats for value in d.values()], axis=1)


def unpack(layout: list, total: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[Stats]:
    """The statistics from the packed per-sample sums, minima and maxima (N, size) over all blocks."""
    out: list[Stats] = [{} for _ in range(layout[-1][0] + 1)]
    start = 0
    for group, key, shape in layout:
        source = low if key in _MIN_KEYS else high if key in _MAX_KEYS else total
        stop = start + int(np.prod(shape, dtype=int))
        out[group][key] = source[:, start:stop].reshape(len(source), *shape)
        start = stop
    return out


def materialize(*jobs: Any) -> tuple:
    """Compute the Delayed among ``jobs`` in one pass over the data."""
    if any(is_dask(j) for j in jobs):
        import dask

        return dask.compute(*jobs)
    return jobs


def finish(stats: Stats, *, data_range: float, radians: bool) -> dict[str, np.ndarray]:
    """Metric values per sample from the statistics; NaN where nothing was counted."""
    with np.errstate(divide="ignore", invalid="ignore"):
        count = stats["n"].sum(axis=-1)
        mse = stats["sq"].sum(axis=-1) / count
        out = {"mae": stats["abs"].sum(axis=-1) / count, "rmse": np.sqrt(mse)}
        out["psnr"] = 20.0 * np.log10(data_range / out["rmse"])
        value_range = stats["tmax"] - stats["tmin"]
        band_rmse = np.sqrt(stats["sq"] / stats["n"])
        out["band_nrmse"] = np.where(value_range > 0, band_rmse / value_range, np.nan)
        if "sam_sum" in stats:
            sam = stats["sam_sum"] / stats["sam_n"]
            out["sam"] = sam if radians else np.degrees(sam)
        if "ssim_sum" in stats:
            out["ssim"] = stats["ssim_sum"] / stats["ssim_n"]
    return out


def reduce(
    stats: Stats, reduction: str, *, data_range: float, radians: bool, what: str, stacklevel: int = 3
) -> dict[str, Any]:
    """Metric values of a batch: per sample (``"none"``), their mean (``"mean"``) or pooled (``"pooled"``).

    A metric with nothing to count in a sample (empty mask, all NaN) is NaN there, with a warning naming
    ``what``; the mean over samples leaves such samples out.
    """
    if reduction == "pooled":
        stats = pool(stats)
    counts = {"pixels": stats["n"].sum(axis=-1)}
    counts.update({key[:-2]: stats[key] for key in ("sam_n", "ssim_n") if key in stats})
    empty = {key: int((cnt <= 0).sum()) for key, cnt in counts.items() if (cnt <= 0).any()}
    if empty:
        warnings.warn(
            f"{what}: nothing to count (empty mask or all NaN) in {empty} of {len(stats['n'])} "
            + ("pooled sample" if reduction == "pooled" else "samples")
            + "; those values are NaN"
            + (" and left out of the mean" if reduction == "mean" else ""),
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    values = finish(stats, data_range=data_range, radians=radians)
    if reduction == "pooled":
        return {k: v[0] for k, v in values.items()}
    if reduction == "none":
        return values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN, already warned above
        return {k: np.nanmean(v, axis=0) for k, v in values.items()}
