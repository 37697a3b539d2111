"""SSIM as UnCRtainTS computes it: 11×11 Gaussian window (σ = 1.5), zero padding, C1 = 0.01², C2 = 0.03².

The window is written once (:func:`gaussian_window`) and used by the numpy/Dask path (separable
``scipy.ndimage`` filters) and by :func:`ssim_torch` (differentiable, for training losses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from ._inputs import Border, check_choice

__all__ = ["WINDOW_SIZE", "WINDOW_SIGMA", "HALO", "gaussian_window", "ssim_map", "ssim_torch"]

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
#: Pixels of context the SSIM of one pixel needs on each side.
HALO = WINDOW_SIZE // 2
K1, K2 = 0.01, 0.03
# UnCRtainTS builds its 2-D window in float32 (normalise the 1-D Gaussian, outer product), which sums to this
# rather than to 1. Keeping that sum moves SSIM by up to 7e-7 relative, i.e. it is what makes the 7th digit agree.
_UNCRTAINTS_WINDOW_SUM = 0.999999930557351


def gaussian_window() -> np.ndarray:
    """The 1-D factor ``g`` (11 values, float64) of the SSIM window ``outer(g, g)``.

    Offsets ``x − 5``, σ = 1.5, scaled so that the 2-D window has the sum of UnCRtainTS's float32 window.

    >>> import numpy as np
    >>> from xcloudfree.metrics import gaussian_window
    >>> g = gaussian_window()
    >>> g.shape, g[3:8].round(3).tolist(), round(float(np.outer(g, g).sum()), 6)
    ((11,), [0.109, 0.213, 0.266, 0.213, 0.109], 1.0)
    """
    x = np.arange(WINDOW_SIZE) - HALO
    g = np.exp(-(x**2) / (2.0 * WINDOW_SIGMA**2))
    return g / g.sum() * np.sqrt(_UNCRTAINTS_WINDOW_SUM)


def _ssim_from_blur(blur: Callable[[Any], Any], x: Any, y: Any, data_range: float) -> Any:
    # Plain arithmetic, so numpy arrays and torch tensors go through the same formula.
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    mxx, myy, mxy = mx * mx, my * my, mx * my
    sxx = blur(x * x) - mxx
    syy = blur(y * y) - myy
    sxy = blur(x * y) - mxy
    return ((2 * mxy + c1) * (2 * sxy + c2)) / ((mxx + myy + c1) * (sxx + syy + c2))


def ssim_map(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM of two numpy arrays ``(..., H, W)``, float64, zero padding beyond the edges.

    A NaN makes every pixel whose window reaches it NaN.

    >>> import numpy as np
    >>> from xcloudfree.metrics.structural import ssim_map
    >>> target = np.random.default_rng(0).uniform(0.1, 0.3, (2, 32, 32))  # (band, y, x) reflectance
    >>> target[1, 16, 16] = np.nan
    >>> smap = ssim_map(target, target)
    >>> smap.shape, float(np.nanmin(smap)), int(np.isnan(smap[1]).sum())  # NaN reaches an 11 × 11 window
    ((2, 32, 32), 1.0, 121)
    """
    g = gaussian_window()

    def blur(a: np.ndarray) -> np.ndarray:
        a = ndimage.correlate1d(a, g, axis=-1, mode="constant", cval=0.0)
        return ndimage.correlate1d(a, g, axis=-2, mode="constant", cval=0.0)

    out = np.empty(np.broadcast_shapes(pred.shape, target.shape), dtype=np.float64)
    for idx in np.ndindex(out.shape[:-2]):  # plane by plane bounds the temporaries
        x, y = np.asarray(pred[idx], dtype=np.float64), np.asarray(target[idx], dtype=np.float64)
        out[idx] = _ssim_from_blur(blur, x, y, data_range)
    return out


def ssim_torch(pred: Any, target: Any, *, border: Border = "zero", data_range: float = 1.0) -> Any:
    """Differentiable SSIM of torch tensors ``(N, C, H, W)`` or ``(C, H, W)``: a scalar tensor.

    Same definition as :func:`xcloudfree.metrics.ssim` (mean over bands and pixels; ``border="zero"`` pads with
    zeros and averages all pixels, ``"valid"`` drops the 5 pixels along each edge), computed with depthwise
    separable ``conv2d`` in the tensors' dtype and device. NaN is not handled here.

    >>> import numpy as np, torch
    >>> from xcloudfree.metrics import ssim_torch
    >>> target = torch.from_numpy(np.random.default_rng(0).uniform(0.1, 0.3, (2, 3, 32, 32)))  # (N, C, H, W)
    >>> pred = (0.5 * target + 0.1).requires_grad_()
    >>> loss = 1 - ssim_torch(pred, target)  # a training loss
    >>> loss.backward()
    >>> round(loss.item(), 3), pred.grad.shape
    (0.123, torch.Size([2, 3, 32, 32]))
    """
    import torch
    import torch.nn.functional as F

    check_choice("border", border, ("zero", "valid"))
    if pred.shape != target.shape or pred.ndim not in (3, 4):
        raise ValueError(
            f"target: expected the shape of pred (N, C, H, W) or (C, H, W) {tuple(pred.shape)}, "
            f"found {tuple(target.shape)}"
        )
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    channels = pred.shape[1]
    g = torch.as_tensor(gaussian_window(), dtype=pred.dtype, device=pred.device)
    gx = g.view(1, 1, 1, WINDOW_SIZE).expand(channels, 1, 1, WINDOW_SIZE)
    gy = g.view(1, 1, WINDOW_SIZE, 1).expand(channels, 1, WINDOW_SIZE, 1)

    def blur(a: Any) -> Any:
        a = F.conv2d(a, gx, padding=(0, HALO), groups=channels)
        return F.conv2d(a, gy, padding=(HALO, 0), groups=channels)

    smap = _ssim_from_blur(blur, pred, target, data_range)
    if border == "valid":
        smap = smap[..., HALO:-HALO, HALO:-HALO]
    return smap.mean()
