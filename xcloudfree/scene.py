"""The scene data model: one ``xarray.Dataset`` on one grid.

Variables (DESIGN.md): ``s2`` (band, y, x) Sentinel-2 DN, ``s1`` (polarization, y, x) backscatter in dB,
``dem`` (y, x) metres, ``s2_clear`` (band, y, x) the cloud-free target; a leading ``time`` dimension is allowed.
The CRS lives in the ``spatial_ref`` coordinate (rioxarray conventions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor the grid checks use)
import xarray as xr

from .sensors import S1_POLARIZATIONS, S2_BAND_NAMES, S2_L2A_BAND_NAMES

__all__ = ["make_scene", "validate_scene", "name_s2_bands", "name_s1_polarizations", "check_same_grid"]

_SPATIAL = ("y", "x")
#: Leading dimension and band coordinate of each layered variable.
_LAYERED = {"s2": "band", "s2_clear": "band", "s1": "polarization"}
_KNOWN = {"s2": S2_BAND_NAMES, "s2_clear": S2_BAND_NAMES, "s1": S1_POLARIZATIONS}


def _is_lazy(da: xr.DataArray) -> bool:
    return da.chunks is not None


def name_s2_bands(
    da: xr.DataArray, *, bands: list[str] | tuple[str, ...] | None = None, product: str | None = None, name: str = "s2"
) -> xr.DataArray:
    """Give an S2 array the canonical band names.

    Parameters
    ----------
    da : DataArray (band, y, x)
        As read from a GeoTIFF (band coordinate 1..N) or already named.
    bands : sequence of str, optional
        Band names in file order; wins over everything else.
    product : {"L1C", "L2A"}, optional
        13 bands are L1C; 12 bands are L2A (no B10) only when ``product="L2A"`` says so.
    """
    n = da.sizes[da.dims[0]]
    if bands is None:
        described = _band_descriptions(da)
        if described is not None and set(described) <= set(S2_BAND_NAMES):
            bands = described
        elif product is not None and product.upper() not in ("L1C", "L2A"):
            raise ValueError(f"product: expected 'L1C' or 'L2A', found {product!r}")
        elif n == 13 and (product or "L1C").upper() == "L1C":
            bands = S2_BAND_NAMES
        elif n == 12 and (product or "").upper() == "L2A":
            bands = S2_L2A_BAND_NAMES
        elif _coord_names(da) is not None and set(_coord_names(da)) <= set(S2_BAND_NAMES):
            bands = _coord_names(da)
        else:
            hint = " (12 bands: pass product='L2A' for an L2A stack without B10)" if n == 12 else ""
            raise ValueError(
                f"{name}: expected 13 Sentinel-2 bands (L1C: {', '.join(S2_BAND_NAMES)}) or 12 with product='L2A', "
                f"found {n} band(s){hint}; pass bands=[...] to name them"
            )
    bands = [str(b) for b in bands]
    if len(bands) != n:
        raise ValueError(f"bands: expected {n} names (one per band of {name}), found {len(bands)}: {bands}")
    unknown = [b for b in bands if b not in S2_BAND_NAMES]
    if unknown:
        raise ValueError(f"bands: expected Sentinel-2 names from {list(S2_BAND_NAMES)}, found {unknown}")
    da = da.rename({da.dims[0]: "band"}) if da.dims[0] != "band" else da
    da = da.assign_coords(band=bands)
    da.attrs.setdefault("product", (product or ("L2A" if "B10" not in bands else "L1C")).upper())
    da.attrs.setdefault("units", "DN")
    return da


def name_s1_polarizations(
    da: xr.DataArray, *, polarizations: list[str] | tuple[str, ...] | None = None, name: str = "s1"
) -> xr.DataArray:
    """Give an S1 array the polarisation names (2 layers → VV, VH)."""
    n = da.sizes[da.dims[0]]
    if polarizations is None:
        described = _band_descriptions(da) or _coord_names(da)
        if described is not None and set(described) <= set(S1_POLARIZATIONS):
            polarizations = described
        elif n == 2:
            polarizations = S1_POLARIZATIONS
        else:
            raise ValueError(
                f"{name}: expected 2 layers (VV, VH backscatter in dB), found {n}; "
                "pass polarizations=[...] to name them"
            )
    polarizations = [str(p).upper() for p in polarizations]
    unknown = [p for p in polarizations if p not in S1_POLARIZATIONS]
    if len(polarizations) != n or unknown:
        raise ValueError(
            f"polarizations: expected {n} names from {list(S1_POLARIZATIONS)}, found {list(polarizations)}"
        )
    da = da.rename({da.dims[0]: "polarization"}) if da.dims[0] != "polarization" else da
    da = da.assign_coords(polarization=polarizations)
    da.attrs.setdefault("units", "dB")
    return da


def _band_descriptions(da: xr.DataArray) -> list[str] | None:
    names = da.attrs.get("long_name")
    if isinstance(names, list | tuple) and len(names) == da.sizes[da.dims[0]]:
        return [str(n) for n in names]
    return None


def _coord_names(da: xr.DataArray) -> list[str] | None:
    dim = da.dims[0]
    if dim in da.coords and da[dim].dtype.kind in "UO":
        return [str(v) for v in da[dim].values]
    return None


def _grid(da: xr.DataArray) -> dict[str, Any]:
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
    Values (numpy-backed data; on Dask only with ``check_values=True``, because it computes):
    S2 in DN, not reflectance; S1 in dB, not linear; NaN share at most ``max_nan_fraction``.
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
    for name in present:
        da = ds[name]
        if check_values is False or (check_values is None and _is_lazy(da)):
            continue
        _check_values(name, da, max_nan_fraction)
    return ds


def _check_values(name: str, da: xr.DataArray, max_nan_fraction: float) -> None:
    if da.dtype.kind not in "uif":
        raise ValueError(f"{name}: expected a numeric dtype, found {da.dtype}")
    values = np.asarray(da.values)
    nan = int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0
    if nan > max_nan_fraction * values.size:
        raise ValueError(
            f"{name}: expected at most {max_nan_fraction:.2%} NaN (nodata), found {nan} NaN values "
            f"({nan / values.size:.3%}); pass max_nan_fraction= to accept them as nodata"
        )
    if nan == values.size:
        return
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if name in ("s2", "s2_clear") and values.dtype.kind == "f" and hi <= 2.0:
        raise ValueError(
            f"{name}: expected digital numbers (reflectance × 10000, typically 0–10000), found values in "
            f"[{lo:.3g}, {hi:.3g}] that look like 0–1 reflectance; multiply by 10000"
        )
    if name == "s1" and lo >= 0.0:
        raise ValueError(
            f"{name}: expected backscatter in dB (typically −30…+5, mostly negative), found values in "
            f"[{lo:.3g}, {hi:.3g}] that look linear; convert with xcloudfree.sensors.linear_to_db"
        )
