"""SSIM as UnCRtainTS computes it: 11×11 Gaussian window (σ = 1.5), zero padding, C1 = 0.01², C2 = 0.03².

The window is written once (:func:`gaussian_window`) and used by the numpy/Dask path (:func:`blur`: separable,
banded GEMMs in float64) and by :func:`ssim_torch` (differentiable, for training losses); both apply one formula
(:func:`ssim_from_moments`).
"""

from __future__ import annotations

import functools
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


def ssim_from_moments(mx: Any, my: Any, bxx: Any, byy: Any, bxy: Any, data_range: float) -> Any:
    """SSIM from the window means ``mx``, ``my`` and the window means of ``x²``, ``y²``, ``x·y`` (same shapes).

    Plain arithmetic, so numpy arrays and torch tensors go through the same formula.
    """
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mxx, myy, mxy = mx * mx, my * my, mx * my
    sxx = bxx - mxx
    syy = byy - myy
    sxy = bxy - mxy
    return ((2 * mxy + c1) * (2 * sxy + c2)) / ((mxx + myy + c1) * (sxx + syy + c2))


#: Output rows per vertical GEMM and output columns per horizontal GEMM of :func:`blur`.
_ROWS, _COLS = 16, 16
#: Columns per vertical GEMM.
_VCOLS = 256
# OpenBLAS runs a GEMM on several threads once M·N·K exceeds 65536 × GEMM_MULTITHREAD_THRESHOLD (4) (its
# interface/gemm.c). Called from Dask's worker threads that oversubscribes the cores: measured 20× slower on 2
# cores. Every GEMM of blur() stays below that size, so each runs on the thread that calls it.
BLAS_ONE_THREAD = 65536 * 4
assert _ROWS * (_ROWS + 2 * HALO) * _VCOLS <= BLAS_ONE_THREAD
assert _ROWS * (_COLS + 2 * HALO) * _COLS <= BLAS_ONE_THREAD


@functools.cache
def _banded() -> tuple[np.ndarray, np.ndarray]:
    """The window as banded matrices: vertical (rows, rows + 10) and horizontal (cols + 10, cols), float64."""
    g = gaussian_window()
    vertical = np.zeros((_ROWS, _ROWS + 2 * HALO))
    horizontal = np.zeros((_COLS + 2 * HALO, _COLS))
    for i in range(_ROWS):
        vertical[i, i : i + WINDOW_SIZE] = g
    for i in range(_COLS):
        horizontal[i : i + WINDOW_SIZE, i] = g
    return vertical, horizontal


def blur(planes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Window-weighted means of planes ``(P, h + 10, w + 10)`` float64 at their inner pixels: ``(P, h, w)``.

    The caller pads (zeros for SSIM's zero padding). Separable, each pass a product with a banded matrix: small
    single-threaded BLAS GEMMs, ~5× faster than ``scipy.ndimage.correlate1d`` and equal to it to 1e-15. Non-finite
    values spread to whole GEMM blocks (0 × NaN is NaN), not just to the pixels whose window reaches them.
    """
    vertical, horizontal = _banded()
    count, height, width = planes.shape[0], planes.shape[1] - 2 * HALO, planes.shape[2] - 2 * HALO
    out = np.empty((count, height, width)) if out is None else out
    tmp = np.empty((count, min(_ROWS, height), width + 2 * HALO))
    for r0 in range(0, height, _ROWS):
        r = min(_ROWS, height - r0)
        rows = planes[:, r0 : r0 + r + 2 * HALO]
        for c0 in range(0, width + 2 * HALO, _VCOLS):
            np.matmul(vertical[:r, : r + 2 * HALO], rows[..., c0 : c0 + _VCOLS], out=tmp[:, :r, c0 : c0 + _VCOLS])
        for c0 in range(0, width, _COLS):
            c = min(_COLS, width - c0)
            np.matmul(
                tmp[:, :r, c0 : c0 + c + 2 * HALO], horizontal[: c + 2 * HALO, :c], out=out[:, r0 : r0 + r, c0 : c0 + c]
            )
    return out


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
    out = np.empty(np.broadcast_shapes(pred.shape, target.shape), dtype=np.float64)
    height, width = out.shape[-2:]
    planes = np.zeros((5, height + 2 * HALO, width + 2 * HALO))
    inner = planes[:, HALO : HALO + height, HALO : HALO + width]
    for idx in np.ndindex(out.shape[:-2]):  # plane by plane bounds the temporaries
        x = np.broadcast_to(pred, out.shape)[idx]
        y = np.broadcast_to(target, out.shape)[idx]
        bad = ~(np.isfinite(x) & np.isfinite(y))
        inner[0], inner[1] = np.where(bad, 0.0, x), np.where(bad, 0.0, y)
        np.multiply(inner[0], inner[0], out=inner[2])
        np.multiply(inner[1], inner[1], out=inner[3])
        np.multiply(inner[0], inner[1], out=inner[4])
        smap = ssim_from_moments(*blur(planes), data_range)
        if bad.any():
            smap[window_reach(bad)] = np.nan
        out[idx] = smap
    return out


def window_reach(bad: np.ndarray) -> np.ndarray:
    """Pixels ``(..., H, W)`` whose 11 × 11 window reaches a ``bad`` one (bool, same shape)."""
    size = (1,) * (bad.ndim - 2) + (WINDOW_SIZE, WINDOW_SIZE)
    return ndimage.maximum_filter(bad, size=size, mode="constant", cval=False)


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

    def blur2d(a: Any) -> Any:
        a = F.conv2d(a, gx, padding=(0, HALO), groups=channels)
        return F.conv2d(a, gy, padding=(HALO, 0), groups=channels)

    means = [blur2d(a) for a in (pred, target, pred * pred, target * target, pred * target)]
    smap = ssim_from_moments(*means, data_range)
    if border == "valid":
        smap = smap[..., HALO:-HALO, HALO:-HALO]
    return smap.mean()
