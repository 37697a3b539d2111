"""The scene data model: one ``xarray.Dataset`` on one grid.

Variables (DESIGN.md): ``s2`` (band, y, x) Sentinel-2 DN, ``s1`` (polarization, y, x) backscatter in dB,
``dem`` (y, x) metres, ``s2_clear`` (band, y, x) the cloud-free target; a leading ``time`` dimension is allowed.
The CRS lives in the ``spatial_ref`` coordinate (rioxarray conventions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .sensors import S1_POLARIZATIONS, S2_BAND_NAMES, S2_L2A_BAND_NAMES

__all__ = [
    "make_scene",
    "validate_scene",
    "name_s2_bands",
    "name_s1_polarizations",
    "check_same_grid",
    "value_sample",
    "check_values_of",
]

_SPATIAL = ("y", "x")
#: Leading dimension and band coordinate of each layered variable.
_LAYERED = {"s2": "band", "s2_clear": "band", "s1": "polarization"}
_KNOWN = {"s2": S2_BAND_NAMES, "s2_clear": S2_BAND_NAMES, "s1": S1_POLARIZATIONS}


def _is_lazy(da: xr.DataArray) -> bool:
    return da.chunks is not None


def name_s2_bands(
    da: xr.DataArray,
    *,
    bands: Sequence[str] | Mapping[str, str] | None = None,
    product: str | None = None,
    name: str = "s2",
) -> xr.DataArray:
    """Give an S2 array the canonical band names, never overwriting names the data already carry.

    The names the data carry (a string ``band`` coordinate, else the GeoTIFF band descriptions) are kept when they
    are Sentinel-2 names, in whatever order; other names (``B1`` … ``B13``, ``coastal``) are refused unless
    ``bands`` maps them. Unnamed data take ``bands``, or the canonical order by band count.

    Parameters
    ----------
    da : DataArray (band, y, x)
        As read from a GeoTIFF (band coordinate 1..N) or already named.
    bands : sequence of str or mapping, optional
        Band names in file order, for unnamed data (named data must agree with them), or a mapping from the names
        the data carry to Sentinel-2 names, e.g. ``{"B1": "B01", "B2": "B02", ...}``.
    product : {"L1C", "L2A"}, optional
        13 bands are L1C; 12 bands are L2A (no B10) only when ``product="L2A"`` says so.
    name : the variable's name in error messages.

    Returns
    -------
    xarray.DataArray
        ``(band, y, x)`` with a ``band`` coordinate of Sentinel-2 names; attrs ``product`` and ``units`` set.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from xcloudfree.scene import name_s2_bands
    >>> stack = xr.DataArray(np.zeros((12, 8, 8), np.uint16), dims=("band", "y", "x"))  # 12 unnamed bands
    >>> s2 = name_s2_bands(stack, product="L2A")
    >>> s2["band"].values[-3:].tolist(), s2.attrs
    (['B09', 'B11', 'B12'], {'product': 'L2A', 'units': 'DN'})
    >>> pair = xr.DataArray(np.zeros((2, 8, 8), np.uint16), dims=("band", "y", "x"), coords={"band": ["B4", "B8"]})
    >>> name_s2_bands(pair, bands={"B4": "B04", "B8": "B08"})["band"].values.tolist()
    ['B04', 'B08']
    """
    n = da.sizes[da.dims[0]]
    if product is not None and (not isinstance(product, str) or product.upper() not in ("L1C", "L2A")):
        raise ValueError(f"product: expected 'L1C' or 'L2A', found {product!r}")
    found, source = _carried_names(da)
    if isinstance(bands, Mapping):
        if found is None:
            raise ValueError(
                f"bands: a mapping renames the band names {name} carries, found none (no string band coordinate "
                "or band descriptions); pass a list of names in file order"
            )
        unmapped = [f for f in found if f not in bands and f not in S2_BAND_NAMES]
        if unmapped:
            raise ValueError(
                f"bands: expected a Sentinel-2 name for each of the {source} {found}, found none for {unmapped}"
            )
        bands = [str(bands.get(f, f)) for f in found]
    elif bands is not None:
        if isinstance(bands, str):
            raise ValueError(f"bands: expected a list of band names or a mapping, found the string {bands!r}")
        bands = [str(b) for b in bands]
        if found is not None and bands != found:
            raise ValueError(
                f"bands: expected the names {name} carries in its {source} {found}, found {bands}; "
                "pass a mapping {carried: Sentinel-2 name} to rename them"
            )
    elif found is not None:
        unknown = [b for b in found if b not in S2_BAND_NAMES]
        if unknown:
            hint = {b: a for b in found if (a := _s2_alias(b)) is not None and a != b}
            example = f", e.g. bands={hint}" if hint else ""
            raise ValueError(
                f"{name}: expected Sentinel-2 band names {list(S2_BAND_NAMES)}, found {source} {found}; pass bands= "
                f"as a mapping from these names to Sentinel-2 names{example}"
            )
        bands = found
    elif n == 13 and (product or "L1C").upper() == "L1C":
        bands = list(S2_BAND_NAMES)
    elif n == 12 and (product or "").upper() == "L2A":
        bands = list(S2_L2A_BAND_NAMES)
    else:
        hint = " (12 bands: pass product='L2A' for an L2A stack without B10)" if n == 12 else ""
        raise ValueError(
            f"{name}: expected 13 Sentinel-2 bands (L1C: {', '.join(S2_BAND_NAMES)}) or 12 with product='L2A', "
            f"found {n} band(s){hint}; pass bands=[...] to name them"
        )
    if len(bands) != n:
        raise ValueError(f"bands: expected {n} names (one per band of {name}), found {len(bands)}: {bands}")
    unknown = [b for b in bands if b not in S2_BAND_NAMES]
    if unknown:
        raise ValueError(f"bands: expected Sentinel-2 names from {list(S2_BAND_NAMES)}, found {unknown}")
    if len(set(bands)) != n:
        raise ValueError(f"bands: expected unique names, found duplicates in {bands}")
    da = da.rename({da.dims[0]: "band"}) if da.dims[0] != "band" else da
    da = da.assign_coords(band=bands)
    da.attrs.setdefault("product", (product or ("L2A" if "B10" not in bands else "L1C")).upper())
    da.attrs.setdefault("units", "DN")
    return da


def name_s1_polarizations(
    da: xr.DataArray, *, polarizations: Sequence[str] | None = None, name: str = "s1"
) -> xr.DataArray:
    """Give an S1 array its polarisation names: those it carries, else ``polarizations``, else VV, VH for 2 layers.

    Names carried by the data (a string coordinate or band descriptions such as ``"VV"`` or ``"Sigma0_VH_db"``)
    are never renamed: HH/HV data are refused (the models read VV and VH), and ``polarizations`` must agree.

    Returns
    -------
    xarray.DataArray
        ``(polarization, y, x)`` with a ``polarization`` coordinate; attr ``units`` set to dB when absent.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from xcloudfree.scene import name_s1_polarizations
    >>> s1 = name_s1_polarizations(xr.DataArray(np.full((2, 8, 8), -12.0, np.float32), dims=("band", "y", "x")))
    >>> s1.dims, s1["polarization"].values.tolist(), s1.attrs["units"]
    (('polarization', 'y', 'x'), ['VV', 'VH'], 'dB')
    """
    n = da.sizes[da.dims[0]]
    carried, source = _carried_names(da)
    found = None if carried is None else [_polarization(c) or c for c in carried]
    if polarizations is not None:
        if isinstance(polarizations, str):
            raise ValueError(f"polarizations: expected a list of names, found the string {polarizations!r}")
        polarizations = [str(p).upper() for p in polarizations]
        if found is not None and polarizations != found:
            raise ValueError(
                f"polarizations: expected the polarisations {name} carries in its {source} {carried}, "
                f"found {polarizations}"
            )
    elif found is not None:
        polarizations = found
    elif n == 2:
        polarizations = list(S1_POLARIZATIONS)
    else:
        raise ValueError(
            f"{name}: expected 2 layers (VV, VH backscatter in dB), found {n}; pass polarizations=[...] to name them"
        )
    unknown = [p for p in polarizations if p not in S1_POLARIZATIONS]
    if len(polarizations) != n or unknown or len(set(polarizations)) != n:
        what = f"{source} {carried}" if found is not None else list(polarizations)
        raise ValueError(
            f"{name}: expected {n} distinct polarisations from {list(S1_POLARIZATIONS)} (dual-pol VV+VH, what the "
            f"models read), found {what}; other polarisations are never renamed"
        )
    da = da.rename({da.dims[0]: "polarization"}) if da.dims[0] != "polarization" else da
    da = da.assign_coords(polarization=polarizations)
    da.attrs.setdefault("units", "dB")
    return da


def _carried_names(da: xr.DataArray) -> tuple[list[str] | None, str]:
    """The layer names the data carry and where they come from: a string coordinate wins over descriptions."""
    coord = _coord_names(da)
    if coord is not None:
        return coord, "band coordinate"
    described = _band_descriptions(da)
    if described is not None:
        return described, "band descriptions"
    return None, ""


def _s2_alias(text: str) -> str | None:
    """``B1`` → ``B01``, ``b8a`` → ``B8A``: the unambiguous spellings of a Sentinel-2 band; else None."""
    match = re.fullmatch(r"B0?(\d{1,2})(A?)", text.strip().upper())
    if match is None:
        return None
    alias = f"B{int(match[1]):02d}" if not match[2] else f"B{int(match[1])}A"
    return alias if alias in S2_BAND_NAMES else None


def _polarization(text: str) -> str | None:
    """The one polarisation named in a description (``"VV"``, ``"Sigma0_VH_db"``), else None."""
    found = set(re.findall(r"(?<![A-Z])(VV|VH|HH|HV)(?![A-Z])", text.upper()))
    return found.pop() if len(found) == 1 else None


def _band_descriptions(da: xr.DataArray) -> list[str] | None:
    names = da.attrs.get("long_name")
    if isinstance(names, list | tuple) and len(names) == da.sizes[da.dims[0]]:
        if all(n is None or str(n) == "" for n in names):
            return None
        return [str(n) for n in names]
    if isinstance(names, str) and names and da.sizes[da.dims[0]] == 1:
        return [names]
    return None


def _coord_names(da: xr.DataArray) -> list[str] | None:
    dim = da.dims[0]
    if dim in da.coords and da[dim].dtype.kind in "UO":
        return [str(v) for v in da[dim].values]
    return None


def _grid(da: xr.DataArray) -> dict[str, Any]:
    import rioxarray  # noqa: F401  (registers .rio; here, not at the top: it would slow every `import xcloudfree`)

    # A bare array built from numpy has no x/y coordinates, hence no transform.
    georeferenced = all(d in da.coords for d in _SPATIAL) and da.sizes["x"] > 1 and da.sizes["y"] > 1
    transform = da.rio.transform(recalc=True) if georeferenced else None
    return {"crs": da.rio.crs, "transform": transform, "shape": (da.sizes.get("y"), da.sizes.get("x"))}


def _describe(grid: dict[str, Any]) -> str:
    t = grid["transform"]
    where = f"origin ({t.c:.2f}, {t.f:.2f}), pixel {t.a:g}×{-t.e:g}" if t is not None else "no transform"
    return f"CRS {grid['crs']}, shape {grid['shape'][0]}×{grid['shape'][1]}, {where}"


def check_same_grid(reference: xr.DataArray, other: xr.DataArray, *, name: str, reference_name: str = "s2") -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``other`` lies on the grid of ``reference``.

    Same CRS, same shape and the same transform (to 1e-6 of a pixel).

    >>> import xcloudfree as xcf
    >>> from xcloudfree.scene import check_same_grid
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> check_same_grid(scene.s2, scene.dem, name="dem")  # same grid: nothing happens
    >>> check_same_grid(scene.s2, scene.dem.isel(x=slice(1, None)), name="dem")
    Traceback (most recent call last):
    ValueError: dem: expected the grid of s2 (CRS EPSG:32633, shape 64×64, ...), found ... shape 64×63, ...
    """
    a, b = _grid(reference), _grid(other)
    same = a["shape"] == b["shape"] and a["crs"] == b["crs"]
    if same and a["transform"] is not None and b["transform"] is not None:
        pixel = max(abs(a["transform"].a), abs(a["transform"].e))
        same = all(abs(p - q) <= 1e-6 * pixel for p, q in zip(a["transform"][:6], b["transform"][:6], strict=True))
    elif same:
        same = a["transform"] is None and b["transform"] is None
    if not same:
        raise ValueError(
            f"{name}: expected the grid of {reference_name} ({_describe(a)}), found {_describe(b)}; "
            f"reproject it first, e.g. {name}.rio.reproject_match({reference_name})"
        )


