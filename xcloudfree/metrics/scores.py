"""Pixel, spectral and structural scores of a prediction against a target, UnCRtainTS definitions.

All take reflectance in [0, 1] as numpy ``(C, H, W)`` or ``(N, C, H, W)``, Dask, torch or xarray (``band``, ``y``,
``x`` dims), and return floats (per-sample arrays with ``reduction="none"``).

Conventions (REFERENCE §5):

- ``reduction="mean"`` (default) averages the per-sample values of a batch, as UnCRtainTS reports a data set;
  ``"pooled"`` scores all pixels of all samples as one; ``"none"`` returns the per-sample values, shape (N,).
- ``mask`` (``(H, W)`` or ``(N, H, W)``, bool or weights in [0, 1]) weights every pixel: a masked score is the
  score over the mask. An empty mask gives NaN and a ``RuntimeWarning``.
- NaN in ``pred`` or ``target`` is left out: the value for MAE/RMSE/PSNR/nRMSE, the pixel for SAM, every pixel
  whose SSIM window reaches it for SSIM. :func:`xcloudfree.metrics.evaluate` reports how many there were.
- Shapes must match exactly (``ValueError`` otherwise); integer input is taken for DN and refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import Border, Reduction, as_images, as_mask, check_choice, check_pair
from .accumulate import comparison_stats, materialize, reduce

__all__ = ["mae", "rmse", "psnr", "ssim", "sam", "band_nrmse"]

_REDUCTIONS = ("mean", "pooled", "none")


def _score(
    key: str,
    pred: Any,
    target: Any,
    *,
    mask: Any,
    reduction: str,
    parts: frozenset[str] = frozenset(),
    border: str = "zero",
    data_range: float = 1.0,
    radians: bool = False,
) -> Any:
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("border", border, ("zero", "valid"))
    p, _ = as_images(pred, "pred")
    t, _ = as_images(target, "target")
    check_pair(p, t, ("pred", "target"))
    weights = [None if mask is None else as_mask(mask, p.shape)]
    job = comparison_stats(p, [(t, weights, ("pred", "target"))], parts=parts, border=border, data_range=data_range)
    (stats,) = materialize(job)  # one dict per weighting; here a single one
    value = reduce(stats[0], reduction, data_range=data_range, radians=radians, what=key, stacklevel=4)[key]
    return value if reduction == "none" or key == "band_nrmse" else float(value)


def mae(pred: Any, target: Any, *, mask: Any = None, reduction: Reduction = "mean") -> float | np.ndarray:
    """Mean absolute error ``mean|target − pred|`` (reflectance units).

    >>> import numpy as np
    >>> target = np.full((3, 8, 8), 0.2)  # (band, y, x) reflectance
    >>> pred = target.copy()
    >>> pred[:, :4] += 0.1  # wrong by 0.1 in the top half
    >>> from xcloudfree.metrics import mae
    >>> mask = np.zeros((8, 8), bool)
    >>> mask[:4] = True
    >>> round(mae(pred, target), 3), round(mae(pred, target, mask=mask), 3)
    (0.05, 0.1)
    >>> batch_pred, batch_target = np.stack([pred, target]), np.stack([target, target])  # (N, C, H, W)
    >>> mae(batch_pred, batch_target, reduction="none").round(3).tolist()
    [0.05, 0.0]
    """
    return _score("mae", pred, target, mask=mask, reduction=reduction)


def rmse(pred: Any, target: Any, *, mask: Any = None, reduction: Reduction = "mean") -> float | np.ndarray:
    """Root mean square error ``sqrt(mean((target − pred)²))`` (reflectance units).

    >>> import numpy as np
    >>> target = np.full((3, 8, 8), 0.2)  # (band, y, x) reflectance
    >>> pred = target.copy()
    >>> pred[:, :4] += 0.1  # wrong by 0.1 in the top half
    >>> from xcloudfree.metrics import rmse
    >>> round(rmse(pred, target), 4)  # sqrt(0.1² / 2)
    0.0707
    """
    return _score("rmse", pred, target, mask=mask, reduction=reduction)


def psnr(
    pred: Any, target: Any, *, mask: Any = None, data_range: float = 1.0, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Peak signal-to-noise ratio ``20·log10(data_range / RMSE)`` in dB; ``inf`` for identical images.

    >>> import numpy as np
    >>> target = np.full((3, 8, 8), 0.2)  # (band, y, x) reflectance
    >>> pred = target.copy()
    >>> pred[:, :4] += 0.1  # wrong by 0.1 in the top half
    >>> from xcloudfree.metrics import psnr
    >>> round(psnr(pred, target), 2), psnr(target, target)
    (23.01, inf)
    """
    return _score("psnr", pred, target, mask=mask, reduction=reduction, data_range=data_range)


