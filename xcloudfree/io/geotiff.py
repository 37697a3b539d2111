"""Read GeoTIFF / COG files into the scene model; write COG and Zarr atomically, streaming from Dask."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import rioxarray  # registers .rio, which every reader and writer here uses
import xarray as xr

from ..checks import check_positive_int
from ..parallel import active_client, compute, write_lock
from ..scene import check_values_of, make_scene, name_s1_polarizations, name_s2_bands, value_sample

__all__ = [
    "open_scene",
    "read_s2",
    "read_s1",
    "read_dem",
    "write_cog",
    "write_zarr",
    "atomic_path",
    "check_output_path",
    "clean_stale",
]

PathLike = str | os.PathLike
#: GDAL block cache (MiB) while writing a COG: staging blocks and the overviews' reads pass through it.
_GDAL_CACHE_MB = 256
#: This machine in staging names: staging files of other hosts on a shared file system are judged by age alone.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _open(path: PathLike, name: str, chunks: Any) -> xr.DataArray:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: expected an existing GeoTIFF file, found no file at {str(path)!r}")
    _check_chunks(chunks)
    try:
        _check_readable(path)
        da = rioxarray.open_rasterio(path, chunks=chunks)
    except Exception as err:  # rasterio raises its own error types for unreadable files
        raise ValueError(f"{name}: expected a readable GeoTIFF, found {str(path)!r} ({err})") from err
    if not isinstance(da, xr.DataArray):
        raise ValueError(f"{name}: expected one raster in {str(path)!r}, found several subdatasets")
    da.attrs.pop("scale_factor", None)
    da.attrs.pop("add_offset", None)
    da.encoding["source"] = str(path)
    return da.rename(name)


def _check_readable(path: Path) -> None:
    """Read the first and the last block of the first and last band: a truncated file fails here, not mid-run.

    Costs two blocks whatever the file size (the full-resolution blocks lie at the end of a COG).
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        bh, bw = src.block_shapes[0]
        last = Window((src.width - 1) // bw * bw, (src.height - 1) // bh * bh, 1, 1)
        for window in (Window(0, 0, 1, 1), last):
            src.read(indexes=sorted({1, src.count}), window=window)


def _check_chunks(chunks: Any) -> None:
    if chunks is None or chunks == "auto":
        return
    values = chunks.values() if isinstance(chunks, dict) else (chunks if isinstance(chunks, tuple) else [chunks])
    for value in values:
        if value in ("auto", -1, None):
            continue
        check_positive_int("chunks", value)


def read_s2(
    path: PathLike,
    *,
    bands: Sequence[str] | Mapping[str, str] | None = None,
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

    Examples
    --------
    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.io.write_cog(scene.s2, f"{tmp}/s2.tif")
    ...     s2 = xcf.io.read_s2(path, processing_baseline="05.00", chunks={"x": 32, "y": 32})
    ...     print(s2.dims, s2.sizes["band"], s2.attrs["product"], s2.attrs["processing_baseline"], s2.chunks[1:])
    ('band', 'y', 'x') 13 L1C 05.00 ((32, 32), (32, 32))
    """
    da = name_s2_bands(_open(path, name, chunks), bands=bands, product=product, name=name)
    # A few windows, whatever the file size: DN, not reflectance or an 8-bit rendering (NaN is the scene's call).
    check_values_of(name, value_sample(da, name=name), kind="s2", max_nan_fraction=1.0, sampled=True)
    if processing_baseline is not None:
        da.attrs["processing_baseline"] = str(processing_baseline)
    return da


def read_s1(
    path: PathLike, *, polarizations: Sequence[str] | None = None, chunks: Any = None, name: str = "s1"
) -> xr.DataArray:
    """Read a Sentinel-1 stack as ``(polarization, y, x)`` backscatter in dB (float32, nodata → NaN).

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s1 = xcf.io.read_s1(xcf.io.write_cog(scene.s1, f"{tmp}/s1.tif"))
    >>> s1.dims, s1["polarization"].values.tolist(), s1.dtype, s1.attrs["units"]
    (('polarization', 'y', 'x'), ['VV', 'VH'], dtype('float32'), 'dB')
    """
    da = _open(path, name, chunks)
    da = name_s1_polarizations(_nodata_to_nan(da), polarizations=polarizations, name=name)
    check_values_of(name, value_sample(da, name=name), kind="s1", max_nan_fraction=1.0, sampled=True)
    return da


def read_dem(path: PathLike, *, like: xr.DataArray | None = None, chunks: Any = None) -> xr.DataArray:
    """Read a DEM as ``(y, x)`` float32 metres, nodata → NaN; bilinear onto the grid of ``like`` if given.

    The reprojection loads the DEM into memory (DEMs are small next to the scenes they serve) and the result
    is chunked like ``like``.

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)  # 10 m pixels
    >>> dem_20m = xcf.datasets.synthetic_scene(size=32, resolution=20.0).dem  # the same extent at 20 m
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     dem = xcf.io.read_dem(xcf.io.write_cog(dem_20m, f"{tmp}/dem.tif"), like=scene.s2)
    >>> dem.dims, dem.shape, dem.dtype, dem.rio.resolution()
    (('y', 'x'), (64, 64), dtype('float32'), (10.0, -10.0))
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
    bands: Sequence[str] | Mapping[str, str] | None = None,
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
    chunks : e.g. ``{"x": 2048, "y": 2048}`` or ``"auto"``: lazy Dask arrays; only a small value sample is read
        (:func:`xcloudfree.scene.value_sample`) until computed.
    validate, max_nan_fraction : see :func:`xcloudfree.validate_scene` (values of lazy arrays are checked on the
        sample).

    Examples
    --------
    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = {v: xcf.io.write_cog(scene[v], f"{tmp}/{v}.tif") for v in ("s2", "s1", "dem")}
    ...     ds = xcf.io.open_scene(**paths, chunks={"x": 32, "y": 32})  # on real data e.g. 2048 px chunks
    ...     print(list(ds.data_vars), ds.s2.chunks[1:], ds.rio.crs)
    ['s2', 's1', 'dem'] ((32, 32), (32, 32)) EPSG:32633
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


#: Staging names of this package's writes: ``.<target name>.xcf-<host>-<pid>-<random>.<suffix>`` beside the target.
_STAGING = re.compile(
    r"^\.(?P<target>.+)\.xcf-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old|staging)"
)
#: Staging files of other machines (shared file systems) count as abandoned after this long (s).
_STALE_AFTER = 24 * 3600


def check_output_path(path: PathLike, *, name: str = "path", directory: bool = False) -> Path:
    """Check that ``path`` can be written (as a file, or a directory store with ``directory=True``); make its folder.

    Raises ``ValueError`` naming ``name`` when a file stands where a folder is needed (or the reverse), when the
    target is a directory but a file is expected, when an existing directory is not a Zarr store (it would be
    replaced), or when the folder cannot be created or written (read-only, ``/proc``, no permission).

    >>> import tempfile
    >>> from xcloudfree.io.geotiff import check_output_path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> check_output_path(f"{tmp.name}/new/folder/out.tif").parent.is_dir()  # the folder is made
    True
    >>> check_output_path(tmp.name, name="out")
    Traceback (most recent call last):
    ValueError: out: expected a file path to write, found an existing directory at '...'
    >>> tmp.cleanup()
    """
    final = Path(path)
    if final.is_dir() and not directory:
        raise ValueError(f"{name}: expected a file path to write, found an existing directory at {str(final)!r}")
    if final.exists() and directory and not final.is_dir():
        raise ValueError(f"{name}: expected a directory (Zarr store) path, found an existing file at {str(final)!r}")
    if directory and final.is_dir() and any(final.iterdir()) and not _is_zarr(final):
        raise ValueError(
            f"{name}: expected a new path or an existing Zarr store to replace, found the directory {str(final)!r} "
            "holding other files"
        )
    parent = final.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{name}: expected a folder to write into, found the file {str(folder)!r} in the way")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{final.name}.{_token()}.tmp"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"{name}: expected a writable folder, found {str(parent)!r} not writable ({err.strerror or err})"
        ) from None
    return final


