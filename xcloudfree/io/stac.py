"""STAC input: search a STAC API and load Sentinel-2 (+ Sentinel-1, DEM) time series as one scene Dataset.

Provider conventions are read from each item, never from the provider's name:

- **asset keys**: ``B04`` (Planetary Computer, older earth-search) or ``red`` (earth-search v1) are mapped to the
  canonical band names through the asset's ``eo:bands`` name (:func:`s2_band_assets`);
- **processing-baseline offset** (REFERENCE §1): baseline ≥ 04.00 adds −1000 to the DN unless the provider says it
  already removed it (``earthsearch:boa_offset_applied``); see :func:`s2_offset`;
- **Sentinel-1 units**: RTC products deliver linear γ0, calibrated GRD float rasters linear σ0, both converted to dB;
  raw GRD amplitude (uint16 DN) cannot be calibrated from the item alone and is refused (:func:`s1_units`).

``odc.stac`` and ``pystac_client`` are imported inside the functions that use them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import rioxarray  # noqa: F401  (registers .rio: the loaded cube carries its CRS and transform)
import xarray as xr

from ..sensors import S1_POLARIZATIONS, S2_BAND_NAMES, S2_L2A_BAND_NAMES, linear_to_db, processing_offset

__all__ = [
    "AssetReadError",
    "load",
    "match_s1",
    "s1_band_assets",
    "s1_units",
    "s2_band_assets",
    "s2_offset",
    "s2_product",
    "search",
    "widen_datetime",
]

#: Metres per degree of latitude/longitude at the equator (WGS 84 semi-major axis): converts a resolution in
#: metres for a geographic CRS; 10 m gives the 8.983e-05° grid of Sentinel-2 exports in EPSG:4326.
METRES_PER_DEGREE = 2 * np.pi * 6378137.0 / 360.0
_SKIP_ROLES = {"visual", "overview", "thumbnail", "metadata", "tiles"}
_UNSIGNED_HINTS = (
    "403",
    "409",
    "PublicAccessNotPermitted",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "Signature",
)


class AssetReadError(OSError):
    """A STAC asset could not be read: the message names the item, the asset key and the href."""


# --------------------------------------------------------------------------------------------------- search


def search(
    url: str,
    *,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    collections: str | Sequence[str] | None = None,
    modifier: Callable[[Any], Any] | None = None,
    timeout: float = 60.0,
    **query: Any,
) -> Any:
    """Search a STAC API (pystac-client) and return the items sorted by acquisition time.

    Parameters
    ----------
    url : str
        Landing page of the STAC API, e.g. ``"https://earth-search.aws.element84.com/v1"``.
    bbox : (min lon, min lat, max lon, max lat), optional
        Degrees (EPSG:4326).
    datetime : str, optional
        ``"2018-01-01/2018-12-31"`` or any RFC 3339 interval pystac-client accepts.
    collections : str or sequence of str, optional
        Collection ids, e.g. ``["sentinel-2-l1c"]``.
    modifier : callable, optional
        Passed to ``pystac_client.Client.open``, e.g. ``planetary_computer.sign_inplace``.
    timeout : float
        Seconds to wait for each HTTP request before giving up.
    **query
        Anything else ``Client.search`` accepts: ``query={"eo:cloud_cover": {"lt": 50}}``, ``max_items``,
        ``limit``, ``filter``, ``ids``, ...

    Returns
    -------
    pystac.ItemCollection
        Items sorted by ``datetime``.

    Examples
    --------
    No runnable example (it needs a STAC API on the network); a typical call::

        items = search("https://earth-search.aws.element84.com/v1", bbox=(12.4, 41.8, 12.6, 42.0),
                       datetime="2018-05-01/2018-09-30", collections=["sentinel-2-l1c"],
                       query={"eo:cloud_cover": {"lt": 60}})
    """
    import pystac
    import pystac_client
    import requests

    bbox = _check_bbox(bbox)
    if isinstance(collections, str):
        collections = [c.strip() for c in collections.split(",") if c.strip()]
    try:
        client = pystac_client.Client.open(url, modifier=modifier, timeout=timeout)
        found = list(client.search(bbox=bbox, datetime=datetime, collections=collections, **query).items())
    except (requests.RequestException, pystac_client.exceptions.APIError) as err:
        raise ConnectionError(f"url: could not search the STAC API at {url!r}: {err}") from err
    found.sort(key=lambda item: (_item_time(item), item.id))
    return pystac.ItemCollection(found)


def widen_datetime(interval: str, days: float) -> str:
    """A STAC datetime interval ``"start/end"`` (or one date) widened by ``days`` on both sides.

    For the Sentinel-1 search of a time series: S1 acquisitions up to the matching window before the first and
    after the last S2 date count. Open ends (``..``) stay open.

    >>> from xcloudfree.io.stac import widen_datetime
    >>> widen_datetime("2024-06-01/2024-06-30", 6)
    '2024-05-26T00:00:00Z/2024-07-06T23:59:59.999999Z'
    >>> widen_datetime("2024-06-01/..", 6)
    '2024-05-26T00:00:00Z/..'
    """
    parts = interval.split("/") if "/" in interval else [interval, interval]
    if len(parts) != 2:
        raise ValueError(f"datetime: expected 'start/end' or one date, found {interval!r}")
    out = []
    for text, sign in zip(parts, (-1, 1), strict=True):
        text = text.strip()
        if text in ("", ".."):
            out.append("..")
            continue
        try:
            when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as err:
            raise ValueError(f"datetime: expected ISO dates like 2018-01-01, found {text!r}") from err
        if len(text) == 10 and sign > 0:
            when += _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)  # a bare end date includes its day
        when = (when + sign * _dt.timedelta(days=days)).replace(tzinfo=None)
        out.append(when.isoformat() + "Z")
    return "/".join(out)


def _check_bbox(bbox: Sequence[float] | None) -> list[float] | None:
    if bbox is None:
        return None
    values = list(bbox)
    if len(values) != 4:
        raise ValueError(f"bbox: expected 4 numbers (min lon, min lat, max lon, max lat), found {values!r}")
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"bbox: expected 4 numbers, found {bbox!r}") from err
    if not (values[0] < values[2] and values[1] < values[3]):
        raise ValueError(f"bbox: expected min lon < max lon and min lat < max lat, found {values}")
    return values


# ------------------------------------------------------------------------------------- provider conventions


def _as_dict(item: Any) -> dict:
    return item if isinstance(item, dict) else item.to_dict(include_self_link=False, transform_hrefs=False)


def _item_time(item: Any) -> _dt.datetime:
    d = _as_dict(item)
    props = d.get("properties", {})
    text = props.get("datetime") or props.get("start_datetime")
    if text is None:
        raise ValueError(f"item {d.get('id')!r}: expected a 'datetime' property, found none")
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(_dt.UTC).replace(tzinfo=None)


def _asset_band_names(asset: dict) -> list[str]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [str(b.get("name", "")) for b in bands if isinstance(b, dict)]


def _is_data_asset(asset: dict) -> bool:
    return not set(asset.get("roles") or ["data"]) & _SKIP_ROLES


def s2_product(item: Any) -> str:
    """The Sentinel-2 processing level of a STAC item: ``"L1C"`` or ``"L2A"``.

    From ``s2:product_type`` (S2MSI1C / S2MSI2A), else the collection id, else the item id, else the presence of
    an SCL asset.

    >>> from xcloudfree.io.stac import s2_product
    >>> s2_product({"id": "S2B_MSIL2A_20230704", "collection": "sentinel-2-l2a", "properties": {}})
    'L2A'
    >>> s2_product({"id": "S2A_MSIL1C_20240601T100031_N0510_R122_T33TUL", "properties": {}})
    'L1C'
    """
    d = _as_dict(item)
    props = d.get("properties", {})
    for text in (props.get("s2:product_type"), props.get("processing:level"), d.get("collection"), d.get("id")):
        text = str(text or "").upper()
        if "L1C" in text or "MSI1C" in text:
            return "L1C"
        if "L2A" in text or "MSI2A" in text:
            return "L2A"
    if "SCL" in s2_band_assets(d, product="L2A"):
        return "L2A"
    raise ValueError(
        f"item {d.get('id')!r}: expected a Sentinel-2 L1C or L2A item (s2:product_type, collection or id saying "
        f"L1C/L2A), found collection {d.get('collection')!r}"
    )


def s2_band_assets(item: Any, *, product: str | None = None) -> dict[str, str]:
    """Map canonical band names (``B01`` … ``B12``, ``B8A``, and ``SCL`` for L2A) to the item's asset keys.

    The band is read from the asset's ``eo:bands`` name (``red`` → ``B04`` on earth-search), else from the key
    itself (``B04`` on Planetary Computer). Visual, overview and metadata assets are skipped; when a band has
    several assets (earth-search L2A lists ``red`` and ``red-jp2``) the GeoTIFF/COG wins.

    >>> from xcloudfree.io.stac import s2_band_assets
    >>> item = {"collection": "sentinel-2-l2a", "properties": {}, "assets": {  # earth-search v1 style
    ...     "red": {"eo:bands": [{"name": "B04"}], "type": "image/tiff; application=geotiff"},
    ...     "red-jp2": {"eo:bands": [{"name": "B04"}], "type": "image/jp2"},
    ...     "scl": {"type": "image/tiff; application=geotiff"},
    ...     "thumbnail": {"roles": ["thumbnail"], "type": "image/jpeg"}}}
    >>> s2_band_assets(item)
    {'B04': 'red', 'SCL': 'scl'}
    """
    d = _as_dict(item)
    product = product or s2_product(d)
    wanted = set(S2_BAND_NAMES if product == "L1C" else S2_L2A_BAND_NAMES) | ({"SCL"} if product == "L2A" else set())
    candidates: dict[str, list[tuple[int, str]]] = {}
    for key, asset in (d.get("assets") or {}).items():
        if not _is_data_asset(asset):
            continue
        names = _asset_band_names(asset)
        if len(names) > 1:
            continue
        name = names[0].upper() if names else key.upper()
        if name not in wanted and key.upper() in wanted:
            name = key.upper()
        if name not in wanted:
            continue
        kind = str(asset.get("type", "")).lower()
        rank = 0 if "tiff" in kind else 1 if not kind else 2  # COG first, JPEG2000 last
        candidates.setdefault(name, []).append((rank, key))
    found = {name: sorted(keys)[0][1] for name, keys in candidates.items()}
    order = [*S2_BAND_NAMES, "SCL"]
    return {name: found[name] for name in order if name in found}


def s2_offset(item: Any) -> float:
    """DN offset to add to this item's Sentinel-2 values so that DN = reflectance × 10000 (REFERENCE §1).

    Processing baseline ≥ 04.00 (``s2:processing_baseline``) means −1000, unless the provider says it already
    removed the offset (``earthsearch:boa_offset_applied`` / ``sentinel:boa_offset_applied`` true: earth-search's
    ``sentinel-2-l2a``). Earlier baselines, or items without a baseline, need no offset. earth-search's flag is
    known to be wrong for some scenes (Element84/earth-search#66, #71): pass ``offset=`` to :func:`load` to
    override it.

    >>> from xcloudfree.io.stac import s2_offset
    >>> s2_offset({"properties": {"s2:processing_baseline": "05.09"}})
    -1000.0
    >>> s2_offset({"properties": {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}})
    0.0
    """
    props = _as_dict(item).get("properties", {})
    if props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied")) is True:
        return 0.0
    baseline = props.get("s2:processing_baseline", props.get("sentinel:processing_baseline"))
    try:
        return processing_offset({} if baseline is None else {"processing_baseline": baseline})
    except ValueError as err:
        raise ValueError(
            f"item {_as_dict(item).get('id')!r}: expected s2:processing_baseline like '04.00', found {baseline!r}"
        ) from err


def s1_band_assets(item: Any) -> dict[str, str]:
    """Map ``VV``/``VH`` to the item's asset keys (``vv``, ``gamma0_vv``, or an asset's ``sar:polarizations``).

    >>> from xcloudfree.io.stac import s1_band_assets
    >>> s1_band_assets({"assets": {"gamma0_vh": {}, "gamma0_vv": {}, "thumbnail": {"roles": ["thumbnail"]}}})
    {'VV': 'gamma0_vv', 'VH': 'gamma0_vh'}
    """
    d = _as_dict(item)
    found: dict[str, str] = {}
    for key, asset in (d.get("assets") or {}).items():
        if not _is_data_asset(asset):
            continue
        pols = asset.get("sar:polarizations") or []
        pol = str(pols[0]).upper() if len(pols) == 1 else None
        if pol is None:
            match = re.search(r"(?:^|[_\-.])(vv|vh|hh|hv)$", key.lower())
            pol = match.group(1).upper() if match else None
        if pol in S1_POLARIZATIONS and pol not in found:
            found[pol] = key
    return {pol: found[pol] for pol in S1_POLARIZATIONS if pol in found}


def s1_units(item: Any, asset_key: str | None = None) -> str:
    """What the item's S1 rasters hold: ``"dB"``, ``"linear"`` (power: σ0 or γ0) or ``"amplitude"`` (raw DN).

    ``raster:bands`` ``unit`` dB → dB; RTC products (``sar:product_type`` RTC, a ``gamma0`` role or an ``rtc``
    collection) and float rasters → linear power; anything else (GRD uint16 DN) → uncalibrated amplitude.

    >>> from xcloudfree.io.stac import s1_units
    >>> rtc = {"collection": "sentinel-1-rtc", "properties": {}, "assets": {"vv": {}, "vh": {}}}
    >>> grd = {"collection": "sentinel-1-grd", "properties": {},
    ...        "assets": {"vv": {"raster:bands": [{"data_type": "uint16"}]}, "vh": {}}}
    >>> s1_units(rtc), s1_units(grd)
    ('linear', 'amplitude')
    """
    d = _as_dict(item)
    assets = d.get("assets") or {}
    key = asset_key or next(iter(s1_band_assets(d).values()), None)
    asset = assets.get(key, {}) if key else {}
    band = (asset.get("raster:bands") or [{}])[0]
    if str(band.get("unit", "")).lower() in ("db", "decibel", "decibels"):
        return "dB"
    props = d.get("properties", {})
    rtc = (
        str(props.get("sar:product_type", "")).upper() == "RTC"
        or "gamma0" in (asset.get("roles") or [])
        or "rtc" in str(d.get("collection", "")).lower()
    )
    if rtc or str(band.get("data_type", "")).startswith("float"):
        return "linear"
    return "amplitude"


def match_s1(
    s2_times: Sequence[Any], s1_times: Sequence[Any], window_days: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """For every S2 date the nearest S1 acquisition within ``± window_days``.

    Returns
    -------
    index : int array (n_s2,)
        Position in ``s1_times``, −1 where no acquisition lies within the window.
    lag_days : float array (n_s2,)
        S1 time − S2 time in days, NaN where unmatched. Ties go to the earlier acquisition.

    Examples
    --------
    >>> from xcloudfree.io.stac import match_s1
    >>> s2_dates = ["2024-06-01", "2024-06-11", "2024-06-30"]
    >>> index, lag = match_s1(s2_dates, ["2024-05-30", "2024-06-09", "2024-06-12"], window_days=6)
    >>> index.tolist(), lag.tolist()
    ([0, 2, -1], [-2.0, 1.0, nan])
    """
    if window_days < 0:
        raise ValueError(f"window_days: expected a non-negative number of days, found {window_days}")
    t2 = np.asarray(s2_times, dtype="datetime64[ns]")
    t1 = np.asarray(s1_times, dtype="datetime64[ns]")
    index = np.full(t2.shape, -1, dtype=np.int64)
    lag = np.full(t2.shape, np.nan)
    if t1.size == 0:
        return index, lag
    days = (t1[None, :] - t2[:, None]) / np.timedelta64(1, "D")
    # argmin takes the first of equal distances: order candidates so that the earlier one comes first
    order = np.argsort(t1, kind="stable")
    best = order[np.argmin(np.abs(days[:, order]), axis=1)]
    chosen = days[np.arange(t2.size), best]
    ok = np.abs(chosen) <= window_days
    index[ok] = best[ok]
    lag[ok] = chosen[ok]
    return index, lag


# ------------------------------------------------------------------------------------------------- loading


class _NamedReader:
    """Wraps odc-stac's rasterio reader: a failed read raises :class:`AssetReadError` naming item and asset."""

    def __init__(self, inner: Any, uri: str, names: dict[str, str]) -> None:
        self._inner, self._uri, self._names = inner, uri, names

    def read(self, cfg: Any, dst_geobox: Any, *, dst: Any = None, selection: Any = None) -> Any:
        import rasterio.errors

        try:
            return self._inner.read(cfg, dst_geobox, dst=dst, selection=selection)
        except (rasterio.errors.RasterioError, OSError) as err:
            raise AssetReadError(_read_error(self._names.get(self._uri, "an asset"), self._uri, err)) from err


