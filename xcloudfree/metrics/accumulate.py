"""Sufficient statistics of a prediction against a reference, computed block by block.

Every metric is a ratio of sums (sum of |e| over a weighted count, sum of SSIM-map values over their count, ...),
so one kernel computes the sums of a block, blocks are merged by adding, samples are pooled by adding, and
numpy input is simply the one-block case. Dask input is cut into blocks with a zero-filled 5-pixel halo at the
array edges (the SSIM window), so a chunked array gives the numbers of the in-memory one. Because of that halo,
Dask keeps a few rows of chunks in memory at a time: memory grows with chunk height × image width, not with the
image size (bench/bench_metrics.py).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._inputs import check_weights, is_dask
from .structural import HALO, ssim_map

#: Values above this are digital numbers, not reflectance.
_DN_LIMIT = 100.0
#: Pixels per slab of rows in the block kernel: its float64 temporaries are a few slabs of this size.
_SLAB_PIXELS = 2**20
_MIN_KEYS = ("tmin",)
_MAX_KEYS = ("tmax", "pred_max", "ref_max")
Stats = dict[str, np.ndarray]


def block_stats(
    pred: np.ndarray,
    ref: np.ndarray,
    weights: Sequence[np.ndarray | None],
    *,
    halo: int,
    crop: tuple[int, int, int, int],
    parts: frozenset[str],
    data_range: float,
    names: tuple[str, str],
) -> list[Stats]:
    """Sums over one block, one dict per weighting.

    Parameters
    ----------
    pred, ref : (n, C, h + 2·halo, w + 2·halo)
        The block with its halo (0: none, zeros are assumed beyond the block).
    weights : list of (n or 1, h + 2·halo, w + 2·halo) arrays in [0, 1], or None for all ones
    crop : (top, bottom, left, right)
        Rows/columns of the block's inner part left out of SSIM (``border="valid"`` at the array edges).
    parts : subset of {"sam", "ssim"}
        The optional, costlier sums to compute.

    Returns per weighting ``n``, ``abs``, ``sq``, ``tmin``, ``tmax`` (n, C) — weighted count, sum of |e| and
    e², range of ``ref`` over valid values — and ``nan``, ``pred_max``, ``ref_max`` (n,), plus ``sam_sum``,
    ``sam_n``, ``ssim_sum``, ``ssim_n`` (n,) when asked for. Works on one band of a slab of rows at a time in
    float64, so its temporaries are a few megabytes whatever the block size.
    """
    n, c, height, width = pred.shape
    h, w = height - 2 * halo, width - 2 * halo
    wts = [None if wt is None else _inner_weights(wt, halo, (n, h, w)) for wt in weights]
    region = np.zeros((h, w), dtype=bool)
    top, bottom, left, right = crop
    region[top : h - bottom, left : w - right] = True
    common, out = _empty_stats(n, c, parts, len(wts))
    add_slab = functools.partial(_add_slab, out, common, halo=halo, region=region, parts=parts, data_range=data_range)
    step = max(1, _SLAB_PIXELS // max(w, 1))
    for i, r0 in ((i, r0) for i in range(n) for r0 in range(0, h, step)):
        r1 = min(h, r0 + step)
        add_slab(pred[i], ref[i], [None if wt is None else wt[i, r0:r1] for wt in wts], i=i, rows=(r0, r1))
    _check_reflectance(common, names)
    return out


def _inner_weights(wt: np.ndarray, halo: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The weights of the block's inner part as contiguous float64 (n, h, w), checked to lie in [0, 1]."""
    n, h, w = shape
    wt = np.asarray(wt[..., halo : halo + h, halo : halo + w], dtype=np.float64)
    wt = np.ascontiguousarray(np.broadcast_to(wt, shape))  # contiguous rows: dot products copy nothing
    check_weights(wt)
    return wt


def _empty_stats(n: int, c: int, parts: frozenset[str], count: int) -> tuple[Stats, list[Stats]]:
    """Zeroed sums for ``count`` weightings; the ranges and maxima (``common``) are one set shared by all."""
    common = {"tmin": np.full((n, c), np.inf), "tmax": np.full((n, c), -np.inf)}
    common |= {key: np.zeros(n) for key in ("nan", "pred_max", "ref_max")}
    keys = [("n", (n, c)), ("abs", (n, c)), ("sq", (n, c))]
    keys += [("sam_sum", (n,)), ("sam_n", (n,))] if "sam" in parts else []
    keys += [("ssim_sum", (n,)), ("ssim_n", (n,))] if "ssim" in parts else []
    return common, [common | {key: np.zeros(shape) for key, shape in keys} for _ in range(count)]


