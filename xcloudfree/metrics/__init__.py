"""Metrics of cloud removal, with the definitions of the literature (REFERENCE §5).

- :mod:`.scores`: ``mae``, ``rmse``, ``psnr``, ``ssim``, ``sam`` (degrees), ``band_nrmse``; UnCRtainTS definitions,
  so that ``evaluate(pred, target)`` reproduces its numbers.
- :mod:`.evaluation`: ``evaluate`` (all scores, with the masked ``*_reconstruction`` / ``*_reproduction``
  variants), ``evaluate_dataset`` (per-sample mean and pooled), ``evaluate_scene`` (a scene Dataset in DN).
- :mod:`.structural`: the SSIM window and a differentiable ``ssim_torch`` for training losses.
- :mod:`.distributional`: improved precision / recall / F1 (Kynkäänniemi et al. 2019) on image features;
  :mod:`.vgg`: the VGG16 fc2 extractor (``VGG16Features``, user-supplied weights).
- :mod:`.downstream`: ``lulc_agreement``, land-cover classification on the prediction vs the target.

Inputs are reflectance in [0, 1]: numpy ``(C, H, W)`` or ``(N, C, H, W)``, Dask (scored chunk by chunk, SSIM with
its 5-pixel halo), torch tensors or xarray DataArrays with ``band``, ``y``, ``x`` dims.

>>> import numpy as np
>>> import xcloudfree as xcf
>>> target = np.full((3, 8, 8), 0.2)  # (band, y, x) reflectance
>>> scores = xcf.metrics.evaluate(target + 0.01, target)
>>> round(scores["mae"], 3), round(scores["psnr"], 1), round(scores["ssim"], 3)
(0.01, 40.0, 0.998)
"""

from typing import Any

from .distributional import band_statistics, improved_precision_recall, precision_recall
from .downstream import lulc_agreement
from .evaluation import METRICS, evaluate, evaluate_dataset, evaluate_scene
from .scores import band_nrmse, mae, psnr, rmse, sam, ssim
from .structural import gaussian_window, ssim_torch


def __getattr__(name: str) -> Any:
    if name == "VGG16Features":  # a torch module: imported on first use only
        from .vgg import VGG16Features

        return VGG16Features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "VGG16Features",
    "band_nrmse",
    "band_statistics",
    "evaluate",
    "evaluate_dataset",
    "evaluate_scene",
    "gaussian_window",
    "improved_precision_recall",
    "lulc_agreement",
    "mae",
    "precision_recall",
    "psnr",
    "rmse",
    "sam",
    "ssim",
    "ssim_torch",
]