class _NamedDriver:
    """odc-loader reader driver: rasterio with bounded HTTP timeouts and errors that name the STAC asset."""

    def __init__(self, names: dict[str, str], gdal: dict[str, Any]) -> None:
        from odc.loader import RioDriver

        self._inner = RioDriver()
        self._names = names
        self._gdal = gdal

    def new_load(self, geobox: Any, *, chunks: Any = None) -> Any:
        return self._inner.new_load(geobox, chunks=chunks)

    def finalise_load(self, load_state: Any) -> Any:
        return self._inner.finalise_load(load_state)

    def capture_env(self) -> dict[str, Any]:
        return {**self._inner.capture_env(), **self._gdal}

    def restore_env(self, env: dict[str, Any], load_state: Any) -> Any:
        return self._inner.restore_env(env, load_state)

    def open(self, src: Any, ctx: Any) -> _NamedReader:
        return _NamedReader(self._inner.open(src, ctx), src.uri, self._names)

    @property
    def md_parser(self) -> Any:
        return None  # odc-stac's own STAC parser

    @property
    def dask_reader(self) -> Any:
        return None

    @property
    def aux_reader(self) -> Any:
        return None


def _read_error(where: str, href: str, err: BaseException) -> str:
    text = f"could not read {where} from {href!r}: {err}"
    if href.startswith("http") and ("?" not in href) and any(h in str(err) for h in _UNSIGNED_HINTS):
        text += (
            "; the URL looks unsigned: Planetary Computer assets need a SAS token, pass "
            "patch_url=planetary_computer.sign (and modifier=planetary_computer.sign_inplace to search)"
        )
    return text


