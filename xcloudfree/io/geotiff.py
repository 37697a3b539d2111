"""Read GeoTIFF / COG files into the scene model; write COG and Zarr atomically, streaming from Dask."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..parallel import active_client, compute, write_lock
from ..scene import make_scene, name_s1_polarizations, name_s2_bands

__all__ = ["open_scene", "read_s2", "read_s1", "read_dem", "write_cog", "write_zarr", "atomic_path"]

PathLike = str | os.PathLike


def _open(path: PathLike, name: str, chunks: Any) -> xr.DataArray:
    import rioxarray

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: expected an existing GeoTIFF file, found no file at {str(path)!r}")
    try:
        da = rioxarray.open_rasterio(path, chunks=chunks)
    except Exception as err:  # rasterio raises its own error types for unreadable files
        raise ValueError(f"{name}: expected a readable GeoTIFF, found {str(path)!r} ({err})") from err
    if not isinstance(da, xr.DataArray):
        raise ValueError(f"{name}: expected one raster in {str(path)!r}, found several subdatasets")
    da.attrs.pop("scale_factor", None)
    da.attrs.pop("add_offset", None)
    da.encoding["source"] = str(path)
    return da.rename(name)


def read_s2(
    path: PathLike,
    *,
    bands: Sequence[str] | None = None,
    product: str | None = None,
    processing_baseline: str | None = None,
    chunks: Any = None,
    name: str = "s2",
) -> xr.DataArray:
    """Read a Sentinel-2 stack as ``(band, y, x)`` DN with canonical band names.

    Parameters
    ----------
    bands : band names in file order; needed when the file holds neither 13 bands nor named ones.
    product : "L1C" (13 bands) or "L2A" (12 bands, no B10).
    processing_baseline : e.g. "04.00"; baselines ≥ 04.00 carry the −1000 offset (stored in attrs,
        applied by :func:`xcloudfree.sensors.harmonize_s2`).
    chunks : passed to ``rioxarray.open_rasterio``; anything but None gives a lazy Dask array.
    """
    da = name_s2_bands(_open(path, name, chunks), bands=bands, product=product, name=name)
    if processing_baseline is not None:
        da.attrs["processing_baseline"] = str(processing_baseline)
    return da


def read_s1(
    path: PathLike, *, polarizations: Sequence[str] | None = None, chunks: Any = None, name: str = "s1"
) -> xr.DataArray:
    """Read a Sentinel-1 stack as ``(polarization, y, x)`` backscatter in dB (float32, nodata → NaN)."""
    da = _open(path, name, chunks)
    da = _nodata_to_nan(da)
    return name_s1_polarizations(da, polarizations=polarizations, name=name)


def read_dem(path: PathLike, *, like: xr.DataArray | None = None, chunks: Any = None) -> xr.DataArray:
    """Read a DEM as ``(y, x)`` float32 metres, nodata → NaN; bilinear onto the grid of ``like`` if given.

    The reprojection loads the DEM into memory (DEMs are small next to the scenes they serve) and the result
    is chunked like ``like``.
    """
    da = _nodata_to_nan(_open(path, "dem", chunks=None))
    if da.sizes["band"] != 1:
        raise ValueError(f"dem: expected a single-band raster, found {da.sizes['band']} bands")
    da = da.squeeze("band", drop=True)
    da.attrs.setdefault("units", "m")
    if like is not None and not _same_grid(da, like):
        from rasterio.enums import Resampling

        template = like.isel({d: 0 for d in like.dims if d not in ("y", "x")}, drop=True)
        da = da.rio.reproject_match(template, resampling=Resampling.bilinear, nodata=np.nan)
        da = da.assign_coords(x=like["x"], y=like["y"])
    if like is not None and like.chunks is not None:
        da = da.chunk({"y": like.chunksizes["y"], "x": like.chunksizes["x"]})
    elif chunks is not None:
        da = da.chunk(chunks)
    return da.astype("float32").rename("dem")


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    if a.rio.crs != b.rio.crs or a.sizes["y"] != b.sizes["y"] or a.sizes["x"] != b.sizes["x"]:
        return False
    return np.allclose(a.rio.transform()[:6], b.rio.transform()[:6])


def _nodata_to_nan(da: xr.DataArray) -> xr.DataArray:
    nodata = da.rio.nodata
    out = da.astype("float32")
    if nodata is not None and not np.isnan(nodata):
        out = out.where(da != nodata)
    out = out.rio.write_nodata(np.nan, encoded=False)
    out.attrs.pop("_FillValue", None)
    return out


def open_scene(
    s2: PathLike | None = None,
    s1: PathLike | None = None,
    dem: PathLike | None = None,
    s2_clear: PathLike | None = None,
    *,
    chunks: Any = None,
    bands: Sequence[str] | None = None,
    product: str | None = None,
    processing_baseline: str | None = None,
    polarizations: Sequence[str] | None = None,
    validate: bool = True,
    max_nan_fraction: float = 0.0,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Open GeoTIFF/COG files as one scene (:mod:`xcloudfree.scene`).

    S1 and S2 must share the S2 grid (CRS, transform, shape); the DEM may lie on any grid and is reprojected
    onto it (bilinear). ``bands``, ``product`` and ``processing_baseline`` apply to ``s2`` and ``s2_clear``.

    Parameters
    ----------
    chunks : e.g. ``{"x": 2048, "y": 2048}`` or ``"auto"``: lazy Dask arrays, nothing is read until computed.
    validate, max_nan_fraction : see :func:`xcloudfree.validate_scene` (values of lazy arrays are not checked).

    Examples
    --------
    >>> ds = xcf.io.open_scene(s2="cloudy.tif", s1="s1.tif", dem="dem.tif", chunks={"x": 2048, "y": 2048})
    """
    s2_kwargs = {"bands": bands, "product": product, "processing_baseline": processing_baseline, "chunks": chunks}
    parts: dict[str, xr.DataArray] = {}
    if s2 is not None:
        parts["s2"] = read_s2(s2, **s2_kwargs)
    if s2_clear is not None:
        parts["s2_clear"] = read_s2(s2_clear, name="s2_clear", **s2_kwargs)
    if s1 is not None:
        parts["s1"] = read_s1(s1, polarizations=polarizations, chunks=chunks)
    if dem is not None:
        like = next(iter(parts.values()), None)
        parts["dem"] = read_dem(dem, like=like, chunks=chunks)
    if not parts:
        raise ValueError("open_scene: expected at least one of s2, s1, dem, s2_clear paths, found none")
    return make_scene(**parts, attrs=attrs, validate=validate, max_nan_fraction=max_nan_fraction)


