"""Cloud maps that come from elsewhere: the continuous map of CycleCR and the Level-2A scene classification.

``cyclecr`` (REFERENCE §4): the s2cloudless probability, kept where > 0.5 and zero elsewhere, blurred by a
Gaussian of σ = 2 pixels (SciPy's ``gaussian_filter`` with its reflect border) → a continuous map in [0, 1] that
the generator and the losses weight by. ``scl``: SCL classes (REFERENCE §1) → cloud (8 medium, 9 high probability,
10 thin cirrus) and shadow (3); 0 (no data) is invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from .blocks import Borders, as_s2, crop, map_blocks_with_halo, per_leading, stack_layers, to_dataset, with_margin

__all__ = ["cyclecr", "scl", "SCL_CLOUD", "SCL_SHADOW", "SCL_NODATA"]

SCL_CLOUD = (8, 9, 10)
SCL_SHADOW = (3,)
SCL_NODATA = (0,)
_TRUNCATE = 4.0  # SciPy's default: the kernel reaches 4 σ


def _cyclecr_block(
    prob: np.ndarray, *, borders: Borders, origin: tuple[int, int], halo: int, threshold: float, sigma: float
) -> np.ndarray:
    radius = int(_TRUNCATE * sigma + 0.5)
    p = with_margin(prob[0], borders, halo, radius, mode="symmetric")  # SciPy's reflect
    valid = np.isfinite(p)
    kept = np.where(valid & (p > threshold), p, 0.0).astype(np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        for axis in (0, 1):
            a = ndimage.gaussian_filter1d(a, sigma, axis=axis, mode="constant", truncate=_TRUNCATE)
        return a

    # Normalised by the blurred validity, so invalid pixels neither darken nor brighten their neighbours.
    with np.errstate(invalid="ignore", divide="ignore"):
        cloud_map = crop(blur(kept) / blur(valid.astype(np.float64)), radius)
    core = crop(p, radius)
    cloud = core > threshold
    return stack_layers(core, cloud, np.zeros_like(cloud), np.clip(cloud_map, 0.0, 1.0))


def cyclecr(s2: Any, *, threshold: float = 0.5, sigma: float = 2.0, resolution: float | None = None) -> xr.Dataset:
    """The continuous cloud map of CycleCR (needs the ``s2cloudless`` extra).

    Parameters
    ----------
    s2 : DataArray (band, y, x), scene Dataset, or array (13, y, x)
        Level-1C DN.
    threshold : float
        Probabilities at or below it become 0 before the blur (0.5).
    sigma : float
        Gaussian σ in pixels (2).
    resolution : float, optional
        Metres; run s2cloudless at this coarser pixel size (see :func:`xcloudfree.masking.s2cloudless.detect`).

    Returns
    -------
    xarray.Dataset: ``cloud_probability`` (s2cloudless), ``cloud`` (probability > threshold), ``shadow`` (all
    False) and ``mask`` (the continuous map, float32 in [0, 1]).

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> from xcloudfree.masking import maps
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> cloud_map = maps.cyclecr(scene.s2, resolution=60)["mask"]
    >>> cloud_map.dtype, round(float(cloud_map.min()), 2), round(float(cloud_map.max()), 2)
    (dtype('float32'), 0.0, 1.0)
    >>> round(float(((cloud_map > 0) & (cloud_map < 1)).mean()), 2)  # share of pixels between clear and cloud
    0.77
    """
    from . import s2cloudless

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold: expected a probability in [0, 1], found {threshold}")
    if not float(sigma) > 0:
        raise ValueError(f"sigma: expected a Gaussian σ > 0 pixels, found {sigma}")
    params = {"threshold": float(threshold), "sigma": float(sigma), "resolution": resolution}

    def one(a: xr.DataArray) -> xr.Dataset:
        prob = s2cloudless.probability(a, resolution=resolution)
        depth = int(_TRUNCATE * params["sigma"] + 0.5)
        layers = map_blocks_with_halo(
            _cyclecr_block, prob, depth, 4, threshold=params["threshold"], sigma=params["sigma"]
        )
        return to_dataset(layers, a, "cyclecr", params, hard=False)

    return per_leading(one, as_s2(s2))


def _scl_block(
    block: np.ndarray,
    *,
    borders: Borders,
    origin: tuple[int, int],
    halo: int,
    cloud_classes: tuple[int, ...],
    shadow_classes: tuple[int, ...],
    nodata_classes: tuple[int, ...],
) -> np.ndarray:
    classes = block[0]
    invalid = np.isin(classes, nodata_classes) | ~np.isfinite(classes)
    cloud = np.isin(classes, cloud_classes)
    shadow = np.isin(classes, shadow_classes) & ~cloud
    prob = np.where(invalid, np.float32(np.nan), cloud.astype(np.float32))
    return stack_layers(prob, cloud, shadow, cloud | shadow)


def _scl_array(s2: Any, scl: Any) -> tuple[xr.DataArray, xr.DataArray]:
    """(the SCL on the output grid, the template whose grid and attrs the result takes)."""
    if scl is None:
        if isinstance(s2, xr.Dataset):
            if "scl" not in s2:
                raise ValueError(f"scl: expected an 'scl' variable in the scene, found {list(s2.data_vars)}")
            return s2["scl"], s2["scl"]
        if isinstance(s2, xr.DataArray) and "band" in s2.dims and "SCL" in s2["band"].values:
            return s2.sel(band="SCL", drop=True), s2
        scl, s2 = s2, None
    if not isinstance(scl, xr.DataArray):
        scl = xr.DataArray(np.asarray(scl) if not hasattr(scl, "dask") else scl, dims=("y", "x"))
    scl = scl.squeeze(drop=True) if scl.ndim > 2 else scl
    if scl.dims != ("y", "x"):
        raise ValueError(f"scl: expected the scene classification as a (y, x) array, found dims {scl.dims}")
    if s2 is None:
        return scl, scl
    template = s2["s2"] if isinstance(s2, xr.Dataset) else s2
    same = scl.sizes["y"] == template.sizes["y"] and scl.sizes["x"] == template.sizes["x"]
    if not same:
        if "x" not in scl.coords or "x" not in template.coords:
            raise ValueError(
                f"scl: expected the grid of s2 ({template.sizes['y']}×{template.sizes['x']}) or coordinates to "
                f"resample from, found {scl.sizes['y']}×{scl.sizes['x']} without coordinates"
            )
        # SCL is categorical and usually 20 m: nearest neighbour onto the S2 grid.
        scl = scl.reindex_like(template, method="nearest")
    return scl, template


def scl(
    s2: Any,
    *,
    scl: Any = None,
    cloud_classes: Sequence[int] = SCL_CLOUD,
    shadow_classes: Sequence[int] = SCL_SHADOW,
    nodata_classes: Sequence[int] = SCL_NODATA,
) -> xr.Dataset:
    """Masks from the Level-2A scene classification (SCL).

    Parameters
    ----------
    s2 : the SCL DataArray (y, x); or an S2 DataArray / scene whose grid the result takes, with ``scl`` given
        (or a band named ``SCL``, or a scene variable ``scl``).
    scl : DataArray or array (y, x), optional
        SCL codes; on another grid (e.g. 20 m) it is resampled by nearest neighbour onto that of ``s2``.
    cloud_classes, shadow_classes, nodata_classes : sequences of int
        SCL codes for cloud (8, 9, 10), shadow (3) and invalid pixels (0).

    Returns
    -------
    xarray.Dataset: ``cloud_probability`` (1 cloud, 0 other, NaN invalid), ``cloud``, ``shadow``, ``mask``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from xcloudfree.masking import maps
    >>> codes = xr.DataArray(np.array([[4, 9, 3], [0, 8, 10]], np.uint8), dims=("y", "x"))  # SCL classes
    >>> masks = maps.scl(codes)
    >>> masks.cloud.values.tolist(), masks.shadow.values.tolist()
    ([[False, True, False], [False, True, True]], [[False, False, True], [False, False, False]])
    >>> masks.cloud_probability.values.tolist()  # SCL 0 is no data
    [[0.0, 1.0, 0.0], [nan, 1.0, 1.0]]
    """
    codes, template = _scl_array(s2, scl)
    params = {
        "cloud_classes": [int(c) for c in cloud_classes],
        "shadow_classes": [int(c) for c in shadow_classes],
        "nodata_classes": [int(c) for c in nodata_classes],
    }
    layers = map_blocks_with_halo(_scl_block, codes.data[None], 0, 4, **{k: tuple(v) for k, v in params.items()})
    return to_dataset(layers, template, "scl", params)