def _gdal_env(timeout: float) -> dict[str, Any]:
    seconds = max(1, int(np.ceil(timeout)))
    return {
        "GDAL_HTTP_TIMEOUT": str(seconds),
        "GDAL_HTTP_CONNECTTIMEOUT": str(min(seconds, 10)),
        "GDAL_HTTP_MAX_RETRY": "2",
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }


def _local_path(href: str) -> Path | None:
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(href)
    return None


def _as_items(items: Any, name: str) -> list:
    import pystac

    if items is None:
        return []
    if hasattr(items, "items") and callable(items.items) and not isinstance(items, dict):
        items = items.items()  # pystac_client.ItemSearch
    out = []
    for item in items:
        if isinstance(item, dict):
            item = pystac.Item.from_dict(item)
        if not isinstance(item, pystac.Item):
            raise ValueError(f"{name}: expected pystac Items or item dicts, found {type(item).__name__}")
        out.append(item)
    return out


def _renamed(
    items: list, mapping: list[dict[str, str]], patch_url: Callable[[str], str] | None, names: dict[str, str]
) -> list:
    """Copies of the items whose assets are keyed by canonical names; records href → 'asset of item' for errors."""
    import pystac

    out = []
    for item, keys in zip(items, mapping, strict=True):
        assets = {}
        for canonical, key in keys.items():
            asset = item.assets[key].clone()
            href = asset.get_absolute_href() or asset.href
            if patch_url is not None:
                href = patch_url(href)
            asset.href = href
            assets[canonical] = asset
            names[href] = f"asset {key!r} of item {item.id!r}"
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["assets"] = {k: a.to_dict() for k, a in assets.items()}
        d["links"] = []
        out.append(pystac.Item.from_dict(d, preserve_dict=False))
    return out