def make_scene(
    s2: xr.DataArray | np.ndarray | None = None,
    s1: xr.DataArray | np.ndarray | None = None,
    dem: xr.DataArray | np.ndarray | None = None,
    s2_clear: xr.DataArray | np.ndarray | None = None,
    *,
    attrs: dict | None = None,
    validate: bool = True,
    max_nan_fraction: float = 0.0,
) -> xr.Dataset:
    """Assemble a scene from its parts and check it.

    Parameters
    ----------
    s2, s2_clear : DataArray or array (band, y, x)
        Sentinel-2 DN; 13 unnamed bands get the canonical names.
    s1 : DataArray or array (polarization, y, x)
        Backscatter in dB; 2 unnamed layers are VV, VH.
    dem : DataArray or array (y, x)
        Elevation in metres.
    attrs : dict, optional
        Scene attributes (e.g. ``roi``, ``patch``).
    validate : bool
        Run :func:`validate_scene` on the result.
    max_nan_fraction : float
        NaN share tolerated per variable by the validation (NaN = nodata).

    Returns
    -------
    xarray.Dataset on the grid of the first georeferenced variable, CRS kept.

    Examples
    --------
    >>> import numpy as np
    >>> from xcloudfree.scene import make_scene
    >>> rng = np.random.default_rng(0)
    >>> scene = make_scene(
    ...     s2=rng.integers(500, 3000, (13, 32, 32)).astype(np.uint16),  # 13 unnamed bands: L1C
    ...     s1=rng.uniform(-20, -5, (2, 32, 32)).astype(np.float32),  # dB, VV then VH
    ...     dem=np.full((32, 32), 250.0, np.float32),
    ... )
    >>> list(scene.data_vars), scene.s2.dims, scene.s1["polarization"].values.tolist()
    (['s2', 's1', 'dem'], ('band', 'y', 'x'), ['VV', 'VH'])
    """
    parts = {"s2": s2, "s1": s1, "dem": dem, "s2_clear": s2_clear}
    parts = {k: v for k, v in parts.items() if v is not None}
    if not parts:
        raise ValueError("make_scene: expected at least one of s2, s1, dem, s2_clear, found none")
    arrays = {name: _as_dataarray(value, name) for name, value in parts.items()}
    first_name, first = next(iter(arrays.items()))
    for name, da in arrays.items():
        if name != first_name:
            check_same_grid(first, da, name=name, reference_name=first_name)
    if "s2" in arrays and "s2_clear" in arrays:
        # One Dataset shares one band coordinate: differing bands would be outer-joined into NaN.
        a, b = [str(v) for v in arrays["s2"]["band"].values], [str(v) for v in arrays["s2_clear"]["band"].values]
        if a != b:
            raise ValueError(f"s2_clear: expected the bands of s2 {a}, found {b}")
    import rioxarray  # noqa: F401  (registers .rio, see _grid)

    crs = first.rio.crs
    # Identical grids may still differ by float noise in x/y: take the reference coordinates.
    ref_coords = {d: first.coords[d] for d in _SPATIAL if d in first.coords}
    aligned = {n: da.assign_coords({d: c for d, c in ref_coords.items() if d in da.dims}) for n, da in arrays.items()}
    aligned = {n: da.drop_vars("spatial_ref", errors="ignore") for n, da in aligned.items()}
    ds = xr.Dataset(aligned, attrs=dict(attrs or {}))
    if crs is not None:
        # In place: the Dataset is new, and rioxarray would otherwise deep-copy every array.
        ds.rio.write_crs(crs, inplace=True)
        ds.rio.write_transform(first.rio.transform(recalc=True), inplace=True)
    if validate:
        validate_scene(ds, max_nan_fraction=max_nan_fraction)
    return ds


