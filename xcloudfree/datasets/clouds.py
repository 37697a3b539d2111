"""Procedural clouds: Perlin noise, cloud opacity maps, cloud shadows and the two cyclecr augmentations.

The augmentations of the cyclecr paper (REFERENCE §4): (a) Perlin noise alpha-blended into all bands with the
noise as cloud map; (b) copy-paste: a real cloudy observation alpha-blended into a clear one by its cloud map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..sensors import S2_BAND_NAMES

__all__ = [
    "CLOUD_SPECTRUM",
    "perlin_noise",
    "perlin_clouds",
    "blend_clouds",
    "cast_shadows",
    "copy_paste_clouds",
]

#: Top-of-atmosphere DN of a thick cloud per band: bright and flat across the visible and NIR, absorbed in B09
#: (water vapour) and the SWIR, with a cirrus response in B10.
CLOUD_SPECTRUM: dict[str, float] = dict(
    zip(
        S2_BAND_NAMES,
        (7200, 7000, 6900, 6900, 7000, 7100, 7100, 7200, 7100, 3200, 1800, 5200, 3800),
        strict=True,
    )
)


def _shape2(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, int | np.integer):
        return int(shape), int(shape)
    h, w = (int(s) for s in shape)
    return h, w


def perlin_noise(
    shape: int | Sequence[int],
    seed: int | np.random.Generator = 0,
    *,
    scale: float = 64.0,
    octaves: int = 5,
    persistence: float = 0.5,
) -> np.ndarray:
    """Fractal Perlin (gradient) noise.

    Parameters
    ----------
    shape : int or (height, width)
    seed : int or numpy Generator
    scale : float
        Period of the coarsest octave in pixels; each further octave halves it.
    octaves : int
    persistence : float
        Amplitude factor from one octave to the next.

    Returns
    -------
    numpy.ndarray (height, width), float32, zero mean and unit standard deviation.

    Examples
    --------
    >>> from xcloudfree.datasets import perlin_noise
    >>> noise = perlin_noise((64, 96), seed=0, scale=32.0)
    >>> noise.shape, noise.dtype, round(float(noise.mean()), 3), round(float(noise.std()), 3)
    ((64, 96), dtype('float32'), 0.0, 1.0)
    """
    h, w = _shape2(shape)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    total = np.zeros((h, w), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        period = max(scale / 2**octave, 2.0)
        total += amplitude * _gradient_noise(h, w, period, rng)
        amplitude *= persistence
    total -= total.mean()
    return total / max(float(total.std()), 1e-12)


def _gradient_noise(h: int, w: int, period: float, rng: np.random.Generator) -> np.ndarray:
    gy, gx = int(np.ceil(h / period)) + 2, int(np.ceil(w / period)) + 2
    angles = rng.uniform(0, 2 * np.pi, (gy, gx)).astype(np.float32)
    # A smooth octave is evaluated every period/8 pixels and interpolated linearly (error < 1 % of its
    # amplitude), which makes the coarse octaves of a large field nearly free.
    step = max(int(period // 8), 1)
    rows = _lattice_noise(
        np.sin(angles), np.cos(angles), np.arange(0, h + step, step) / period, np.arange(0, w + step, step) / period
    )
    return _upsample(rows, step, h, w) if step > 1 else rows[:h, :w]


def _lattice_noise(grad_y: np.ndarray, grad_x: np.ndarray, ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
    ty, tx = ty.astype(np.float32), tx.astype(np.float32)
    iy, ix = ty.astype(np.int64), tx.astype(np.int64)
    fy, fx = (ty - iy)[:, None], (tx - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        # Gather the gradient rows once, then the columns with a 1-D take (fast).
        gy_rows = np.take(grad_y[iy + dy], ix + dx, axis=1)
        gx_rows = np.take(grad_x[iy + dy], ix + dx, axis=1)
        return gy_rows * (fy - dy) + gx_rows * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    top = c00 + ux * (c01 - c00)
    bottom = c10 + ux * (c11 - c10)
    return (top + uy * (bottom - top)).astype(np.float32)


def _upsample(small: np.ndarray, step: int, h: int, w: int) -> np.ndarray:
    """Linear interpolation of samples taken every ``step`` pixels back to (h, w)."""

    def along(a: np.ndarray, n: int, axis: int) -> np.ndarray:
        pos = np.arange(n)
        i, f = pos // step, ((pos % step) / step).astype(np.float32)
        lo, hi = np.take(a, i, axis=axis), np.take(a, i + 1, axis=axis)
        f = f[:, None] if axis == 0 else f[None, :]
        return lo + f * (hi - lo)

    return along(along(small, h, 0), w, 1)


def perlin_clouds(
    shape: int | Sequence[int],
    seed: int | np.random.Generator = 0,
    cover: float = 0.5,
    *,
    scale: float | None = None,
    softness: float = 0.6,
) -> np.ndarray:
    """A cloud opacity map from Perlin noise: thick cores (opacity 1) fading into thin edges.

    Parameters
    ----------
    shape : int or (height, width)
    seed : int or numpy Generator
    cover : float in [0, 1]
        Fraction of pixels with opacity ≥ 0.1 (the visible cloud).
    scale : float, optional
        Size of the largest cloud structures in pixels (default: a quarter of the longer side, at least 32).
    softness : float
        Width of the thin margin, in standard deviations of the noise.

    Returns
    -------
    numpy.ndarray (height, width), float32 in [0, 1].

    Examples
    --------
    >>> from xcloudfree.datasets import perlin_clouds
    >>> opacity = perlin_clouds(128, seed=1, cover=0.3)
    >>> round(float((opacity >= 0.1).mean()), 3), float(opacity.min()), float(opacity.max())  # cover, range
    (0.3, 0.0, 1.0)
    >>> round(float(((opacity > 0) & (opacity < 1)).mean()), 3)  # thin margins
    0.193
    """
    if not 0.0 <= cover <= 1.0:
        raise ValueError(f"cover: expected a fraction in [0, 1], found {cover}")
    h, w = _shape2(shape)
    if cover == 0.0:
        return np.zeros((h, w), np.float32)
    if cover == 1.0:
        return np.ones((h, w), np.float32)
    scale = scale if scale is not None else max(max(h, w) / 4, 32.0)
    noise = perlin_noise((h, w), seed, scale=scale, octaves=6)
    start = np.quantile(noise, 1.0 - cover) - 0.1 * softness
    return np.clip((noise - start) / softness, 0.0, 1.0).astype(np.float32)


def cast_shadows(
    opacity: np.ndarray, *, sun_azimuth: float = 150.0, offset: float = 30.0, strength: float = 0.8
) -> np.ndarray:
    """Cloud shadow opacity: the cloud map displaced away from the sun.

    Parameters
    ----------
    opacity : (height, width) cloud opacity in [0, 1]
    sun_azimuth : degrees clockwise from north (image up)
    offset : shadow displacement in pixels (cloud height / tan(sun elevation) / pixel size)
    strength : darkening under an opaque cloud's shadow, 0–1

    Returns
    -------
    numpy.ndarray (height, width), float32 in [0, strength]; pixels under the cloud itself are not excluded.

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.datasets import cast_shadows
    >>> cloud = np.zeros((64, 64), np.float32)
    >>> cloud[20:30, 20:30] = 1.0  # rows 20-29, columns 20-29
    >>> shadow = cast_shadows(cloud, sun_azimuth=180.0, offset=10)  # sun in the south: shadow 10 px north
    >>> rows, cols = np.nonzero(shadow > 0.5)
    >>> (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max())), round(float(shadow.max()), 2)
    ((10, 19), (20, 29), 0.8)
    """
    azimuth = np.deg2rad(sun_azimuth)
    # Away from the sun: east = −sin(az), north = −cos(az); rows grow southwards.
    shift = (offset * np.cos(azimuth), -offset * np.sin(azimuth))
    shadow = ndimage.shift(opacity.astype(np.float32), shift, order=1, mode="constant", cval=0.0)
    return (strength * np.clip(shadow, 0.0, 1.0)).astype(np.float32)


def blend_clouds(
    clear: Any,
    opacity: Any,
    *,
    bands: Sequence[str] = S2_BAND_NAMES,
    spectrum: dict[str, float] | None = None,
    texture: Any = None,
) -> Any:
    """Alpha-blend a cloud into a clear image: ``(1 − α)·clear + α·cloud``.

    Parameters
    ----------
    clear : (band, height, width) DN (numpy, xarray or torch)
    opacity : (height, width) α in [0, 1]
    bands : band names of ``clear`` (to pick the cloud's DN per band)
    spectrum : band → cloud DN, default :data:`CLOUD_SPECTRUM`
    texture : optional (height, width) brightness factor of the cloud (e.g. ``1 + 0.1·noise``)

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.datasets import blend_clouds
    >>> clear = np.full((13, 1, 4), 1000.0, np.float32)  # 13 bands of 1000 DN
    >>> opacity = np.array([[0.0, 0.5, 1.0, 1.0]], np.float32)
    >>> cloudy = blend_clouds(clear, opacity)
    >>> cloudy[3, 0].tolist(), cloudy[10, 0].tolist()  # B04 and the cirrus band B10
    ([1000.0, 3950.0, 6900.0, 6900.0], [1000.0, 1400.0, 1800.0, 1800.0])
    """
    spectrum = CLOUD_SPECTRUM if spectrum is None else spectrum
    missing = [b for b in bands if b not in spectrum]
    if missing:
        raise ValueError(f"bands: expected names with a cloud DN in the spectrum, found {missing}")
    cloud = np.asarray([spectrum[b] for b in bands], np.float32)[:, None, None]
    if texture is not None:
        cloud = cloud * texture[None]
    return (1.0 - opacity[None]) * clear + opacity[None] * cloud


def copy_paste_clouds(clear: Any, cloudy: Any, cloud_map: Any) -> Any:
    """Paste the clouds of a real cloudy image into a clear one: ``(1 − m)·clear + m·cloudy``.

    Parameters
    ----------
    clear, cloudy : (band, height, width) or (..., band, height, width) on the same grid and scale
    cloud_map : (height, width) continuous cloud map m in [0, 1] of ``cloudy`` (e.g. the cyclecr map)

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.datasets import copy_paste_clouds
    >>> clear, cloudy = np.zeros((3, 2, 2)), np.ones((3, 2, 2))
    >>> copy_paste_clouds(clear, cloudy, np.array([[0.0, 0.25], [0.5, 1.0]]))[0].tolist()
    [[0.0, 0.25], [0.5, 1.0]]
    """
    if tuple(clear.shape) != tuple(cloudy.shape):
        raise ValueError(f"cloudy: expected the shape of clear {tuple(clear.shape)}, found {tuple(cloudy.shape)}")
    if tuple(cloud_map.shape[-2:]) != tuple(clear.shape[-2:]):
        raise ValueError(
            f"cloud_map: expected the spatial shape {tuple(clear.shape[-2:])}, found {tuple(cloud_map.shape)}"
        )
    if hasattr(clear, "dims"):  # xarray broadcasts by dimension name
        return ((1.0 - cloud_map) * clear + cloud_map * cloudy).transpose(*clear.dims)
    m = cloud_map if cloud_map.ndim == clear.ndim else cloud_map[..., None, :, :]
    return (1.0 - m) * clear + m * cloudy
