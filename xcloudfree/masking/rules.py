"""The rule-based cloud and shadow detector of DSen2-CR, also used by UnCRtainTS and CARF (REFERENCE §4).

Cloud score from L1C top-of-atmosphere reflectance: brightness and cirrus limits, a snow test, a 5×5 grey
closing (reflect at the image border) and a 7×7 mean (zero fill at the image border), clipped to [1e-5, 1].
Shadow: dark pixels in NIR + SWIR1 (CSI) and blue, below thresholds set by the image statistics, cleaned by a
5×5 median. Arithmetic follows the reference: float32 reflectance = DN / 10000, float64 mean filter.

The shadow thresholds need statistics of "the array passed in" (one 256×256 patch in the references).
``shadow_stats="scene"`` (the default) uses the minimum and mean of the whole array, as the reference does on any
array: on Dask, :func:`detect` first computes them with a reduction that streams the chunks (only per-window
partial sums stay in memory), then returns the lazy masks built with those numbers, so the input is read twice
and peak memory stays that of the chunks in flight. ``shadow_stats="window"`` computes them per
``window``×``window`` tile of a grid anchored at the array origin (the last row and column of tiles may be
smaller): one lazy pass that computes nothing in :func:`detect`, identical to ``"scene"`` on a single 256 patch,
but local on larger arrays (on a real 512² mosaic its shadows differ from the whole-array rule's on 3.8 % of
the pixels: ``docs/masking.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from .blocks import (
    Borders,
    aligned_chunks,
    as_s2,
    box_sum,
    crop,
    map_blocks_with_halo,
    nodata_of,
    outside,
    per_leading,
    select_bands,
    stack_layers,
    to_dataset,
    valid_pixels,
    with_margin,
)

__all__ = ["detect", "DEFAULTS", "UNCRTAINTS_B01_B10"]

#: Bands the detector reads, in the order of the block layers.
BANDS = ("B01", "B02", "B03", "B04", "B08", "B10", "B11")
_B01, _B02, _B03, _B04, _B08, _B10, _B11 = range(len(BANDS))
#: Pixels of neighbour data a block needs: grey closing 5×5 (2 + 2) then the 7×7 mean (3).
HALO = 7
#: Default parameters of :func:`detect` (the DSen2-CR settings).
DEFAULTS: dict[str, Any] = {
    "threshold": 0.2,
    "b01_b10": (0.15, 0.2),
    "shadows": True,
    "shadow_stats": "scene",
    "window": 256,
    "moisture_check": False,
}
#: UnCRtainTS rescales B01 + B10 over (0.4, 0.9) instead of (0.15, 0.2).
UNCRTAINTS_B01_B10 = (0.4, 0.9)


def _rescale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - lo) / (hi - lo)


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    total[total == 0] = 0.001
    return (a - b) / total


def _raw_score(refl: np.ndarray, b01_b10: tuple[float, float], moisture_check: bool) -> np.ndarray:
    """Per-pixel cloud score before the filters, float32 (reference steps 1–6)."""
    score = np.ones(refl.shape[1:], np.float32)
    score = np.minimum(score, _rescale(refl[_B02], 0.1, 0.5))
    score = np.minimum(score, _rescale(refl[_B01], 0.1, 0.3))
    score = np.minimum(score, _rescale(refl[_B01] + refl[_B10], *b01_b10))
    score = np.minimum(score, _rescale(refl[_B04] + refl[_B03] + refl[_B02], 0.2, 0.8))
    if moisture_check:
        score = np.minimum(score, _rescale(_normalized_difference(refl[_B08], refl[_B11]), -0.1, 0.1))
    return np.minimum(score, _rescale(_normalized_difference(refl[_B03], refl[_B11]), 0.8, 0.6))


def _reflectance(dn: np.ndarray) -> np.ndarray:
    return dn.astype(np.float32) / 10000.0


def _shadow_inputs(dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSI = (B08 + B11) / 2 and B02 as float32 reflectance."""
    return (_reflectance(dn[_B08]) + _reflectance(dn[_B11])) / 2, _reflectance(dn[_B02])


