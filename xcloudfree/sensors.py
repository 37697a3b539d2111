"""Sentinel-1 and Sentinel-2 facts: band tables, units and the normalisation presets of the papers.

Sentinel-2 values are digital numbers (DN = reflectance × 10000, L1C top-of-atmosphere or L2A surface
reflectance). Sentinel-1 values are backscatter in dB. The presets map them to the ranges the networks were
trained on and back (REFERENCE §3); every forward function has an exact inverse inside the clipping range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "Band",
    "S2_BANDS",
    "S2_BAND_NAMES",
    "S2_L2A_BAND_NAMES",
    "S2_RGB",
    "S1_POLARIZATIONS",
    "S1_DB_RANGES",
    "PRESETS",
    "preset_range",
    "S2_SCALE",
    "db_to_linear",
    "linear_to_db",
    "normalize_s2",
    "denormalize_s2",
    "normalize_s1",
    "denormalize_s1",
    "processing_offset",
    "harmonize_s2",
    "reflectance",
]


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 MSI band: name, native resolution (m) and central wavelength (nm).

    >>> from xcloudfree.sensors import S2_BANDS
    >>> S2_BANDS[3]
    Band(name='B04', resolution=10, wavelength=664.6, description='red')
    """

    name: str
    resolution: int
    wavelength: float
    description: str


#: The 13 Sentinel-2 bands in canonical (SAFE / SEN12MS-CR) order; B8A comes after B08.
S2_BANDS: tuple[Band, ...] = (
    Band("B01", 60, 442.7, "coastal aerosol"),
    Band("B02", 10, 492.4, "blue"),
    Band("B03", 10, 559.8, "green"),
    Band("B04", 10, 664.6, "red"),
    Band("B05", 20, 704.1, "red edge 1"),
    Band("B06", 20, 740.5, "red edge 2"),
    Band("B07", 20, 782.8, "red edge 3"),
    Band("B08", 10, 832.8, "near infrared"),
    Band("B8A", 20, 864.7, "narrow near infrared"),
    Band("B09", 60, 945.1, "water vapour"),
    Band("B10", 60, 1373.5, "cirrus"),
    Band("B11", 20, 1613.7, "short-wave infrared 1"),
    Band("B12", 20, 2202.4, "short-wave infrared 2"),
)
S2_BAND_NAMES: tuple[str, ...] = tuple(b.name for b in S2_BANDS)
#: Level-2A products have no cirrus band.
S2_L2A_BAND_NAMES: tuple[str, ...] = tuple(n for n in S2_BAND_NAMES if n != "B10")
#: Red, green, blue, as displayed.
S2_RGB: tuple[str, str, str] = ("B04", "B03", "B02")
#: DN per unit reflectance.
S2_SCALE = 10000.0

S1_POLARIZATIONS: tuple[str, str] = ("VV", "VH")
#: dB clipping range per polarisation for each preset (REFERENCE §3).
S1_DB_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "dsen2cr": {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)},
    "unit": {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)},
    "tanh": {"VV": (-25.0, 0.0), "VH": (-25.0, 0.0)},
}

Preset = Literal["dsen2cr", "unit", "tanh"]


@dataclass(frozen=True)
class _Affine:
    """``normalised = (clip(x, lo, hi) - lo) / (hi - lo) * span + start``."""

    lo: float
    hi: float
    start: float
    span: float

    def forward(self, x: Any) -> Any:
        return (_clip(x, self.lo, self.hi) - self.lo) * (self.span / (self.hi - self.lo)) + self.start

    def inverse(self, y: Any) -> Any:
        return (y - self.start) * ((self.hi - self.lo) / self.span) + self.lo


#: S2 presets on DN: dsen2cr → [0, 5], unit → [0, 1], tanh → [-1, 1].
_S2_PRESETS: dict[str, _Affine] = {
    "dsen2cr": _Affine(0.0, S2_SCALE, 0.0, 5.0),
    "unit": _Affine(0.0, S2_SCALE, 0.0, 1.0),
    "tanh": _Affine(0.0, S2_SCALE, -1.0, 2.0),
}
_S1_SPANS: dict[str, tuple[float, float]] = {"dsen2cr": (0.0, 2.0), "unit": (0.0, 1.0), "tanh": (-1.0, 2.0)}
PRESETS: tuple[str, ...] = tuple(_S2_PRESETS)