def _as_dataarray(value: Any, name: str) -> xr.DataArray:
    if isinstance(value, xr.DataArray):
        da = value
    else:
        arr = value
        ndim = getattr(arr, "ndim", None)
        expected = 2 if name == "dem" else 3
        if ndim != expected:
            raise ValueError(
                f"{name}: expected a {expected}-D array or DataArray, found {type(value).__name__} {ndim}-D"
            )
        dims = _SPATIAL if name == "dem" else (_LAYERED[name], *_SPATIAL)
        da = xr.DataArray(arr, dims=dims)
    if name == "dem":
        if da.ndim == 3 and da.sizes[da.dims[0]] == 1:
            da = da.squeeze(da.dims[0], drop=True)
        if da.dims != _SPATIAL:
            raise ValueError(f"dem: expected dims ('y', 'x'), found {da.dims}")
        da.attrs.setdefault("units", "m")
        return da
    if name == "s1":
        return name_s1_polarizations(da, name=name)
    return name_s2_bands(da, name=name, product=da.attrs.get("product"))


def validate_scene(ds: xr.Dataset, *, check_values: bool | None = None, max_nan_fraction: float = 0.0) -> xr.Dataset:
    """Check a scene and return it unchanged; raise a ``ValueError`` naming what is wrong.

    Structure (always): dims, band and polarisation names, s2 and s2_clear with the same bands.
    Values: S2 in DN (not 0–1 reflectance, not 8-bit), S1 in dB (not linear), NaN share at most
    ``max_nan_fraction``. In-memory data are checked whole. Lazy (Dask) data are checked on a sample of
    :data:`SAMPLE_WINDOWS` small windows spread over the scene (see :func:`value_sample`), which reads a few blocks
    instead of the scene; ``check_values=True`` checks every value (computes the whole array), ``False`` none.

    >>> import xcloudfree as xcf
    >>> from xcloudfree.scene import validate_scene
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> validate_scene(scene) is scene
    True
    >>> validate_scene(scene.assign(s2=scene.s2 / 10000))  # 0–1 reflectance instead of DN
    Traceback (most recent call last):
    ValueError: s2: expected digital numbers (reflectance × 10000, ...), found values in [...] that look like 0–1 ...
    """
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds: expected an xarray.Dataset scene, found {type(ds).__name__}")
    present = [v for v in ("s2", "s1", "dem", "s2_clear") if v in ds.data_vars]
    if not present:
        raise ValueError(f"ds: expected at least one of s2, s1, dem, s2_clear, found variables {list(ds.data_vars)}")
    for name in present:
        da = ds[name]
        spatial = _SPATIAL if name == "dem" else (_LAYERED[name], *_SPATIAL)
        if da.dims not in (spatial, ("time", *spatial)):
            raise ValueError(f"{name}: expected dims {spatial} (optionally with a leading 'time'), found {da.dims}")
        if name in _LAYERED:
            dim = _LAYERED[name]
            names = [str(v) for v in da[dim].values] if dim in da.coords else []
            unknown = [v for v in names if v not in _KNOWN[name]]
            if not names or unknown:
                raise ValueError(f"{name}: expected {dim} names from {list(_KNOWN[name])}, found {names or 'no names'}")
            if len(set(names)) != len(names):
                raise ValueError(f"{name}: expected unique {dim} names, found duplicates in {names}")
    if check_values is False:
        return ds
    for name in present:
        da = ds[name]
        sampled = _is_lazy(da) and check_values is None
        values = value_sample(da, name=name) if sampled else _read(da, name)
        check_values_of(name, values, kind=name, max_nan_fraction=max_nan_fraction, sampled=sampled)
    return ds