def sam(
    pred: Any, target: Any, *, mask: Any = None, radians: bool = False, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Spectral angle mapper: mean over pixels of the angle between the spectra, degrees (radians if asked).

    The angle is ``acos(clip(Σ t·p / ‖t‖ / ‖p‖, −1, 1))``; it is 0 where both spectra are zero and 90° where
    only one is. Identical spectra give about 1e-6° rather than 0 (acos of a cosine rounded just below 1), as in the
    reference code.

    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> target = xcf.sensors.reflectance(scene.s2_clear)
    >>> pred = xcf.sensors.reflectance(scene.s2)  # the cloudy input as a (bad) prediction
    >>> from xcloudfree.metrics import sam
    >>> round(sam(pred, target), 2), round(sam(pred, target, mask=scene.cloud_truth), 2)  # degrees
    (7.63, 23.83)
    """
    return _score("sam", pred, target, mask=mask, reduction=reduction, parts=frozenset({"sam"}), radians=radians)


def ssim(
    pred: Any,
    target: Any,
    *,
    mask: Any = None,
    border: Border = "zero",
    data_range: float = 1.0,
    reduction: Reduction = "mean",
) -> float | np.ndarray:
    """Structural similarity, mean over bands and pixels of the per-band SSIM map.

    11×11 Gaussian window (σ = 1.5), C1 = (0.01·data_range)², C2 = (0.03·data_range)². ``border="zero"`` (the
    UnCRtainTS default) pads with zeros and averages every pixel; ``"valid"`` averages only the pixels whose window
    lies inside the image (5 px from each edge), like scikit-image and TensorFlow's ``ssim``.

    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> target = xcf.sensors.reflectance(scene.s2_clear)
    >>> pred = xcf.sensors.reflectance(scene.s2)  # the cloudy input as a (bad) prediction
    >>> from xcloudfree.metrics import ssim
    >>> round(ssim(pred, target), 3), round(ssim(pred, target, border="valid"), 3)
    (0.589, 0.573)
    >>> round(ssim(pred, target, mask=scene.cloud_truth), 3)  # under the clouds
    0.144
    """
    return _score(
        "ssim",
        pred,
        target,
        mask=mask,
        reduction=reduction,
        parts=frozenset({"ssim"}),
        border=border,
        data_range=data_range,
    )


def band_nrmse(pred: Any, target: Any, *, mask: Any = None, reduction: Reduction = "mean") -> np.ndarray:
    """RMSE of each band divided by that band's value range in the target (max − min): shape (C,), or (N, C).

    NaN for a band that is constant in the target.

    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> target = xcf.sensors.reflectance(scene.s2_clear)
    >>> pred = xcf.sensors.reflectance(scene.s2)  # the cloudy input as a (bad) prediction
    >>> from xcloudfree.metrics import band_nrmse
    >>> rgb = ["B04", "B03", "B02"]
    >>> band_nrmse(pred.sel(band=rgb), target.sel(band=rgb)).round(2).tolist()
    [1.42, 1.9, 2.15]
    """
    return _score("band_nrmse", pred, target, mask=mask, reduction=reduction)