def _check_local_assets(items: list, names: dict[str, str]) -> None:
    for item in items:
        for asset in item.assets.values():
            path = _local_path(asset.href)
            if path is not None and not path.is_file():
                raise AssetReadError(
                    f"could not read {names.get(asset.href, 'asset of item ' + repr(item.id))} from "
                    f"{asset.href!r}: no such file"
                )


def _probe_remote(items: list, names: dict[str, str], gdal: dict[str, Any]) -> None:
    """Open the first remote asset once: an unsigned URL or a dead host fails here, fast, not deep in Dask."""
    import rasterio

    for item in items[:1]:
        for asset in list(item.assets.values())[:1]:
            if _local_path(asset.href) is not None:
                continue
            try:
                with rasterio.Env(**gdal), rasterio.open(asset.href):
                    pass
            except (rasterio.errors.RasterioError, OSError) as err:
                raise AssetReadError(_read_error(names.get(asset.href, "an asset"), asset.href, err)) from err


def _group_keys(items: list, groupby: str, lon: float) -> list:
    if groupby == "solar_day":
        # As odc-stac: the UTC time shifted by the scene's longitude (15° per hour), then its date.
        return [(_item_time(it) + _dt.timedelta(hours=lon / 15.0)).date() for it in items]
    if groupby == "time":
        return [_item_time(it) for it in items]
    if groupby == "id":
        return [(_item_time(it), it.id) for it in items]
    raise ValueError(f"groupby: expected 'solar_day', 'time' or 'id', found {groupby!r}")