def _add_slab(
    out: list[Stats],
    common: Stats,
    pred: np.ndarray,
    ref: np.ndarray,
    slab_w: list[np.ndarray | None],
    *,
    i: int,
    rows: tuple[int, int],
    halo: int,
    region: np.ndarray,
    parts: frozenset[str],
    data_range: float,
) -> None:
    """Add the sums of rows ``r0:r1`` of the inner part of sample ``i`` (``pred``, ``ref``: (C, H, W) with halo)."""
    r0, r1 = rows
    w = region.shape[1]
    context = HALO if "ssim" in parts else 0  # pixels around each inner pixel that its sums need
    inner = (slice(context, context + r1 - r0), slice(context, context + w))
    dot, norm_t, norm_p = (np.zeros((r1 - r0, w)) for _ in range(3))
    pixel_valid = np.ones((r1 - r0, w), dtype=bool)
    for b in range(pred.shape[0]):
        extent = (halo + r0 - context, halo + r1 + context, halo - context, halo + w + context)
        p_win, t_win = _window(pred[b], *extent), _window(ref[b], *extent)
        p, t = p_win[inner], t_win[inner]
        valid = np.isfinite(p) & np.isfinite(t)
        p0, t0 = np.where(valid, p, 0.0), np.where(valid, t, 0.0)
        _track_ranges(common, (i, b), t, p0, t0, valid)
        err = p0 - t0
        _add_weighted(out, slab_w, (i, b), {"n": valid.astype(np.float64), "abs": np.abs(err), "sq": err * err})
        if "sam" in parts:
            dot += p0 * t0
            norm_t += t0 * t0
            norm_p += p0 * p0
            pixel_valid &= valid
        if "ssim" in parts:
            smap = ssim_map(p_win, t_win, data_range)[inner]
            ssim_valid = np.isfinite(smap) & region[r0:r1]
            planes = {"ssim_sum": np.where(ssim_valid, smap, 0.0), "ssim_n": ssim_valid.astype(np.float64)}
            _add_weighted(out, slab_w, i, planes)
    if "sam" in parts:
        angle = np.where(pixel_valid, _spectral_angle(dot, norm_t, norm_p), 0.0)
        _add_weighted(out, slab_w, i, {"sam_sum": angle, "sam_n": pixel_valid.astype(np.float64)})


def _track_ranges(
    common: Stats, index: tuple[int, int], t: np.ndarray, p0: np.ndarray, t0: np.ndarray, valid: np.ndarray
) -> None:
    """Update the range of the valid ``t``, the count of invalid pixels and the largest |values| of one band."""
    i, _ = index
    common["tmin"][index] = min(common["tmin"][index], np.where(valid, t, np.inf).min(initial=np.inf))
    common["tmax"][index] = max(common["tmax"][index], np.where(valid, t, -np.inf).max(initial=-np.inf))
    common["nan"][i] += valid.size - np.count_nonzero(valid)
    common["pred_max"][i] = max(common["pred_max"][i], np.abs(p0).max(initial=0.0))
    common["ref_max"][i] = max(common["ref_max"][i], np.abs(t0).max(initial=0.0))


def _add_weighted(
    out: list[Stats], slab_w: list[np.ndarray | None], index: int | tuple[int, int], planes: dict[str, np.ndarray]
) -> None:
    """Add the weighted sum of each plane to ``stats[key][index]`` of every weighting."""
    for stats, wt in zip(out, slab_w, strict=True):
        for key, plane in planes.items():
            stats[key][index] += _wsum(plane, wt)


def _check_reflectance(common: Stats, names: tuple[str, str]) -> None:
    """Refuse digital numbers: the scores are defined on reflectance."""
    for key, name in zip(("pred_max", "ref_max"), names, strict=True):
        if common[key].max(initial=0.0) > _DN_LIMIT:
            raise ValueError(
                f"{name}: expected reflectance in [0, 1], found values up to {common[key].max():g} (DN?); "
                "scale Sentinel-2 DN with xcloudfree.sensors.reflectance first"
            )