#: Windows (per axis) and their side (px) of the value sample of lazy data: 4 × 4 windows of 32 px.
SAMPLE_WINDOWS, SAMPLE_SIDE = 4, 32


def value_sample(da: xr.DataArray, *, name: str | None = None) -> np.ndarray:
    """A cheap sample of a variable's values, every band (and time) kept; read errors name ``name`` and the file.

    - A lazy array that is a whole GeoTIFF as read (``encoding["source"]``, same size): ``SAMPLE_WINDOWS²``
      windows of ``SAMPLE_SIDE`` px at the origins of blocks spread evenly over the file (first and last block
      rows and columns included), read with rasterio: one block each, nodata → NaN; or, for a COG, its overview
      nearest 256 px, whole. Dask would read whole chunks instead (``bench/bench_value_sample.py``).
    - Any other lazy array: ``SAMPLE_WINDOWS`` windows in each of its first and last chunks (two chunks computed).
    - In-memory data (or a lazily indexed file without Dask): the spread windows.

    Returns
    -------
    numpy.ndarray
        ``(..., n)``: the leading dims kept, the windows' pixels flattened last.

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> from xcloudfree.scene import value_sample
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> value_sample(scene.s2).shape  # in memory: 4 × 4 windows of 32 × 32 px (overlapping on 64 px)
    (13, 16384)
    >>> value_sample(scene.s2.chunk({"y": 32, "x": 32})).shape  # Dask: the first and the last chunk only
    (13, 2048)
    """
    try:
        if _is_lazy(da):
            from_file = _file_sample(da)
            if from_file is not None:
                return from_file
            import dask

            pieces = [da.isel(y=y, x=x).data for y, x in _chunk_windows(da)]
            # In this process: two chunks gain nothing from threads or a cluster round trip.
            computed = dask.compute(*pieces, scheduler="sync")
        else:
            computed = [np.asarray(da.isel(y=y, x=x).data) for y, x in _spread_windows(da.sizes["y"], da.sizes["x"])]
    except ValueError:
        raise
    except Exception as err:
        raise _read_error(da, name, err) from err
    return np.concatenate([np.asarray(p).reshape(*p.shape[:-2], -1) for p in computed], axis=-1)


