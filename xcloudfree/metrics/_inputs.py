"""What the metrics accept: numpy, Dask, torch or xarray images, brought to one ``(N, C, H, W)`` layout."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Reduction = Literal["mean", "pooled", "none"]
Border = Literal["zero", "valid"]


def is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def unwrap(x: Any, dims: tuple[str, ...]) -> tuple[Any, Any]:
    """Array data (numpy or Dask) of ``x`` and the DataArray it came from, if any; named dims moved last."""
    if type(x).__module__.split(".")[0] == "torch":
        import torch  # already imported by whoever made the tensor

        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            x = x.float()
        return x.numpy(), None
    if hasattr(x, "dims") and hasattr(x, "data"):
        if all(d in x.dims for d in dims):
            x = x.transpose(..., *dims)
        return x.data, x
    return (x if is_dask(x) else np.asarray(x)), None


def as_images(x: Any, name: str) -> tuple[Any, tuple[str, ...] | None]:
    """``x`` as a float ``(N, C, H, W)`` numpy or Dask array, and its band names when it is a DataArray with them.

    ``(C, H, W)`` input gets ``N = 1``. A DataArray with ``band``, ``y`` and ``x`` dims is transposed to
    ``(..., band, y, x)`` first.
    """
    data, da = unwrap(x, ("band", "y", "x"))
    if data.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected an image (C, H, W) or a batch (N, C, H, W), found shape {tuple(data.shape)}"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(
            f"{name}: expected reflectance in [0, 1] as floats, found dtype {data.dtype}; scale Sentinel-2 DN "
            "with xcloudfree.sensors.reflectance first"
        )
    names = None
    if da is not None and "band" in da.dims and "band" in da.coords:
        names = tuple(str(b) for b in da["band"].values)
    return (data if data.ndim == 4 else data[None]), names


def as_mask(mask: Any, shape: tuple[int, int, int, int]) -> Any:
    """A mask as float weights ``(N or 1, H, W)`` for images of ``shape`` (N, C, H, W).

    Bool masks become 0/1; float masks must lie in [0, 1] (checked here for numpy, in the block kernel for Dask).
    """
    data, _ = unwrap(mask, ("y", "x"))
    n, _, h, w = shape
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[-2:] != (h, w) or data.shape[0] not in (1, n):
        raise ValueError(f"mask: expected shape (H, W) or (N, H, W) = {(n, h, w)}, found {tuple(data.shape)}")
    if not (data.dtype == bool or np.issubdtype(data.dtype, np.number)):
        raise ValueError(f"mask: expected bool or numbers in [0, 1], found dtype {data.dtype}")
    data = data.astype(np.float64)
    if not is_dask(data):
        check_weights(data)
    return data


def check_weights(w: np.ndarray) -> None:
    if w.size and not (np.all(w >= 0) and np.all(w <= 1)):
        raise ValueError(
            f"mask: expected bool or weights in [0, 1], found values in [{np.nanmin(w)}, {np.nanmax(w)}]"
            + (" and NaN" if np.isnan(w).any() else "")
        )


def check_pair(a: Any, b: Any, names: tuple[str, str]) -> None:
    """Same shape, and one scale: refuse a DN image scored against reflectance, naming which is which.

    Two mixes are caught: DN (values above 2) against reflectance (at most 2), and reflectance divided by 10000
    a second time (a 0–1 image given where DN were expected, then scaled: values below 0.001) against reflectance.
    The scale is judged on a strided sample of in-memory data (at most ~64k values each); Dask data are not read
    here (the metric kernels refuse values above 100 chunk by chunk).
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{names[1]}: expected the shape of {names[0]} {tuple(a.shape)}, found {tuple(b.shape)}")
    if is_dask(a) or is_dask(b):
        return
    peaks = [_peak(x) for x in (a, b)]
    if None in peaks:
        return
    big = int(peaks[1] > peaks[0])
    high, low = peaks[big], peaks[1 - big]
    # Reflectance stays below ~1.5 even on snow and clouds; DN of anything but a black image is far above 2.
    if high > _REFLECTANCE_MAX and 0 < low <= _REFLECTANCE_MAX:
        raise ValueError(
            f"{names[big]}: expected reflectance in [0, 1], found values up to {high:.6g} that look like DN "
            f"(reflectance × 10000) while {names[1 - big]} holds reflectance (up to {low:.3g}); scale DN with "
            "xcloudfree.sensors.reflectance (clip 0..10000, / 10000) before scoring"
        )
    if high <= _REFLECTANCE_MAX and 0 < low < _DOUBLE_SCALED_MAX and high > 100 * low:
        raise ValueError(
            f"{names[1 - big]}: expected reflectance in [0, 1], found values up to {low:.3g} while "
            f"{names[big]} reaches {high:.3g}: reflectance divided by 10000 twice (0–1 reflectance given where DN "
            "were expected?)"
        )


#: Above this, values are not reflectance (data_range 1) but DN.
_REFLECTANCE_MAX = 2.0
#: Below this everywhere, an image is reflectance scaled down once more (bright pixels are > 0.05 reflectance).
_DOUBLE_SCALED_MAX = 1e-3


def _peak(x: Any) -> float | None:
    """Largest finite |value| of a strided sample of ``x`` (None when it holds no finite value)."""
    step = max(1, int((x.size / 65536) ** 0.5))
    sample = np.abs(np.asarray(x[..., ::step, ::step], dtype=np.float64))
    sample = sample[np.isfinite(sample)]
    return float(sample.max()) if sample.size else None


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, found {value!r}")