def _key_of(item: Any, parsed: Any, idx: int, keys: Sequence[Any] = ()) -> Any:
    return keys[idx]


def _groups(keys: list) -> list[list[int]]:
    """Item indices per output time step, in odc-stac's order (sorted by key)."""
    order: dict[Any, list[int]] = {}
    for i, key in sorted(enumerate(keys), key=lambda p: p[1]):
        order.setdefault(key, []).append(i)
    return list(order.values())


def _per_group(values: list[Any], groups: list[list[int]], what: str, items: list) -> list[Any]:
    out = []
    for group in groups:
        seen = {values[i] for i in group}
        if len(seen) > 1:
            ids = [items[i].id for i in group]
            raise ValueError(
                f"{what}: expected one value per date to mosaic items {ids}, found {sorted(map(str, seen))}; "
                "pass groupby='id' to load them as separate time steps"
            )
        out.append(values[group[0]])
    return out


def _native_crs(items: list) -> str | None:
    codes = []
    for item in items:
        props = item.properties
        code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
        if code is None:
            for asset in item.assets.values():
                extra = asset.extra_fields
                code = extra.get("proj:code") or (f"EPSG:{extra['proj:epsg']}" if extra.get("proj:epsg") else None)
                if code:
                    break
        if code:
            codes.append(code)
    return Counter(codes).most_common(1)[0][0] if codes else None


def _centre_lon(items: list, bbox: list[float] | None) -> float:
    if bbox is not None:
        return (bbox[0] + bbox[2]) / 2.0
    lons = [(it.bbox[0] + it.bbox[2]) / 2.0 for it in items if it.bbox]
    return float(np.mean(lons)) if lons else 0.0


def _to_yx(ds: xr.Dataset) -> xr.Dataset:
    rename = {a: b for a, b in (("latitude", "y"), ("longitude", "x")) if a in ds.dims}
    ds = ds.rename(rename) if rename else ds
    # The scene model's time is datetime64[ns] (odc-stac may give microseconds).
    return ds.assign_coords(time=ds["time"].values.astype("datetime64[ns]")) if "time" in ds.dims else ds


def _odc_load(items: list, bands: list[str], groupby: str, lon: float, driver: Any, **kw: Any) -> xr.Dataset:
    import odc.stac

    keys = _group_keys(items, groupby, lon)
    try:
        ds = odc.stac.load(
            items,
            bands=bands,
            groupby=functools.partial(_key_of, keys=keys),
            driver=driver,
            fail_on_error=True,
            **kw,
        )
    except AssetReadError:
        raise
    except ValueError as err:
        raise ValueError(f"load: odc-stac could not build the output grid or bands {bands}: {err}") from err
    return _to_yx(ds)


