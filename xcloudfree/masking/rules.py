"""The rule-based cloud and shadow detector of DSen2-CR, also used by UnCRtainTS and CARF (REFERENCE §4).

Cloud score from L1C top-of-atmosphere reflectance: brightness and cirrus limits, a snow test, a 5×5 grey
closing (reflect at the image border) and a 7×7 mean (zero fill at the image border), clipped to [1e-5, 1].
Shadow: dark pixels in NIR + SWIR1 (CSI) and blue, below thresholds set by the image statistics, cleaned by a
5×5 median. Arithmetic follows the reference: float32 reflectance = DN / 10000, float64 mean filter.

The shadow thresholds need statistics of "the array passed in" (one 256×256 patch in the references).
``shadow_stats="scene"`` (the default) uses the minimum and mean of the whole array, as the reference does on any
array: on Dask, :func:`detect` first computes them with a reduction that streams the chunks (only per-window
partial sums stay in memory; for a time series, of every date in one pass), then returns the lazy masks built
with those numbers, so the input is read twice and peak memory stays that of the chunks in flight.
``shadow_stats="window"`` computes them per ``window``×``window`` tile of a grid anchored at the array origin
(the last row and column of tiles may be smaller): one lazy pass that computes nothing in :func:`detect`,
identical to ``"scene"`` on a single 256 patch, but local on larger arrays (on a real 512² mosaic its shadows
differ from the whole-array rule's on 3.8 % of the pixels: ``docs/masking.md``).

Each block runs in two stages, both in strips of :data:`STRIP` rows: the raw score and shadow candidates, then
the filters with a halo of :data:`HALO` pixels of those. With scene thresholds (or no shadows) the first stage
is per pixel, and on Dask a block's task reads its own chunk and takes only its neighbours' first stage on their
:data:`HALO`-px edges, from a small task per chunk (``blocks.map_two_stages``: every
chunk is read twice, and no block waits for a whole neighbouring one, so memory does not grow with the scene).
In window mode each window lies whole inside its block, and neighbouring blocks hold their first stage (8 bytes
a pixel, not the 14 of the seven uint16 bands) for each other's halo.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from .blocks import (
    Borders,
    align,
    as_s2,
    box_sum,
    crop,
    map_blocks_with_halo,
    map_two_stages,
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
#: Rows of a block computed at once (a multiple of the window in window mode): the detector makes about 30
#: float temporaries of its input's size, so strips keep a 2048² block's working memory near 40 MB, not 300 MB.
STRIP = 256
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


def _pixels(
    block: np.ndarray,
    *,
    borders: Borders,
    origin: tuple[int, int],
    halo: int,
    b01_b10: tuple[float, float],
    moisture_check: bool,
    shadows: bool,
    window: int,
    nodata: float | None,
    scene_thresholds: np.ndarray | None,
) -> np.ndarray:
    """The per-pixel stage of one block (no halo) → (2, y, x) float32: raw cloud score (NaN where invalid), dark.

    ``dark`` (1/0) marks the shadow candidates: below the scene thresholds, or in window mode below those of the
    pixel's window (the block starts on the window grid, so each window lies whole inside it). Half the bytes of
    the 7 uint16 bands: this, not the input, is what neighbouring blocks hold for each other's halos.
    """
    out = np.zeros((2, *block.shape[1:]), np.float32)
    valid = valid_pixels(block, nodata)
    out[0] = np.where(valid, _raw_score(_reflectance(block), b01_b10, moisture_check), np.float32(np.nan))
    if shadows:
        csi, blue = _shadow_inputs(block)
        if scene_thresholds is None:
            assert origin[0] % window == 0 and origin[1] % window == 0, "blocks must start on the window grid"
            out[1] = _dark_by_window(csi, blue, valid, window)
        else:
            out[1] = (csi < scene_thresholds[0]) & (blue < scene_thresholds[1]) & valid
    return out


def _block(
    block: np.ndarray, *, borders: Borders, origin: tuple[int, int], halo: int, threshold: float, shadows: bool
) -> np.ndarray:
    """The filters on one block of :func:`_pixels` (with halo) → cloud score, cloud, shadow, mask (4, y, x) float32."""
    # The raw score of a reflected pixel is that of the pixel: reflect it (the closing's border mode).
    score = with_margin(block[0], borders, halo, HALO, mode="symmetric")
    ok = np.isfinite(score)
    core_valid = crop(ok, HALO)
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
        dark = with_margin(block[1], borders, halo, HALO)  # zero fill, as medfilt2d
        # The median of 25 values in {0, 1} is 1 where at least 13 are 1: an exact count.
        shadow = crop(box_sum(dark, 5) >= 13, HALO) & ~cloud
    return stack_layers(score, cloud, shadow, cloud | shadow)


def _inputs(s2: xr.DataArray, params: dict[str, Any]) -> tuple[Any, float | None]:
    """The detector's bands (7, y, x) as a NumPy or Dask array, and their nodata value."""
    bands = select_bands(s2, BANDS, params["method"])
    return bands.data, nodata_of(bands)