def atomic_path(path: PathLike, *, name: str = "path", directory: bool = False) -> tuple[Path, Path]:
    """``(final, temporary)``: a checked target and a staging sibling to write to before ``os.replace``.

    Staging siblings left by killed writes to the same target are removed first (see :func:`clean_stale`).

    >>> import os, tempfile
    >>> from xcloudfree.io.geotiff import atomic_path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     final, staging = atomic_path(f"{tmp}/out.json")
    ...     _ = staging.write_text("{}")  # write the whole file under the staging name ...
    ...     os.replace(staging, final)  # ... then let it appear at once
    ...     print(final.name, staging.name.startswith(".out.json.xcf-"), sorted(os.listdir(tmp)))
    out.json True ['out.json']
    """
    final = check_output_path(path, name=name, directory=directory)
    clean_stale(final)
    return final, final.with_name(f".{final.name}.{_token()}.tmp")


def clean_stale(final: Path) -> list[Path]:
    """Remove the staging files and folders that killed writes to ``final`` left behind; return them.

    A staging name carries the host and process id of its writer: it is abandoned when that process no longer runs
    on this host, or (other hosts) when it is older than a day. A Zarr store whose replacement was interrupted
    between its two renames (platforms without an atomic exchange) is put back first.

    >>> import socket, tempfile, zlib
    >>> from pathlib import Path
    >>> from xcloudfree.io.geotiff import clean_stale
    >>> host = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # how staging names spell this machine
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / f".out.tif.xcf-{host}-999999999-0123abcd.tmp").touch()  # its process is gone
    ...     print([p.name for p in clean_stale(Path(tmp) / "out.tif")])
    ['.out.tif.xcf-...-999999999-0123abcd.tmp']
    """
    removed = []
    if not final.parent.is_dir():
        return removed
    found = [(m, e) for e in final.parent.glob(f".{glob.escape(final.name)}.xcf-*") if (m := _STAGING.match(e.name))]
    # A store put aside comes back before anything is deleted.
    for match, entry in sorted(found, key=lambda me: (me[0]["kind"] != "old", me[1].name)):
        if match["target"] != final.name or not _abandoned(match, entry):
            continue
        if match["kind"] == "old" and not final.exists() and not os.path.lexists(final):
            os.replace(entry, final)  # the previous store: the new one never arrived
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _token() -> str:
    return f"xcf-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _abandoned(match: re.Match, entry: Path) -> bool:
    if match["host"] == _HOST:
        pid = int(match["pid"])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - entry.lstat().st_mtime > _STALE_AFTER
    except OSError:
        return False