def load(
    items_s2: Iterable[Any],
    items_s1: Iterable[Any] | None = None,
    dem: Any = None,
    *,
    crs: str | None = None,
    resolution: float | None = 10,
    bbox: Sequence[float] | None = None,
    chunks: dict[str, int] | None = None,
    bands: Sequence[str] | None = None,
    groupby: str = "solar_day",
    resampling: str = "nearest",
    s1_window_days: float = 6.0,
    s1_unit: str = "auto",
    offset: float | None = None,
    patch_url: Callable[[str], str] | None = None,
    timeout: float = 30.0,
) -> xr.Dataset:
    """Load STAC items as one time-series scene (``odc.stac.load``), lazily.

    Parameters
    ----------
    items_s2 : pystac Items (or item dicts, or a pystac-client search)
        Sentinel-2 L1C or L2A items, one product level. Items of the same ``groupby`` key are mosaicked.
    items_s1 : pystac Items, optional
        Sentinel-1 items with VV and VH (RTC, or calibrated GRD in linear power or dB). Each S2 date gets the
        nearest S1 acquisition within ``± s1_window_days``.
    dem : path, DataArray or pystac Items, optional
        Elevation in metres; reprojected bilinearly onto the S2 grid.
    crs : str, optional
        Output CRS (``"EPSG:32633"``); default the most common CRS of the S2 items.
    resolution : float or None
        Pixel size in units of the CRS; None = the items' native pixel size. With a geographic CRS a value ≥ 0.01
        is read as metres and converted at 111,319.49 m per degree (10 m → 8.983e-05°).
    bbox : (min lon, min lat, max lon, max lat), optional
        Area to load, degrees; default the union of the items.
    chunks : dict, optional
        Dask chunks of ``y``/``x``, default ``{"x": 2048, "y": 2048}``; ``{}`` loads eagerly into memory.
    bands : sequence of str, optional
        S2 bands to load (canonical names); default all bands of the product level.
    groupby : {"solar_day", "time", "id"}
        How items become time steps.
    resampling : str
        Resampling of the S2 reflectance bands ("nearest" keeps DN exact); SCL always uses nearest, S1 and DEM
        bilinear.
    s1_window_days : float
        Largest |S1 − S2| time difference accepted for a match, days.
    s1_unit : {"auto", "dB", "linear"}
        What the S1 rasters hold; "auto" reads it from the items (:func:`s1_units`).
    offset : float, optional
        DN offset for every S2 item, overriding :func:`s2_offset` (e.g. 0 when a provider's flag is wrong).
    patch_url : callable, optional
        Applied to every asset href before reading, e.g. ``planetary_computer.sign``.
    timeout : float
        Seconds before an HTTP read gives up (GDAL), so an unreachable asset fails instead of hanging.

    Returns
    -------
    xarray.Dataset
        ``s2 (time, band, y, x)`` float32 DN (reflectance × 10000, offset applied, NaN = nodata);
        ``scl (time, y, x)`` uint8 for L2A; ``s1 (time, polarization, y, x)`` float32 dB with coordinates
        ``s1_lag_days (time)`` and ``s1_time (time)`` (NaN/NaT where unmatched); ``dem (y, x)`` metres; the
        coordinate ``s2_offset (time)`` records the offset applied; CRS in ``spatial_ref``.

    Raises
    ------
    AssetReadError
        An asset is missing or unreachable (named with its item); at load time for local files and the first
        remote asset, otherwise when the data are computed.

    Examples
    --------
    Items usually come from :func:`search`. Here one L1C item (baseline 05.10: DN carry the +1000 offset) whose
    band assets are local COGs of a synthetic scene:

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=32)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> assets = {str(b): {"href": str(xcf.io.write_cog(scene.s2.sel(band=b), f"{tmp.name}/{b}.tif"))}
    ...           for b in scene.band.values}
    >>> w, s, e, n = scene.rio.transform_bounds("EPSG:4326")
    >>> item = {"type": "Feature", "stac_version": "1.0.0", "id": "S2A_MSIL1C_20240601", "links": [],
    ...         "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
    ...         "bbox": [w, s, e, n], "assets": assets,
    ...         "properties": {"datetime": "2024-06-01T10:00:00Z", "s2:processing_baseline": "05.10"}}
    >>> ts = xcf.io.stac.load([item], crs="EPSG:32633", resolution=10, bbox=[w, s, e, n], chunks={"x": 16, "y": 16})
    >>> ts.s2.dims, ts.s2.shape, ts.s2_offset.values.tolist()
    (('time', 'band', 'y', 'x'), (1, 13, 32, 32), [-1000.0])
    >>> float(abs(ts.s2[0] - (scene.s2 - 1000.0)).max())  # offset applied, pixels exact
    0.0
    >>> tmp.cleanup()
    """
    bbox = _check_bbox(bbox)
    items = _as_items(items_s2, "items_s2")
    if not items:
        raise ValueError("items_s2: expected at least one STAC item, found none (check the search's filters)")
    items.sort(key=lambda it: (_item_time(it), it.id))
    products = {s2_product(it) for it in items}
    if len(products) > 1:
        raise ValueError(f"items_s2: expected one product level, found {sorted(products)}; load them separately")
    product = products.pop()
    all_bands = list(S2_BAND_NAMES if product == "L1C" else S2_L2A_BAND_NAMES)
    wanted = list(bands) if bands is not None else all_bands
    unknown = [b for b in wanted if b not in all_bands]
    if unknown:
        raise ValueError(f"bands: expected names from {all_bands} ({product}), found {unknown}")
    mapping = []
    for item in items:
        keys = s2_band_assets(item, product=product)
        missing = [b for b in wanted if b not in keys]
        if missing:
            raise ValueError(
                f"items_s2: expected assets for bands {missing} in item {item.id!r}, found assets {list(item.assets)}"
            )
        mapping.append({b: keys[b] for b in [*wanted, "SCL"] if b in keys})
    with_scl = product == "L2A" and all("SCL" in m for m in mapping)
    if not with_scl:
        mapping = [{b: m[b] for b in wanted} for m in mapping]

    gdal = _gdal_env(timeout)
    names: dict[str, str] = {}
    renamed = _renamed(items, mapping, patch_url, names)
    _check_local_assets(renamed, names)
    _probe_remote(renamed, names, gdal)
    driver = _NamedDriver(names, gdal)

    out_crs = crs or _native_crs(items)
    if out_crs is None:
        raise ValueError("crs: the S2 items carry no projection (proj:epsg / proj:code); pass crs='EPSG:...'")
    res = _resolution(resolution, out_crs)
    lon = _centre_lon(items, bbox)
    chunks = {"x": 2048, "y": 2048} if chunks is None else chunks
    odc_chunks = chunks or None
    load_bands = [*wanted, *(["SCL"] if with_scl else [])]
    raw = _odc_load(
        renamed,
        load_bands,
        groupby,
        lon,
        driver,
        crs=out_crs,
        resolution=res,
        bbox=bbox,
        chunks=odc_chunks,
        resampling={"SCL": "nearest", "*": resampling},
    )
    groups = _groups(_group_keys(items, groupby, lon))
    offsets = (
        [offset] * len(groups)
        if offset is not None
        else _per_group([s2_offset(it) for it in items], groups, "s2 offset", items)
    )
    s2 = _stack_s2(raw, wanted, np.asarray(offsets, dtype=np.float32), product)
    parts: dict[str, xr.DataArray] = {"s2": s2}
    if with_scl:
        parts["scl"] = (
            raw["SCL"].astype("uint8").assign_attrs(long_name="Sentinel-2 L2A scene classification", nodata=0)
        )
    ds = xr.Dataset(parts)
    ds = ds.assign_coords(s2_offset=("time", np.asarray(offsets, dtype=np.float32)))
    geobox = raw.odc.geobox
    ds.rio.write_crs(raw.odc.crs.to_wkt(), inplace=True)
    ds.rio.write_transform(geobox.affine, inplace=True)

    s1_items = _as_items(items_s1, "items_s1")
    if s1_items:
        s1, lag, s1_time = _load_s1(
            s1_items, s2["time"].values, geobox, odc_chunks, s1_window_days, s1_unit, patch_url, gdal, lon, groupby
        )
        ds["s1"] = s1
        ds = ds.assign_coords(s1_lag_days=("time", lag), s1_time=("time", s1_time))
    if dem is not None:
        ds["dem"] = _load_dem(dem, ds["s2"], geobox, odc_chunks, patch_url, gdal)
    ds.attrs.update(source="STAC", product=product)
    from ..scene import validate_scene

    # Structure only: NaN is legitimate nodata here, and checking values would read data at load time.
    return validate_scene(ds, check_values=False)