def _window(plane: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``plane[r0:r1, c0:c1]`` as a new float64 array, zeros where the range goes beyond the plane."""
    out = np.zeros((r1 - r0, c1 - c0))
    rs, re = max(r0, 0), min(r1, plane.shape[0])
    cs, ce = max(c0, 0), min(c1, plane.shape[1])
    if re > rs and ce > cs:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = plane[rs:re, cs:ce]
    return out


def _wsum(plane: np.ndarray, w: np.ndarray | None) -> float:
    """Sum of a float64 (h, w) plane, weighted by ``w`` (h, w) when given (a dot product: no temporary)."""
    if w is None:
        return float(plane.sum())
    return float(np.dot(plane.ravel(), w.ravel()))


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


def _group_stats(
    pred: np.ndarray,
    refs: Sequence[np.ndarray],
    weights: Sequence[Sequence[np.ndarray | None]],
    *,
    names: Sequence[tuple[str, str]],
    **kwargs: Any,
) -> list[Stats]:
    """:func:`block_stats` of ``pred`` against each reference, one flat list of dicts."""
    out = []
    for ref, wts, pair in zip(refs, weights, names, strict=True):
        out += block_stats(pred, ref, wts, names=pair, **kwargs)
    return out


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
    a dict per weighting of each comparison in order, or a Delayed of it for Dask input. On Dask each block of
    ``pred`` is scored against every reference in one task (no block waits in memory for a second pass), and the
    per-block sums, packed into a small array, are reduced by Dask.
    """
    refs = [ref for ref, _, _ in comparisons]
    weights = [list(wts) for _, wts, _ in comparisons]
    kwargs = {"parts": parts, "data_range": data_range, "names": [pair for _, _, pair in comparisons]}
    flat_weights = [wt for wts in weights for wt in wts]
    if not any(is_dask(a) for a in (pred, *refs, *flat_weights)):
        crop = (HALO,) * 4 if border == "valid" else (0,) * 4
        return _group_stats(pred, refs, weights, halo=0, crop=crop, **kwargs)

    import dask
    import dask.array as da

    n, c, height, width = pred.shape
    base = next((a for a in (pred, *refs) if is_dask(a)), None)
    if base is None:  # only a mask is lazy
        base = da.asarray(pred, chunks=(1, c, "auto", "auto"))
    chunks = (base.chunks[0], (c,), base.chunks[2], base.chunks[3])
    halo = HALO if "ssim" in parts else 0

    def prepare(a: Any) -> Any:
        a = da.asarray(a)
        if a.ndim == 3:  # weights get a band axis of 1, so that their blocks line up with the images'
            a = da.broadcast_to(a[:, None], (n, 1, height, width)).rechunk((chunks[0], (1,), *chunks[2:]))
        else:
            a = a.rechunk(chunks)
        if halo:
            a = da.overlap.overlap(a, depth={2: halo, 3: halo}, boundary={2: 0, 3: 0})
        return a

    inputs = [prepare(pred)] + [prepare(r) for r in refs]
    inputs += [prepare(wt) for wt in flat_weights if wt is not None]
    spatial = inputs[0].chunks[2:]
    offsets = [np.cumsum([0, *(size - 2 * halo for size in axis)]) for axis in spatial]
    present = [[wt is not None for wt in wts] for wts in weights]  # the tasks need the pattern, not the masks
    # the layout of the packed sums, from a block of one pixel
    probe = [np.zeros((1, a.shape[1], 1 + 2 * halo, 1 + 2 * halo)) for a in inputs]
    layout = _layout(_group_stats(*_unflatten(probe, present), halo=halo, crop=(0, 0, 0, 0), **kwargs))

    def crop(j: int, k: int) -> tuple[int, int, int, int]:
        if border != "valid":
            return (0, 0, 0, 0)
        (y0, y1), (x0, x1) = offsets[0][j : j + 2], offsets[1][k : k + 2]
        return (
            int(np.clip(HALO - y0, 0, y1 - y0)),
            int(np.clip(y1 - (height - HALO), 0, y1 - y0)),
            int(np.clip(HALO - x0, 0, x1 - x0)),
            int(np.clip(x1 - (width - HALO), 0, x1 - x0)),
        )

    def packed(*blocks: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        j, k = block_info[0]["chunk-location"][2:]
        stats = _group_stats(*_unflatten(list(blocks), present), halo=halo, crop=crop(j, k), **kwargs)
        return _pack(stats)[:, :, None, None]

    size = sum(int(np.prod(shape, dtype=int)) for _, _, shape in layout)
    sums = da.map_blocks(
        packed,
        *inputs,
        dtype=np.float64,
        chunks=(chunks[0], (size,), (1,) * len(spatial[0]), (1,) * len(spatial[1])),
    )
    reduced = [sums.sum(axis=(2, 3)), sums.min(axis=(2, 3)), sums.max(axis=(2, 3))]
    return dask.delayed(_unpack, pure=True)(layout, *reduced)


def _unflatten(blocks: list, present: list[list[bool]]) -> tuple:
    """(pred, refs, weights per comparison) from the flat block list (pred, refs..., the given weights...)."""
    pred, rest = blocks[0], blocks[1:]
    refs, rest = rest[: len(present)], iter(rest[len(present) :])
    return pred, refs, [[next(rest)[:, 0] if given else None for given in row] for row in present]


def _layout(stats: list[Stats]) -> list[tuple[int, str, tuple[int, ...]]]:
    """(group, key, per-sample shape) of each stretch of the packed vector, in packing order."""
    return [(g, key, value.shape[1:]) for g, d in enumerate(stats) for key, value in d.items()]


def _pack(stats: list[Stats]) -> np.ndarray:
    return np.concatenate([value.reshape(len(value), -1) for d in stats for value in d.values()], axis=1)


def _unpack(layout: list, total: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[Stats]:
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