def _spread_windows(h: int, w: int) -> list[tuple[slice, slice]]:
    side_y, side_x = min(SAMPLE_SIDE, h), min(SAMPLE_SIDE, w)
    ys = np.unique(np.linspace(0, h - side_y, SAMPLE_WINDOWS).astype(int))
    xs = np.unique(np.linspace(0, w - side_x, SAMPLE_WINDOWS).astype(int))
    return [(slice(int(y), int(y) + side_y), slice(int(x), int(x) + side_x)) for y in ys for x in xs]


def _chunk_windows(da: xr.DataArray) -> list[tuple[slice, slice]]:
    """Windows spread over the first and the last chunk of (y, x)."""
    cy, cx = da.chunksizes["y"], da.chunksizes["x"]
    out = []
    for (y0, hy), (x0, wx) in (((0, cy[0]), (0, cx[0])), ((sum(cy[:-1]), cy[-1]), (sum(cx[:-1]), cx[-1]))):
        out += [
            (slice(y0 + a.start, y0 + a.stop), slice(x0 + b.start, x0 + b.stop)) for a, b in _spread_windows(hy, wx)
        ]
    return out


def _file_sample(da: xr.DataArray) -> np.ndarray | None:
    """The spread windows read straight from ``da``'s GeoTIFF, or None when ``da`` is not that whole file."""
    source = da.encoding.get("source")
    if not source or da.ndim != 3:
        return None
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        if (src.count, src.height, src.width) != (da.shape[0], da.sizes["y"], da.sizes["x"]):
            return None
        levels = src.overviews(1)
        if levels:
            # A COG's overview covers the whole scene in a few small blocks: read the one nearest 256 px.
            factor = min(levels, key=lambda f: abs(max(src.height, src.width) / f - 256))
            shape = (src.count, max(1, src.height // factor), max(1, src.width // factor))
            values = src.read(out_shape=shape).reshape(src.count, -1)
            return _nodata_as_nan(values, src.nodata, da.dtype)
        # Windows at block origins: each costs exactly one block (decompressed once), wherever it falls.
        bh, bw = src.block_shapes[0]
        rows = np.unique(np.linspace(0, (src.height - 1) // bh, SAMPLE_WINDOWS).astype(int)) * bh
        cols = np.unique(np.linspace(0, (src.width - 1) // bw, SAMPLE_WINDOWS).astype(int)) * bw
        side_y, side_x = min(SAMPLE_SIDE, bh), min(SAMPLE_SIDE, bw)
        pieces = [
            src.read(window=Window(int(x), int(y), min(side_x, src.width - x), min(side_y, src.height - y)))
            for y in rows
            for x in cols
        ]
        nodata = src.nodata
    return _nodata_as_nan(np.concatenate([p.reshape(p.shape[0], -1) for p in pieces], axis=-1), nodata, da.dtype)


def _nodata_as_nan(values: np.ndarray, nodata: float | None, dtype: np.dtype) -> np.ndarray:
    """File values as the reader returns them: nodata → NaN where the variable is float (S1, DEM)."""
    if nodata is not None and np.dtype(dtype).kind == "f":
        return np.where(values == nodata, np.nan, values.astype(dtype))
    return values


def _read(da: xr.DataArray, name: str) -> np.ndarray:
    try:
        return np.asarray(da.values)
    except Exception as err:
        raise _read_error(da, name, err) from err


def _read_error(da: xr.DataArray, name: str | None, err: Exception) -> Exception:
    # Reader errors (rasterio, zarr, OS) say where they failed deep inside; the caller needs which input and file.
    if isinstance(err, ValueError) and str(err).startswith(f"{name}:"):
        return err
    source = da.encoding.get("source")
    where = f" {source!r}" if source else ""
    return ValueError(f"{name or da.name}: expected readable data{where}, found a read error ({err})")


def check_values_of(
    name: str, values: np.ndarray, *, kind: str, max_nan_fraction: float = 0.0, sampled: bool = False
) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``values`` (all, or a sample) are not what ``kind`` holds.

    ``kind``: ``"s2"`` / ``"s2_clear"`` (DN: not 0–1 reflectance, not 8-bit), ``"s1"`` (dB, not linear), ``"dem"``.

    >>> import numpy as np
    >>> from xcloudfree.scene import check_values_of
    >>> check_values_of("s1", np.array([-15.0, -8.5, -21.0]), kind="s1")  # dB: fine
    >>> check_values_of("s1", np.array([0.03, 0.14, 0.008]), kind="s1")
    Traceback (most recent call last):
    ValueError: s1: expected backscatter in dB (...), found values in [0.008, 0.14] that look linear; convert ...
    """
    what = " in a sample of the (lazy) data" if sampled else ""
    if values.dtype.kind not in "uif":
        raise ValueError(f"{name}: expected a numeric dtype, found {values.dtype}")
    if kind in ("s2", "s2_clear") and values.dtype.itemsize == 1:
        raise ValueError(
            f"{name}: expected digital numbers (reflectance × 10000) as 16-bit integers or floats, found "
            f"{values.dtype}: an 8-bit rendering (0–255) has lost the DN; use the original product"
        )
    nan = int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0
    if nan > max_nan_fraction * values.size:
        raise ValueError(
            f"{name}: expected at most {max_nan_fraction:.2%} NaN (nodata), found {nan} NaN values "
            f"({nan / values.size:.3%}){what}; pass max_nan_fraction= to accept them as nodata"
        )
    if nan == values.size:
        return
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if kind in ("s2", "s2_clear") and values.dtype.kind == "f" and hi <= 2.0:
        raise ValueError(
            f"{name}: expected digital numbers (reflectance × 10000, typically 0–10000), found values in "
            f"[{lo:.3g}, {hi:.3g}]{what} that look like 0–1 reflectance; multiply by 10000"
        )
    if kind == "s1" and lo >= 0.0:
        raise ValueError(
            f"{name}: expected backscatter in dB (typically −30…+5, mostly negative), found values in "
            f"[{lo:.3g}, {hi:.3g}]{what} that look linear; convert with xcloudfree.sensors.linear_to_db"
        )