def _resolution(resolution: float | None, crs: str) -> float | None:
    if resolution is None:
        return None
    if resolution <= 0:
        raise ValueError(f"resolution: expected a positive pixel size, found {resolution}")
    from odc.geo.crs import CRS

    if CRS(crs).geographic and resolution >= 0.01:
        return float(resolution) / METRES_PER_DEGREE
    return float(resolution)


def _stack_s2(raw: xr.Dataset, bands: list[str], offsets: np.ndarray, product: str) -> xr.DataArray:
    layers = []
    for band in bands:
        da = raw[band]
        nodata = da.attrs.get("nodata", 0)
        valid = da != nodata if nodata is not None and not np.isnan(nodata) else da.notnull()
        shifted = da.astype("float32") + xr.DataArray(offsets, dims="time")
        layers.append(shifted.where(valid).astype("float32").drop_attrs())
    s2 = xr.concat(layers, dim="band").assign_coords(band=np.asarray(bands, dtype=str))
    s2 = s2.transpose("time", "band", "y", "x")
    if s2.chunks is not None:
        s2 = s2.chunk({"band": -1})
    return s2.rename("s2").assign_attrs(product=product, units="DN", offset=0)


def _load_s1(
    items: list,
    s2_times: np.ndarray,
    geobox: Any,
    chunks: Any,
    window: float,
    unit: str,
    patch_url: Any,
    gdal: dict,
    lon: float,
    groupby: str,
) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    if unit not in ("auto", "dB", "linear"):
        raise ValueError(f"s1_unit: expected 'auto', 'dB' or 'linear', found {unit!r}")
    usable, skipped, units = [], [], []
    for item in sorted(items, key=lambda it: (_item_time(it), it.id)):
        keys = s1_band_assets(item)
        if set(keys) != set(S1_POLARIZATIONS):
            skipped.append(item.id)
            continue
        found = s1_units(item, keys["VV"]) if unit == "auto" else unit
        if found == "amplitude":
            raise ValueError(
                f"items_s1: item {item.id!r} holds uncalibrated GRD amplitude (integer DN in asset {keys['VV']!r}); "
                "expected calibrated backscatter: use an RTC collection (e.g. Planetary Computer 'sentinel-1-rtc') "
                "or pass s1_unit='linear'/'dB' if the rasters are calibrated power/dB"
            )
        usable.append((item, keys))
        units.append(found)
    if skipped:
        warnings.warn(f"items_s1: skipped {len(skipped)} item(s) without both VV and VH: {skipped}", stacklevel=3)
    if not usable:
        raise ValueError("items_s1: expected items with VV and VH assets, found none")
    s1_items = [it for it, _ in usable]
    names: dict[str, str] = {}
    renamed = _renamed(s1_items, [k for _, k in usable], patch_url, names)
    _check_local_assets(renamed, names)
    _probe_remote(renamed, names, gdal)
    s1_groupby = "solar_day" if groupby == "solar_day" else "id"
    groups = _groups(_group_keys(s1_items, s1_groupby, lon))
    group_units = _per_group(units, groups, "s1 units", s1_items)
    raw = _odc_load(
        renamed,
        list(S1_POLARIZATIONS),
        s1_groupby,
        lon,
        _NamedDriver(names, gdal),
        geobox=geobox,
        chunks=chunks,
        dtype="float32",
        resampling="bilinear",
    )
    layers = []
    for pol in S1_POLARIZATIONS:
        da = raw[pol]
        nodata = da.attrs.get("nodata")
        valid = da.notnull() if nodata is None or np.isnan(nodata) else da != nodata
        layers.append(da.where(valid).drop_attrs())
    stack = xr.concat(layers, dim="polarization").assign_coords(polarization=np.asarray(S1_POLARIZATIONS, dtype=str))
    linear = xr.DataArray([u == "linear" for u in group_units], dims="time")
    db = xr.where(linear, linear_to_db(stack.where(stack > 0)), stack).astype("float32")
    db = db.transpose("time", "polarization", "y", "x")

    index, lag = match_s1(s2_times, raw["time"].values, window)
    matched = index >= 0
    picked = db.isel(time=xr.DataArray(np.where(matched, index, 0), dims="time"))
    picked = picked.assign_coords(time=s2_times).where(xr.DataArray(matched, dims="time", coords={"time": s2_times}))
    s1_time = np.where(matched, raw["time"].values[np.where(matched, index, 0)], np.datetime64("NaT", "ns"))
    if not matched.all():
        dates = [str(t)[:10] for t in s2_times[~matched]]
        warnings.warn(
            f"s1: no Sentinel-1 acquisition within ±{window:g} days of S2 date(s) {dates}; s1 is NaN there "
            "(s1_lag_days = NaN)",
            stacklevel=3,
        )
    if picked.chunks is not None:
        picked = picked.chunk({"time": 1, "polarization": -1})
    picked = picked.drop_vars([c for c in picked.coords if c not in ("time", "polarization", "y", "x")])
    attrs = {"units": "dB", "s1_window_days": float(window), "matching": "nearest S1 acquisition per S2 date"}
    return picked.rename("s1").assign_attrs(attrs), lag, s1_time.astype("datetime64[ns]")