def _scene_statistics(slices: list[xr.DataArray], params: dict[str, Any]) -> list[np.ndarray | None]:
    """Whole-array shadow thresholds (T3, T4) of each slice (date), None in window mode or without shadows.

    On Dask the per-window partials of every slice are computed here in one ``dask.compute``: one streaming pass
    over all dates (only the small partials stay in memory), not one pass per date. The masks are then built
    with the thresholds as numbers, a second lazy pass: the input is read twice.
    """
    if not (params["shadows"] and params["shadow_stats"] == "scene"):
        return [None] * len(slices)
    import dask

    window, partials = params["window"], []
    for a in slices:
        data, nodata = _inputs(a, params)
        if hasattr(data, "dask"):
            # Chunks on the window grid (as the masks' blocks), so every window lies in one chunk.
            data = align(data, window, HALO)
            chunks = ((5,), *(tuple(-(-c // window) for c in cs) for cs in data.chunks[1:]))
            partials.append(
                data.map_blocks(_scene_partials, chunks=chunks, dtype=np.float64, window=window, nodata=nodata)
            )
        else:
            partials.append(_scene_partials(np.asarray(data), window=window, nodata=nodata))
    # Partials per window, reduced in one fixed order: the thresholds do not depend on the chunks.
    return [_scene_thresholds(np.asarray(p)) for p in dask.compute(*partials)]


def _detect_one(s2: xr.DataArray, params: dict[str, Any], thresholds: np.ndarray | None) -> xr.Dataset:
    """The masks of one (band, y, x) slice; ``thresholds``: its scene T3, T4, or None for window statistics.

    Two stages, both in strips of :data:`STRIP` rows: the score and shadow candidates of each block (window mode:
    chunks on the window grid), then the filters on those with a halo of :data:`HALO` pixels (module docstring).
    """
    data, nodata = _inputs(s2, params)
    window, shadows = params["window"], params["shadows"]
    multiple = window if shadows and thresholds is None else 1
    per_pixel = {"nodata": nodata, "scene_thresholds": thresholds}
    per_pixel.update({k: params[k] for k in ("b01_b10", "moisture_check", "shadows", "window")})
    filters = {"threshold": params["threshold"], "shadows": shadows}
    if hasattr(data, "dask") and multiple == 1:
        # A per-pixel first stage: each block runs both stages over its own window (no halo exchange).
        layers = map_two_stages(
            _pixels, _block, data, HALO, 4, rows=STRIP, first_kwargs=per_pixel, second_kwargs=filters
        )
    else:  # window statistics: the first stage needs whole windows, so blocks on the window grid
        if hasattr(data, "dask"):
            data = align(data, multiple, HALO)
        pixels = map_blocks_with_halo(_pixels, data, 0, 2, rows=-(-STRIP // multiple) * multiple, **per_pixel)
        layers = map_blocks_with_halo(_block, pixels, HALO, 4, rows=STRIP, **filters)
    return to_dataset(layers, s2, params["method"], {k: v for k, v in params.items() if k != "method"})


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
        Dask chunks are aligned to multiples of it, so keep it well below the chunk size (256 with chunks of
        1024–2048 px).
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
    return per_leading(
        lambda a, thresholds: _detect_one(a, params, thresholds),
        as_s2(s2),
        batch=lambda slices: _scene_statistics(slices, params),
    )
