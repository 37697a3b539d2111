"""Describe a GeoTIFF as the scene variable it would become (``xcloudfree info``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..io.geotiff import read_dem, read_s1, read_s2

__all__ = ["describe_file"]


def describe_file(path: str | Path, *, as_: str = "auto") -> str:
    """A short multi-line text: what the file is read as, its grid, bands and value range.

    ``as_`` is ``"s2"``, ``"s1"``, ``"dem"`` or ``"auto"`` (1 band → dem, 2 → s1, else s2).

    Examples
    --------
    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s1 = xcf.io.write_cog(xcf.datasets.synthetic_scene(64, seed=1)["s1"], f"{tmp}/s1.tif")
    ...     print(describe_file(s1))
    file: .../s1.tif
    read as: s1 {'polarization': 2, 'y': 64, 'x': 64} float32
    crs: EPSG:32633
    pixel: 10 × 10, upper-left (500000.00, 5100000.00)
    bounds: (500000.0, 5099360.0, 500640.0, 5100000.0)
    polarization: VV, VH
    values: min -34.5, mean -13.62, max 1.689 dB
    nodata (NaN): 0 of 8192
    """
    readers = {"s2": read_s2, "s1": read_s1, "dem": read_dem}
    if as_ == "auto":
        import rasterio

        if not Path(path).is_file():
            raise ValueError(f"file: expected an existing GeoTIFF file, found no file at {str(path)!r}")
        with rasterio.open(path) as src:
            as_ = {1: "dem", 2: "s1"}.get(src.count, "s2")
    if as_ not in readers:
        raise ValueError(f"as: expected one of {[*readers, 'auto']}, found {as_!r}")
    da: xr.DataArray = readers[as_](path)
    # Statistics from at most ~1024² samples: a whole scene is never loaded.
    step = max(1, max(da.sizes["y"], da.sizes["x"]) // 1024)
    values = np.asarray(da[..., ::step, ::step].values, dtype=np.float64)
    layers = da.dims[0] if da.ndim == 3 else None
    t = da.rio.transform()
    lines = [
        f"file: {path}",
        f"read as: {as_} {dict(da.sizes)} {da.dtype}",
        f"crs: {da.rio.crs}",
        f"pixel: {t.a:g} × {-t.e:g}, upper-left ({t.c:.2f}, {t.f:.2f})",
        f"bounds: {tuple(round(b, 2) for b in da.rio.bounds())}",
    ]
    if layers is not None:
        lines.append(f"{layers}: {', '.join(str(v) for v in da[layers].values)}")
    finite = np.isfinite(values)
    if finite.any():
        v = values[finite]
        units = da.attrs.get("units", "")
        lines.append(f"values: min {v.min():.4g}, mean {v.mean():.4g}, max {v.max():.4g} {units}".rstrip())
    sampled = f" (every {step}th pixel)" if step > 1 else ""
    lines.append(f"nodata (NaN): {int((~finite).sum())} of {values.size}{sampled}")
    return "\n".join(lines)