def _load_dem(dem: Any, s2: xr.DataArray, geobox: Any, chunks: Any, patch_url: Any, gdal: dict) -> Any:
    from .geotiff import read_dem

    if isinstance(dem, str | os.PathLike):
        out = read_dem(dem, like=s2)
    elif isinstance(dem, xr.DataArray):
        from rasterio.enums import Resampling

        template = s2.isel(time=0, band=0, drop=True)
        src = dem.squeeze(drop=True) if dem.ndim == 3 else dem
        out = src.astype("float32").rio.reproject_match(template, resampling=Resampling.bilinear, nodata=np.nan)
        out = out.assign_coords(x=s2["x"], y=s2["y"])
        if s2.chunks is not None:
            out = out.chunk({"y": s2.chunksizes["y"], "x": s2.chunksizes["x"]})
    else:
        items = _as_items(dem, "dem")
        keys = []
        for item in items:
            data = [k for k, a in item.assets.items() if _is_data_asset(a.to_dict())]
            if not data:
                raise ValueError(f"dem: expected a data asset in item {item.id!r}, found {list(item.assets)}")
            keys.append({"dem": data[0]})
        names: dict[str, str] = {}
        renamed = _renamed(items, keys, patch_url, names)
        _check_local_assets(renamed, names)
        out = _dem_items(renamed, geobox, chunks, _NamedDriver(names, gdal))
    for name in ("spatial_ref", "band", "time"):
        if name in out.coords:
            out = out.drop_vars(name)
    return out.astype("float32").rename("dem").assign_attrs(units="m")


def _dem_items(items: list, geobox: Any, chunks: Any, driver: Any) -> xr.DataArray:
    import odc.stac

    keys = [0] * len(items)  # one time step: every DEM tile goes into the same mosaic
    ds = odc.stac.load(
        items,
        bands=["dem"],
        groupby=functools.partial(_key_of, keys=keys),
        geobox=geobox,
        chunks=chunks,
        dtype="float32",
        resampling="bilinear",
        driver=driver,
        fail_on_error=True,
    )
    da = _to_yx(ds)["dem"].isel(time=0, drop=True)
    nodata = da.attrs.get("nodata")
    return da.where(da != nodata) if nodata is not None and not np.isnan(nodata) else da