def preset_range(preset: Preset) -> tuple[float, float]:
    """The range (low, high) a preset maps S2 DN [0, 10000] onto, e.g. (0, 5) for dsen2cr.

    >>> from xcloudfree.sensors import preset_range
    >>> preset_range("dsen2cr"), preset_range("tanh")
    ((0.0, 5.0), (-1.0, 1.0))
    """
    affine = _S2_PRESETS[_preset(preset)]
    return affine.start, affine.start + affine.span


def _clip(x: Any, lo: float, hi: float) -> Any:
    # Works for numpy, Dask, xarray and torch alike; NaN stays NaN.
    if hasattr(x, "clamp"):
        return x.clamp(lo, hi)
    return x.clip(lo, hi) if hasattr(x, "clip") else np.clip(x, lo, hi)


def _preset(preset: str) -> str:
    if preset not in _S2_PRESETS:
        raise ValueError(f"preset: expected one of {list(_S2_PRESETS)}, found {preset!r}")
    return preset


def _s1_affine(preset: str, polarization: str) -> _Affine:
    ranges = S1_DB_RANGES[_preset(preset)]
    if polarization not in ranges:
        raise ValueError(f"polarization: expected one of {list(ranges)}, found {polarization!r}")
    lo, hi = ranges[polarization]
    return _Affine(lo, hi, *_S1_SPANS[preset])


def db_to_linear(x: Any) -> Any:
    """Backscatter in dB → linear power: ``10 ** (x / 10)``.

    >>> import numpy as np
    >>> from xcloudfree.sensors import db_to_linear
    >>> db_to_linear(np.array([-20.0, -10.0, 0.0])).tolist()
    [0.01, 0.1, 1.0]
    """
    return 10.0 ** (x / 10.0)


