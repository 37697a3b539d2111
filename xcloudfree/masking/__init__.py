"""Cloud and shadow masks for Sentinel-2: one entry point, :func:`detect`, over six methods.

======================  ===================================================================================
method                  what it is
======================  ===================================================================================
``dsen2cr``             the DSen2-CR rule-based cloud score (≥ 0.2) and shadow detector (REFERENCE §4)
``uncrtaints``          the same with UnCRtainTS' B01 + B10 limits (0.4, 0.9)
``carf``                the DSen2-CR clouds only (CARF's loss ignores shadows)
``s2cloudless``         the LightGBM classifier of the ``s2cloudless`` package (extra ``xcloudfree[s2cloudless]``)
``cyclecr``             continuous map from the s2cloudless probability: keep > 0.5, Gaussian σ = 2
``scl``                 Level-2A scene classification: cloud classes 8, 9, 10, shadow class 3
======================  ===================================================================================

Every method returns an ``xarray.Dataset`` on the input grid (coords, CRS, attrs kept; lazy on Dask input, and
the same pixels for any chunking) with ``cloud_probability`` (float32 0–1, NaN where the input is invalid),
``cloud`` and ``shadow`` (bool, exclusive: cloud wins) and ``mask`` (float32: the cloud-or-shadow map that
losses and compositing use; continuous for ``cyclecr``).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import xarray as xr

from . import maps, rules
from .blocks import LAYERS, check_params

__all__ = ["detect", "to_classes", "METHODS", "CLASSES", "NODATA_CLASS"]

#: Class codes of :func:`to_classes`.
CLASSES: dict[int, str] = {0: "clear", 1: "cloud", 2: "shadow"}
#: Class code of invalid pixels in :func:`to_classes`.
NODATA_CLASS = 255


def _s2cloudless(s2: Any, **params: Any) -> xr.Dataset:
    from . import s2cloudless

    return s2cloudless.detect(s2, **params)


def _dsen2cr(s2: Any, **params: Any) -> xr.Dataset:
    return rules.detect(s2, method="dsen2cr", **params)


def _uncrtaints(s2: Any, **params: Any) -> xr.Dataset:
    return rules.detect(s2, method="uncrtaints", **{"b01_b10": rules.UNCRTAINTS_B01_B10, **params})


def _carf(s2: Any, **params: Any) -> xr.Dataset:
    return rules.detect(s2, method="carf", shadows=False, **params)


#: method name → (function, parameters it accepts)
METHODS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "dsen2cr": (_dsen2cr, tuple(rules.DEFAULTS)),
    "uncrtaints": (_uncrtaints, tuple(rules.DEFAULTS)),
    "carf": (_carf, tuple(k for k in rules.DEFAULTS if k not in ("shadows", "shadow_stats"))),
    "s2cloudless": (_s2cloudless, ("threshold", "average_over", "dilation_size", "resolution")),
    "cyclecr": (maps.cyclecr, tuple(p for p in inspect.signature(maps.cyclecr).parameters if p != "s2")),
    "scl": (maps.scl, tuple(p for p in inspect.signature(maps.scl).parameters if p != "s2")),
}


def detect(s2: Any, method: str = "dsen2cr", **params: Any) -> xr.Dataset:
    """Cloud and shadow masks of a Sentinel-2 image.

    Parameters
    ----------
    s2 : xarray.DataArray (band, y, x), scene Dataset (uses its ``s2``), or array (13, y, x) in canonical order
        DN (reflectance × 10000, uint16 or float); a processing-baseline offset in attrs is applied. A leading
        ``time`` dimension is masked date by date. For ``method="scl"``: the SCL DataArray (y, x), or pass it
        as ``scl=`` (a scene's ``scl`` variable is used when present).
    method : {"dsen2cr", "uncrtaints", "carf", "s2cloudless", "cyclecr", "scl"}
    **params
        Method parameters: :func:`xcloudfree.masking.rules.detect` (dsen2cr, uncrtaints, carf),
        :func:`xcloudfree.masking.s2cloudless.detect`, :func:`xcloudfree.masking.maps.cyclecr`,
        :func:`xcloudfree.masking.maps.scl`.

    Returns
    -------
    xarray.Dataset with ``cloud_probability``, ``cloud``, ``shadow`` and ``mask`` on the grid of ``s2``.

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> masks = xcf.masking.detect(scene.s2, method="dsen2cr")
    >>> list(masks.data_vars), masks.attrs["mask_method"]
    (['cloud_probability', 'cloud', 'shadow', 'mask'], 'dsen2cr')
    >>> round(float((masks.cloud == scene.cloud_truth).mean()), 2)  # share of pixels agreeing with the truth
    0.92
    >>> lazy = xcf.masking.detect(scene.s2.chunk({"y": 32, "x": 32}))  # lazy on Dask, the same pixels
    >>> bool((lazy.cloud == masks.cloud).all())
    True

    Other methods take their own parameters, e.g.
    ``xcf.masking.detect(scene.s2, method="s2cloudless", resolution=60)``.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, found {method!r}")
    func, allowed = METHODS[method]
    check_params(method, params, allowed)
    return func(s2, **params)


def to_classes(masks: xr.Dataset) -> xr.DataArray:
    """The mask Dataset as a uint8 class raster: 0 clear, 1 cloud, 2 shadow, 255 invalid (the nodata value).

    Lazy on Dask; coords and CRS kept, ``nodata`` written with rioxarray so a COG writer marks it.

    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> classes = xcf.masking.to_classes(xcf.masking.detect(scene.s2))
    >>> classes.dims, classes.dtype, int(classes.rio.nodata), classes.attrs["flag_meanings"]
    (('y', 'x'), dtype('uint8'), 255, 'clear cloud shadow')
    """
    missing = [v for v in LAYERS if v not in masks]
    if missing:
        raise ValueError(f"masks: expected a Dataset from detect() with {list(LAYERS)}, missing {missing}")
    prob, cloud, shadow = (masks[v].data for v in ("cloud_probability", "cloud", "shadow"))
    # NumPy functions on the raw arrays (Dask dispatches itself): xr.where would drop the CRS coordinate's attrs.
    codes = np.where(np.isnan(prob), NODATA_CLASS, np.where(cloud, 1, np.where(shadow, 2, 0))).astype(np.uint8)
    classes = masks["cloud"].copy(data=codes).rename("classes")
    classes.attrs = {
        "long_name": "cloud mask classes",
        "flag_values": list(CLASSES),
        "flag_meanings": " ".join(CLASSES.values()),
        "mask_method": masks.attrs.get("mask_method", ""),
        **({"grid_mapping": "spatial_ref"} if "spatial_ref" in masks.coords else {}),
    }
    return classes.rio.write_nodata(NODATA_CLASS, encoded=False)