def atomic_path(path: PathLike) -> tuple[Path, Path]:
    """``(final, temporary)``: a temporary sibling name to write to before ``os.replace``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    return final, final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_cog(
    da: xr.DataArray,
    path: PathLike,
    *,
    compress: str = "deflate",
    nodata: float | None = None,
    blocksize: int = 512,
    progress: bool = False,
) -> Path:
    """Write a ``(band, y, x)`` or ``(y, x)`` DataArray as a Cloud-Optimized GeoTIFF, atomically.

    Dask arrays are streamed block by block into a tiled GeoTIFF, which GDAL then copies into the COG layout
    (overviews included): memory is bounded by the chunk size, not the scene size. The file appears under
    ``path`` only once complete. Band names go into the band descriptions. ``progress`` shows a progress bar
    while a lazy array is computed (threaded scheduler or a ``dask.distributed`` client).
    """
    import rasterio
    import rasterio.shutil

    if not isinstance(da, xr.DataArray):
        raise ValueError(f"da: expected an xarray.DataArray, found {type(da).__name__}")
    if da.rio.crs is None:
        raise ValueError(f"{da.name or 'da'}: expected a CRS (rioxarray spatial_ref) to write a COG, found none")
    final, tmp = atomic_path(path)
    staging = tmp.with_suffix(".staging.tif")
    out = da
    if out.dtype == bool:
        out = out.astype("uint8")
    if nodata is not None:
        out = out.rio.write_nodata(nodata, encoded=False)
    if out.ndim == 3:
        names = [str(v) for v in out[out.dims[0]].values] if out.dims[0] in out.coords else None
        out = out.assign_attrs(long_name=tuple(names)) if names else out
    profile = {"tiled": True, "blockxsize": blocksize, "blockysize": blocksize, "compress": compress}
    try:
        if out.chunks is not None:
            client = active_client()
            compute(
                out.rio.to_raster(staging, lock=write_lock(client), compute=False, **profile),
                client=client,
                progress=progress,
            )
        else:
            out.rio.to_raster(staging, **profile)
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rasterio.shutil.copy(staging, tmp, driver="COG", compress=compress.upper(), blocksize=blocksize)
        os.replace(tmp, final)
    finally:
        for leftover in (staging, tmp):
            leftover.unlink(missing_ok=True)
    return final


def write_zarr(ds: xr.Dataset | xr.DataArray, path: PathLike, **kwargs: Any) -> Path:
    """Write a scene (or one variable) to a Zarr store, atomically; CRS kept in ``spatial_ref``.

    Dask arrays are written chunk by chunk. An existing store at ``path`` is replaced only once the new one is
    complete. ``kwargs`` go to :meth:`xarray.Dataset.to_zarr`.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "data")
    final, tmp = atomic_path(path)
    ds = ds.copy()
    ds.attrs = _json_safe(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = _json_safe(ds[name].attrs)
        # Encodings inherited from a GeoTIFF source (compression, blocks) do not fit Zarr.
        ds[name].encoding = {}
    # Zarr stores regular chunks: even out what a computation left irregular (e.g. after slicing).
    for name, var in ds.data_vars.items():
        if var.chunks is not None and any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in var.chunks):
            ds[name] = var.chunk({dim: max(c) for dim, c in zip(var.dims, var.chunks, strict=True)})
    # Variable-length strings have a Zarr v3 specification, fixed-width numpy unicode has none.
    ds = ds.assign_coords({k: c.astype(object) for k, c in ds.coords.items() if c.dtype.kind == "U"})
    try:
        ds.to_zarr(tmp, mode="w", **kwargs)
        if final.exists():
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _json_safe(attrs: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out