def linear_to_db(x: Any) -> Any:
    """Linear power → dB: ``10 · log10(x)``; zero and negative values give -inf and NaN (nodata).

    >>> import numpy as np
    >>> from xcloudfree.sensors import linear_to_db
    >>> linear_to_db(np.array([0.01, 1.0, 0.0, -1.0])).tolist()
    [-20.0, 0.0, -inf, nan]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if hasattr(x, "log10"):  # torch
            return 10.0 * x.log10()
        return 10.0 * np.log10(x)


def normalize_s2(x: Any, preset: Preset = "dsen2cr") -> Any:
    """Scale Sentinel-2 DN to a network's range.

    Parameters
    ----------
    x : array-like (numpy, Dask, xarray or torch), any shape
        Reflectance × 10000 with any processing-baseline offset already applied.
    preset : {"dsen2cr", "unit", "tanh"}
        Clip to [0, 10000], then map to [0, 5], [0, 1] or [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.sensors import normalize_s2
    >>> dn = np.array([0, 2500, 10000, 12000])
    >>> normalize_s2(dn).tolist(), normalize_s2(dn, "tanh").tolist()
    ([0.0, 1.25, 5.0, 5.0], [-1.0, -0.5, 1.0, 1.0])
    """
    return _S2_PRESETS[_preset(preset)].forward(x)


def denormalize_s2(y: Any, preset: Preset = "dsen2cr") -> Any:
    """Inverse of :func:`normalize_s2` (exact for DN in [0, 10000]).

    >>> import numpy as np
    >>> from xcloudfree.sensors import denormalize_s2
    >>> denormalize_s2(np.array([0.0, 1.25, 5.0])).tolist()
    [0.0, 2500.0, 10000.0]
    """
    return _S2_PRESETS[_preset(preset)].inverse(y)


def normalize_s1(x: Any, preset: Preset = "dsen2cr", polarizations: tuple[str, ...] = S1_POLARIZATIONS) -> Any:
    """Scale Sentinel-1 backscatter (dB) to a network's range, per polarisation.

    Parameters
    ----------
    x : array-like, shape (P, ...) or an xarray object with a ``polarization`` dimension
        Backscatter in dB; the first axis follows ``polarizations`` (ignored for xarray input, which says its own).
    preset : {"dsen2cr", "unit", "tanh"}
        dsen2cr: VV [-25, 0] and VH [-32.5, 0] → [0, 2]; unit: the same ranges → [0, 1]; tanh: [-25, 0] → [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.sensors import normalize_s1
    >>> db = np.array([[-25.0, -12.5, 5.0], [-32.5, -16.25, 0.0]])  # (VV, VH) × 3 pixels
    >>> normalize_s1(db).tolist()
    [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
    """
    return _per_polarization(x, preset, polarizations, inverse=False)


def denormalize_s1(y: Any, preset: Preset = "dsen2cr", polarizations: tuple[str, ...] = S1_POLARIZATIONS) -> Any:
    """Inverse of :func:`normalize_s1` (exact inside the clipping range).

    >>> import numpy as np
    >>> from xcloudfree.sensors import denormalize_s1
    >>> denormalize_s1(np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])).tolist()
    [[-25.0, -12.5, 0.0], [-32.5, -16.25, 0.0]]
    """
    return _per_polarization(y, preset, polarizations, inverse=True)


def _per_polarization(x: Any, preset: str, polarizations: tuple[str, ...], inverse: bool) -> Any:
    def one(v: Any, pol: str) -> Any:
        affine = _s1_affine(preset, str(pol))
        return affine.inverse(v) if inverse else affine.forward(v)

    if hasattr(x, "dims") and "polarization" in x.dims:
        import xarray as xr

        parts = [one(x.sel(polarization=p), p) for p in x["polarization"].values]
        return xr.concat(parts, dim="polarization").transpose(*x.dims).assign_attrs(x.attrs)
    if len(x) != len(polarizations):
        raise ValueError(
            f"s1: expected {len(polarizations)} polarisations {list(polarizations)} on the first axis, found {len(x)}"
        )
    parts = [one(x[i], p) for i, p in enumerate(polarizations)]
    if hasattr(x, "clamp"):
        import torch

        return torch.stack(parts)
    if type(x).__module__.startswith("dask"):
        import dask.array as da

        return da.stack(parts)
    return np.stack(parts)


def processing_offset(attrs: dict) -> float:
    """The offset to add to Sentinel-2 DN to get reflectance × 10000.

    ``attrs["offset"]`` wins when present; otherwise processing baseline 04.00 and later
    (``attrs["processing_baseline"]``, e.g. ``"04.00"`` or ``4.0``) means −1000, earlier baselines 0.

    >>> from xcloudfree.sensors import processing_offset
    >>> processing_offset({"processing_baseline": "05.09"}), processing_offset({"processing_baseline": "02.06"})
    (-1000.0, 0.0)
    >>> processing_offset({"processing_baseline": "05.09", "offset": 0})  # already applied
    0.0
    """
    if "offset" in attrs:
        return float(attrs["offset"])
    baseline = attrs.get("processing_baseline", attrs.get("s2:processing_baseline"))
    if baseline is None:
        return 0.0
    try:
        value = float(baseline)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"s2.attrs['processing_baseline']: expected a number such as '04.00', found {baseline!r}"
        ) from err
    return -1000.0 if value >= 4.0 else 0.0


def harmonize_s2(s2: Any) -> Any:
    """Apply the processing-baseline offset of an S2 DataArray so that DN = reflectance × 10000.

    Returns float32 DN with ``attrs["offset"] = 0``; input without an offset is returned unchanged.
    Lazy on Dask.

    >>> import numpy as np, xarray as xr
    >>> from xcloudfree.sensors import harmonize_s2
    >>> s2 = xr.DataArray(np.array([[[1000, 3500]]], np.uint16), dims=("band", "y", "x"),
    ...                   attrs={"units": "DN", "processing_baseline": "05.00"})
    >>> out = harmonize_s2(s2)
    >>> out.values.ravel().tolist(), out.dtype, out.attrs["offset"], out.attrs["offset_applied"]
    ([0.0, 2500.0], dtype('float32'), 0, -1000.0)
    """
    offset = processing_offset(s2.attrs)
    if offset == 0:
        return s2
    out = (s2.astype("float32") + np.float32(offset)).assign_attrs(s2.attrs)
    out.attrs["offset"] = 0
    out.attrs["offset_applied"] = offset
    return out


def reflectance(s2: Any) -> Any:
    """S2 DN → reflectance in [0, 1] (offset applied, clipped), float32: the scale of metrics and masks.

    >>> import numpy as np, xarray as xr
    >>> from xcloudfree.sensors import reflectance
    >>> s2 = xr.DataArray(np.array([[[1000, 3500, 12000]]], np.uint16), dims=("band", "y", "x"),
    ...                   attrs={"processing_baseline": "05.00"})
    >>> r = reflectance(s2)
    >>> r.values.ravel().round(4).tolist(), r.dtype
    ([0.0, 0.25, 1.0], dtype('float32'))
    """
    if hasattr(s2, "attrs"):
        s2 = harmonize_s2(s2)
    return normalize_s2(s2.astype("float32") if hasattr(s2, "astype") else s2, "unit")