def _is_zarr(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


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

    Dask arrays are streamed block by block into an uncompressed, band-interleaved staging GeoTIFF (disk space of
    the uncompressed size, beside ``path``). Its overviews (halvings down to ``blocksize``: 2×2 means ignoring NaN
    and ``nodata`` for floating-point data, every second pixel for integers and masks) are computed here chunk by
    chunk, then GDAL copies all of it into the COG layout: memory is bounded by the chunk size, not the scene
    size. The file appears under ``path`` only once complete; staging files are removed on failure, and those of
    killed writes at the next write to the same path. Band names go into the band descriptions. ``progress``
    shows a progress bar while a lazy array is computed (threaded scheduler or a ``dask.distributed`` client).

    >>> import tempfile, rasterio
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, chunks={"x": 32, "y": 32})  # lazy: written chunk by chunk
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.io.write_cog(scene.s2, f"{tmp}/s2.tif", blocksize=32)
    ...     with rasterio.open(path) as src:
    ...         print(src.count, src.dtypes[0], src.descriptions[:3], src.block_shapes[0], src.crs)
    13 uint16 ('B01', 'B02', 'B03') (32, 32) EPSG:32633
    """
    import rasterio
    import rasterio.shutil

    if not isinstance(da, xr.DataArray):
        raise ValueError(f"da: expected an xarray.DataArray, found {type(da).__name__}")
    if da.rio.crs is None:
        raise ValueError(f"{da.name or 'da'}: expected a CRS (rioxarray spatial_ref) to write a COG, found none")
    blocksize = check_positive_int("blocksize", blocksize)
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
    # BigTIFF when the uncompressed size passes 4 GB: a full S2 tile's 13 float32 bands do (6.3 GB), and GDAL cannot
    # know the compressed size of a COG before writing it. The staging file is read back twice (overviews, COG
    # copy): uncompressed, that costs page-cache reads only; band-interleaved, its overviews read one band at a time.
    profile = {"tiled": True, "blockxsize": blocksize, "blockysize": blocksize, "interleave": "band", "bigtiff": "YES"}
    try:
        # GDAL's block cache defaults to 5 % of the machine's RAM and holds written blocks until it is full: a
        # fixed size keeps this process's memory that of the chunks in flight (set process-wide while writing).
        with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB):
            if out.chunks is not None:
                client = active_client()
                compute(
                    out.rio.to_raster(staging, lock=write_lock(client), compute=False, **profile),
                    client=client,
                    progress=progress,
                )
            else:
                out.rio.to_raster(staging, **profile)
            _write_overviews(staging, blocksize, profile)
            with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                rasterio.shutil.copy(
                    staging,
                    tmp,
                    driver="COG",
                    compress=compress.upper(),
                    blocksize=blocksize,
                    overviews="FORCE_USE_EXISTING",
                    bigtiff="IF_SAFER",
                )
        os.replace(tmp, final)
    finally:
        # GDAL may leave side files (.aux.xml) beside the staging names: they share the unique token.
        for leftover in final.parent.glob(f"{glob.escape(tmp.stem)}*"):
            leftover.unlink(missing_ok=True)
    return final


def _write_overviews(staging: Path, blocksize: int, profile: dict) -> None:
    """Write the overviews of ``staging`` beside it, each level from the previous one, and list them in its ``.ovr``.

    GDAL 3.10 builds a COG's overviews of many pixel-interleaved bands through a temporary file whose tiles it
    rewrites band after band (OSGeo/gdal#12303, fixed in 3.11): 13 float32 bands at 4096² took 60–185 s and
    5.9 GB of temporary disk, against 3.3 s here (and 10 s for the copy). GDAL reads ``<file>.ovr`` with any
    driver: a VRT whose main image is the first level and whose ``<Overview>`` elements are the next ones.
    """
    import rasterio
    from rasterio.dtypes import dtype_rev, typename_fwd

    with rasterio.open(staging) as src:
        shape, count, dtype, nodata = src.shape, src.count, np.dtype(src.dtypes[0]), src.nodata
    levels, source = [], staging
    while max(shape) > blocksize:
        chunks = {"band": -1, "y": 2 * blocksize, "x": 2 * blocksize}
        with rioxarray.open_rasterio(source, chunks=chunks) as level, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of an all-NaN window: NaN, as wanted
            if np.issubdtype(dtype, np.floating):
                filled = nodata is not None and not np.isnan(nodata)
                half = (level.where(level != nodata) if filled else level).coarsen(y=2, x=2, boundary="pad").mean()
                half = (half.fillna(nodata) if filled else half).astype(dtype)
            else:
                half = level[:, ::2, ::2]
            target = staging.with_suffix(f".ov{2 ** (len(levels) + 1)}.tif")
            half.rio.to_raster(target, lock=write_lock(), compute=False, **profile).compute(scheduler="threads")
        levels.append((target, half.shape[1:]))
        source, shape = target, half.shape[1:]
    if not levels:
        return

    def source_of(path: Path, band: int, element: str) -> str:
        return (
            f'<{element}><SourceFilename relativeToVRT="1">{xml_escape(path.name)}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand></{element}>"
        )

    (first, (height, width)), rest = levels[0], [path for path, _ in levels[1:]]
    bands = "".join(
        f'<VRTRasterBand dataType="{typename_fwd[dtype_rev[dtype.name]]}" band="{b}">'
        + source_of(first, b, "SimpleSource")
        + "".join(source_of(path, b, "Overview") for path in rest)
        + "</VRTRasterBand>"
        for b in range(1, count + 1)
    )
    Path(f"{staging}.ovr").write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{bands}</VRTDataset>')


def write_zarr(ds: xr.Dataset | xr.DataArray, path: PathLike, *, progress: bool = False, **kwargs: Any) -> Path:
    """Write a scene (or one variable) to a Zarr store, atomically; CRS kept in ``spatial_ref``.

    Dask arrays are written chunk by chunk into a staging store beside ``path``. An existing store is replaced in
    one atomic step (Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two directories), so a reader, or a kill at
    any moment, sees either the old store or the new one, never none. Where the exchange is unsupported the old
    store is renamed aside before the new one moves in; a kill between those two renames leaves the old store
    under ``.<name>.xcf-….old``, which the next write to ``path`` puts back. An existing directory that is not a
    Zarr store is refused, never replaced. ``progress`` shows a progress bar while lazy variables are computed
    (threaded scheduler or a ``dask.distributed`` client). ``kwargs`` go to :meth:`xarray.Dataset.to_zarr`.

    >>> import tempfile
    >>> import xarray as xr
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.io.write_zarr(scene, f"{tmp}/scene.zarr")
    ...     back = xr.open_zarr(path).load()
    >>> xr.testing.assert_equal(back.s2, scene.s2)
    >>> back.rio.crs.to_epsg(), back.attrs["title"]
    (32633, 'xcloudfree synthetic scene')
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "data")
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds: expected an xarray.Dataset or DataArray, found {type(ds).__name__}")
    final, tmp = atomic_path(path, directory=True)
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
        if progress and ds.chunks:
            compute(ds.to_zarr(tmp, mode="w", compute=False, **kwargs), client=active_client(), progress=True)
        else:
            ds.to_zarr(tmp, mode="w", **kwargs)
        if not final.exists():
            os.replace(tmp, final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # the old store, now under the staging name
        else:
            old = tmp.with_suffix(".old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2``); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


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