def _thresholds(csi: np.ndarray, blue: np.ndarray) -> tuple[np.float32, np.float32]:
    """T3 and T4 of one window's valid pixels, in float32 like the reference (NaN when none is valid)."""
    if csi.size == 0:
        return np.float32(np.nan), np.float32(np.nan)
    t3 = csi.min() + 3 / 4 * (csi.mean() - csi.min())
    t4 = blue.min() + 5 / 6 * (blue.mean() - blue.min())
    return t3, t4


def _windows(shape: tuple[int, int], window: int) -> list[tuple[slice, slice]]:
    """(row slice, column slice) of each window inside a block that starts on the origin-anchored grid."""
    h, w = shape
    return [
        (slice(y, min(y + window, h)), slice(x, min(x + window, w)))
        for y in range(0, h, window)
        for x in range(0, w, window)
    ]


def _dark_by_window(csi: np.ndarray, blue: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Shadow candidates, each window judged by its own thresholds (the block starts on the window grid)."""
    dark = np.zeros(csi.shape, bool)
    for sl in _windows(csi.shape, window):
        ok = valid[sl]
        # Contiguous copies, so np.mean's pairwise sum runs as on the reference's own 256×256 array.
        if ok.all():
            t3, t4 = _thresholds(np.ascontiguousarray(csi[sl]), np.ascontiguousarray(blue[sl]))
        else:
            t3, t4 = _thresholds(csi[sl][ok], blue[sl][ok])
        dark[sl] = (csi[sl] < t3) & (blue[sl] < t4) & ok
    return dark


def _scene_partials(block: np.ndarray, *, window: int, nodata: float | None) -> np.ndarray:
    """Per window: min and float64 sum of CSI and B02, and the count, over valid pixels → (5, wy, wx)."""
    csi, blue = _shadow_inputs(block)
    valid = valid_pixels(block, nodata)
    h, w = valid.shape
    out = np.full((5, -(-h // window), -(-w // window)), np.nan)
    for sl in _windows((h, w), window):
        ok = valid[sl]
        if ok.any():
            c, b = csi[sl][ok], blue[sl][ok]
            iy, ix = sl[0].start // window, sl[1].start // window
            out[:, iy, ix] = c.min(), c.sum(dtype=np.float64), b.min(), b.sum(dtype=np.float64), ok.sum()
    return out


def _scene_thresholds(partials: np.ndarray) -> np.ndarray:
    """Whole-array T3, T4 from the window partials, summed in one fixed order (float64), stored as float32.

    float32 like the reference's thresholds, so the float32 CSI and B02 are compared in float32 on every path.
    """
    count = np.nansum(partials[4])
    if count == 0:
        return np.array([np.nan, np.nan], np.float32)
    csi_min, blue_min = np.nanmin(partials[0]), np.nanmin(partials[2])
    csi_mean, blue_mean = np.nansum(partials[1]) / count, np.nansum(partials[3]) / count
    t3, t4 = csi_min + 3 / 4 * (csi_mean - csi_min), blue_min + 5 / 6 * (blue_mean - blue_min)
    return np.array([t3, t4], np.float32)


def _block(
    block: np.ndarray,
    *,
    borders: Borders,
    origin: tuple[int, int],
    halo: int,
    threshold: float,
    b01_b10: tuple[float, float],
    moisture_check: bool,
    shadows: bool,
    window: int,
    nodata: float | None,
    scene_thresholds: np.ndarray | None = None,
) -> np.ndarray:
    """Cloud score, cloud, shadow and mask of one block → (4, core_y, core_x) float32.

    In window mode the block's halo is a whole window (chunks lie on the window grid, ``origin`` on a window
    corner), so each pixel's shadow thresholds come from its complete window, wherever the chunk edges are.
    """
    valid = valid_pixels(block, nodata)
    # The score is per pixel up to the filters: compute it on the core and the filters' margin only.
    margined = with_margin(block, borders, halo, HALO, mode="symmetric")  # reflect: the closing's border mode
    ok = valid_pixels(margined, nodata)
    core_valid = crop(ok, HALO)
    score = np.where(ok, _raw_score(_reflectance(margined), b01_b10, moisture_check), np.float32(np.nan))
    del margined
    # Grey closing that ignores invalid pixels: they take no part in the max, then none in the min.
    dilated = ndimage.maximum_filter(np.where(ok, score, -np.inf), size=5, mode="nearest")
    closed = ndimage.minimum_filter(np.where(ok, dilated, np.inf), size=5, mode="nearest")
    # 7×7 mean with zero fill beyond the image (scipy.signal.convolve2d 'same'); invalid pixels leave
    # both the sum and the count, so they do not drag their neighbours down.
    beyond = outside(closed.shape, borders, HALO)
    total = box_sum(np.where(ok & ~beyond, closed, 0.0).astype(np.float64), 7)
    count = box_sum((ok | beyond).astype(np.float64), 7)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.clip(crop(total / count, HALO), 1e-5, 1.0)
    score[~core_valid] = np.nan
    cloud = score >= threshold  # on the float64 score, as the reference thresholded before storing float32

    shadow = np.zeros(core_valid.shape, bool)
    if shadows:
        csi, blue = _shadow_inputs(block)
        if scene_thresholds is None:
            assert origin[0] % window == 0 and origin[1] % window == 0, "blocks must start on the window grid"
            dark = _dark_by_window(csi, blue, valid, window)
        else:
            dark = (csi < scene_thresholds[0]) & (blue < scene_thresholds[1]) & valid
        del csi, blue
        dark = with_margin(dark.astype(np.float32), borders, halo, HALO)  # zero fill, as medfilt2d
        # The median of 25 values in {0, 1} is 1 where at least 13 are 1: an exact count.
        shadow = crop(box_sum(dark, 5) >= 13, HALO) & ~cloud
    return stack_layers(score, cloud, shadow, cloud | shadow)


def _detect_one(s2: xr.DataArray, params: dict[str, Any]) -> xr.Dataset:
    window, scene = params["window"], params["shadows"] and params["shadow_stats"] == "scene"
    bands = select_bands(s2, BANDS, params["method"])
    kwargs = {k: params[k] for k in ("threshold", "b01_b10", "moisture_check", "shadows", "window")}
    kwargs["nodata"] = nodata_of(bands)
    data = bands.data
    if not scene:
        depth, multiple = (window, window) if params["shadows"] else (HALO, 1)
        layers = map_blocks_with_halo(_block, data, depth, 4, multiple=multiple, **kwargs)
    elif not hasattr(data, "dask"):
        data = np.asarray(data)
        thresholds = _scene_thresholds(_scene_partials(data, window=window, nodata=kwargs["nodata"]))
        layers = _block(data, borders=(True,) * 4, origin=(0, 0), halo=0, scene_thresholds=thresholds, **kwargs)
    else:
        layers = _scene_dask(data, kwargs)
    return to_dataset(layers, s2, params["method"], {k: v for k, v in params.items() if k != "method"})


def _scene_dask(data: Any, kwargs: dict[str, Any]) -> Any:
    """Scene statistics on Dask in two passes: per-window partials → thresholds now, then the lazy masks.

    The first pass is a reduction computed here: it streams the chunks into small per-window partials and drops
    them, so nothing holds the input whatever its graph (in one lazy graph whose masks wait for the whole-array
    thresholds, only Dask's own key duplication keeps the input chunks from waiting in memory until the last one
    is read). The masks are then built with the thresholds as numbers: one more lazy pass, each block with a halo
    of :data:`HALO` pixels. The input is read twice.
    """
    import dask.array as da

    window = kwargs["window"]
    yx = [aligned_chunks(n, c[0], window, HALO) for n, c in zip(data.shape[1:], data.chunks[1:], strict=True)]
    data = data.rechunk(((data.shape[0],), *yx))
    partials = da.map_blocks(
        _scene_partials,
        data,
        chunks=((5,), *(tuple(-(-c // window) for c in chunks) for chunks in yx)),
        dtype=np.float64,
        window=window,
        nodata=kwargs["nodata"],
    )
    # Partials per window, reduced in one fixed order: the thresholds do not depend on the chunks.
    thresholds = _scene_thresholds(np.asarray(partials.compute()))
    return map_blocks_with_halo(_block, data, HALO, 4, multiple=window, scene_thresholds=thresholds, **kwargs)


def detect(
    s2: Any,
    *,
    threshold: float = DEFAULTS["threshold"],
    b01_b10: tuple[float, float] = DEFAULTS["b01_b10"],
    shadows: bool = DEFAULTS["shadows"],
    shadow_stats: str = DEFAULTS["shadow_stats"],
    window: int = DEFAULTS["window"],
    moisture_check: bool = DEFAULTS["moisture_check"],
    method: str = "dsen2cr",
) -> xr.Dataset:
    """Cloud and shadow masks by the DSen2-CR rules.

    Parameters
    ----------
    s2 : DataArray (band, y, x), scene Dataset, or array (13, y, x)
        Level-1C DN (reflectance × 10000); needs B01, B02, B03, B04, B08, B10, B11. NaN or ``nodata`` pixels
        come out invalid (NaN probability, neither cloud nor shadow).
    threshold : float
        Cloud where the score is ≥ this (0.2 in DSen2-CR).
    b01_b10 : (lo, hi)
        Reflectance range over which B01 + B10 rescales to the score: (0.15, 0.2) DSen2-CR, (0.4, 0.9) UnCRtainTS.
    shadows : bool
        Detect shadows (False for CARF's clouds-only mask).
    shadow_stats : {"scene", "window"}
        Where the shadow thresholds' minimum and mean come from: the whole array (the reference rule; on Dask
        computed by :func:`detect` in a first streaming pass) or each ``window`` tile (one lazy pass, local
        thresholds). See the module docstring.
    window : int
        Window size in pixels for ``shadow_stats="window"`` (and the unit of the partial sums in ``"scene"``).
        Dask chunks are aligned to multiples of it and, in window mode, each block is read with a halo of one
        window, so keep it well below the chunk size (256 with chunks of 1024–2048 px).
    moisture_check : bool
        Add the NDMI test (off in the references).

    Returns
    -------
    xarray.Dataset (y, x): ``cloud_probability`` (the cloud score, float32), ``cloud``, ``shadow`` (bool, shadow
    only where not cloud) and ``mask`` (float32, 1 where cloud or shadow).

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> from xcloudfree.masking import rules
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> masks = rules.detect(scene.s2)
    >>> round(float(masks.cloud.mean()), 2), round(float(masks.shadow.mean()), 2)  # cloud and shadow shares
    (0.33, 0.3)
    >>> local = rules.detect(scene.s2, shadow_stats="window", window=32)  # shadow thresholds per 32-px window
    >>> bool((local.cloud == masks.cloud).all()), round(float(local.shadow.mean()), 2)
    (True, 0.19)
    """
    params = {
        "method": method,
        "threshold": float(threshold),
        "b01_b10": tuple(float(v) for v in b01_b10),
        "shadows": bool(shadows),
        "shadow_stats": shadow_stats,
        "window": int(window),
        "moisture_check": bool(moisture_check),
    }
    if shadow_stats not in ("window", "scene"):
        raise ValueError(f"shadow_stats: expected 'window' or 'scene', found {shadow_stats!r}")
    if not HALO < params["window"]:
        raise ValueError(f"window: expected more than {HALO} pixels, found {window}")
    if not 0.0 <= params["threshold"] <= 1.0:
        raise ValueError(f"threshold: expected a cloud score in [0, 1], found {threshold}")
    if len(params["b01_b10"]) != 2 or params["b01_b10"][0] == params["b01_b10"][1]:
        raise ValueError(f"b01_b10: expected two different reflectances (lo, hi), found {b01_b10}")
    return per_leading(lambda a: _detect_one(a, params), as_s2(s2))
