"""A local STAC catalogue of real Sentinel-2 time series, served by a real STAC API server (``rustac serve``).

Used by ``tests/test_stac.py`` and ``examples/stac_timeseries.py`` (which imports this file by path). Each band of
each date becomes a COG; each date becomes an item built from a real provider item in ``../shared/data/stac``
(same structure, asset keys, ``eo:bands``, ``raster:bands``), with the hrefs, footprint, projection, time and
processing baseline of the local data. Asset hrefs are ``file://`` URIs: a path-absolute href would be resolved
against the server's ``self`` link.

- :func:`rome_items`: the 15-date Rome series (L1C, EPSG:4326) in earth-search ``sentinel-2-l1c`` shape
  (asset keys ``red``, ``nir08``, ...), baseline 02.06 (2018: no offset).
- :func:`slovenia_items`: the 5-date Slovenia series (EPSG:32633) in Planetary Computer ``sentinel-2-l2a`` shape
  (asset keys ``B04``, ``SCL``). Its pixel values are the real L1C reflectances (not L2A) written as DN + 1000 with
  baseline 05.00, as a Collection-1 reprocessing would deliver them, so the loader must remove the offset; the SCL
  asset (20 m) is made from the real s2cloudless mask (9 = cloud, 4 = vegetation).
- :func:`s1_rtc_items`: synthetic Sentinel-1 in the shape of a real RTC item (stactools ``sentinel1-rtc-aws``:
  ``gamma0_vv``/``gamma0_vh``, float32 linear γ0), constant per acquisition.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
# Properties of the template scene that would contradict the local data.
_DROP = ("s2:tile_id", "s2:product_uri", "s2:datastrip_id", "s2:datatake_id", "s2:granule_id", "earthsearch:s3_path")


# ------------------------------------------------------------------------------------------ files and items


def write_band(path: Path, array: np.ndarray, *, transform: Any, crs: str, nodata: float | None = 0) -> Path:
    """One band as a Cloud-Optimized GeoTIFF (deflate)."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
    ) as dst:
        dst.write(array, 1)
    return path


def _footprint(transform: Any, shape: tuple[int, int], crs: str) -> tuple[list[float], dict]:
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    west, south, east, north = array_bounds(shape[0], shape[1], transform)
    if crs != "EPSG:4326":
        west, south, east, north = transform_bounds(crs, "EPSG:4326", west, south, east, north)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return [west, south, east, north], {"type": "Polygon", "coordinates": [ring]}


def make_item(
    template: dict,
    *,
    item_id: str,
    when: datetime,
    crs: str,
    transform: Any,
    shape: tuple[int, int],
    assets: dict[str, tuple[Path, Any, tuple[int, int]]],
    properties: dict | None = None,
) -> dict:
    """A copy of a real item with local COG assets ``{key: (path, transform, shape)}`` and the local footprint.

    Asset keys not in ``assets`` are dropped; the kept ones keep their title, roles, ``eo:bands`` and
    ``raster:bands``.
    """
    item = copy.deepcopy(template)
    bbox, geometry = _footprint(transform, shape, crs)
    item.update(id=item_id, bbox=bbox, geometry=geometry, links=[])
    props = {k: v for k, v in item["properties"].items() if k not in _DROP}
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    props.update(datetime=stamp, created=stamp, updated=stamp)
    epsg = int(crs.split(":")[1])
    props["proj:epsg"] = epsg
    props.pop("proj:code", None)
    for key in ("start_datetime", "end_datetime"):
        if key in props:
            props[key] = stamp
    props.update(properties or {})
    item["properties"] = props
    kept = {}
    for key, (path, band_transform, band_shape) in assets.items():
        asset = copy.deepcopy(template["assets"][key])
        asset.update(href=Path(path).resolve().as_uri(), type=COG)
        asset["proj:shape"] = list(band_shape)
        asset["proj:transform"] = list(band_transform)[:6]
        for stale in ("proj:bbox", "file:size", "file:checksum", "alternate"):
            asset.pop(stale, None)
        kept[key] = asset
    item["assets"] = kept
    return item


def _template(name: str, shared: Path, index: int = 0) -> dict:
    data = json.loads((shared / "stac" / name).read_text())
    return data["features"][index] if data.get("type") == "FeatureCollection" else data


def _keys_by_band(template: dict) -> dict[str, str]:
    """Canonical band name → asset key of a real S2 item (``eo:bands`` name, else the key)."""
    out = {}
    for key, asset in template["assets"].items():
        names = [b.get("name") for b in asset.get("eo:bands", [])]
        roles = set(asset.get("roles", []))
        if len(names) == 1 and not roles & {"visual", "overview"} and "jp2" not in key:
            out[names[0]] = key
        elif key.upper() == "SCL":
            out["SCL"] = key
    return out


def write_item_collection(items: Sequence[dict], path: Path) -> Path:
    """Items as a GeoJSON FeatureCollection, the input of ``rustac serve``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(items)}))
    return path


# ------------------------------------------------------------------------------------------------ the data


def rome_series(shared: Path = SHARED_DATA) -> tuple[list[datetime], np.ndarray, Any, str]:
    """The real Rome series: times, DN (time, 13, 256, 256) uint16, transform, CRS."""
    import rasterio

    dated = {re.search(r"\d{4}-\d\d-\d\d", p.name)[0]: p for p in (shared / "s2_timeseries_rome").glob("*.tif")}
    times, stack = [], []
    for day, path in sorted(dated.items()):
        times.append(datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC))
        with rasterio.open(path) as src:
            stack.append(src.read())
            transform = src.transform
    return times, np.stack(stack), transform, "EPSG:4326"


def rome_items(out: Path, shared: Path = SHARED_DATA, *, dates: int | None = None) -> list[dict]:
    """The Rome series as earth-search ``sentinel-2-l1c`` items with one COG per band (first ``dates`` dates)."""
    from xcloudfree.sensors import S2_BAND_NAMES

    template = _template("items_earth-search_sentinel-2-l1c.geojson", shared)
    keys = _keys_by_band(template)
    times, data, transform, crs = rome_series(shared)
    items = []
    for when, image in list(zip(times, data, strict=True))[:dates]:
        day = when.strftime("%Y%m%d")
        assets = {}
        for b, name in enumerate(S2_BAND_NAMES):
            path = write_band(out / "rome" / day / f"{name}.tif", image[b], transform=transform, crs=crs)
            assets[keys[name]] = (path, transform, image.shape[1:])
        items.append(
            make_item(
                template,
                item_id=f"S2A_ROME146_{day}_0_L1C",
                when=when,
                crs=crs,
                transform=transform,
                shape=image.shape[1:],
                assets=assets,
                properties={"s2:processing_baseline": "02.06", "eo:cloud_cover": None},
            )
        )
    return items


def slovenia_series(shared: Path = SHARED_DATA) -> dict[str, Any]:
    """The real Slovenia series: times, reflectance (time, 13, y, x), s2cloudless mask, transform, CRS.

    The eo-learn bbox gives pixels of 9.995 × 9.997 m; the transform here is the 10 m grid anchored at the bbox's
    north-west corner snapped to 10 m (a shift under 7 m), as Sentinel-2 tiles are, so a 10 m load is exact.
    """
    from rasterio.transform import Affine

    z = np.load(shared / "eolearn_slovenia" / "s2_l1c_5dates_with_s2cloudless.npz")
    bands = np.moveaxis(z["bands"], -1, 1)  # (time, band, y, x)
    left, top = (float(np.floor(z["bbox_utm"][0] / 10) * 10), float(np.ceil(z["bbox_utm"][3] / 10) * 10))
    return {
        "times": [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in z["timestamps"]],
        "band_names": [str(b) for b in z["band_names"]],
        "reflectance": bands,
        "clm": z["clm"][..., 0].astype(bool),
        "transform": Affine(10.0, 0.0, left, 0.0, -10.0, top),
        "crs": f"EPSG:{int(z['epsg'])}",
    }


def slovenia_items(out: Path, shared: Path = SHARED_DATA, *, dn_offset: int = 1000) -> list[dict]:
    """The Slovenia series as Planetary Computer ``sentinel-2-l2a`` items (12 bands + a 20 m SCL), baseline 05.00."""
    from rasterio.transform import Affine

    template = _template("items_planetarycomputer_sentinel-2-l2a.geojson", shared)
    keys = _keys_by_band(template)
    series = slovenia_series(shared)
    transform, crs = series["transform"], series["crs"]
    coarse = transform * Affine.scale(2)
    items = []
    for t, when in enumerate(series["times"]):
        stamp = when.strftime("%Y%m%dT%H%M%S")
        folder = out / "slovenia" / stamp
        assets = {}
        dn = np.clip(np.round(series["reflectance"][t] * 10000) + dn_offset, 1, 65535).astype(np.uint16)
        for b, name in enumerate(series["band_names"]):
            if name == "B10":
                continue
            path = write_band(folder / f"{name}.tif", dn[b], transform=transform, crs=crs)
            assets[keys[name]] = (path, transform, dn.shape[1:])
        scl = np.where(series["clm"][t], 9, 4).astype(np.uint8)[::2, ::2]
        path = write_band(folder / "SCL.tif", scl, transform=coarse, crs=crs)
        assets[keys["SCL"]] = (path, coarse, scl.shape)
        items.append(
            make_item(
                template,
                item_id=f"S2A_MSIL2A_{stamp}_N0500_R122_T33TVM_SLOVENIA",
                when=when,
                crs=crs,
                transform=transform,
                shape=dn.shape[1:],
                assets=assets,
                properties={"s2:processing_baseline": "05.00", "s2:mgrs_tile": "33TVM"},
            )
        )
    return items


def s1_rtc_items(
    out: Path,
    acquisitions: Sequence[tuple[datetime, float, float]],
    *,
    transform: Any,
    shape: tuple[int, int],
    crs: str,
    shared: Path = SHARED_DATA,
) -> list[dict]:
    """Synthetic S1 RTC items (real stactools ``sentinel1-rtc-aws`` item shape): ``(time, VV dB, VH dB)`` each.

    The rasters hold linear γ0 = 10^(dB / 10), float32, nodata 0, constant over the grid.
    """
    template = _template(
        "stactools_sentinel1/rtc/sentinel1-rtc-aws/2020/S1A_20200103_17RMJ_ASC/S1A_20200103_17RMJ_ASC.json", shared
    )
    items = []
    for when, vv, vh in acquisitions:
        stamp = when.strftime("%Y%m%dT%H%M%S")
        assets = {}
        for key, db in (("gamma0_vv", vv), ("gamma0_vh", vh)):
            linear = np.full(shape, 10.0 ** (db / 10.0), dtype=np.float32)
            path = write_band(out / "s1" / stamp / f"{key}.tif", linear, transform=transform, crs=crs)
            assets[key] = (path, transform, shape)
        items.append(
            make_item(
                template,
                item_id=f"S1A_{stamp}_SYNTHETIC_ASC",
                when=when,
                crs=crs,
                transform=transform,
                shape=shape,
                assets=assets,
            )
        )
    return items


# --------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rustac_command() -> str:
    """The ``rustac`` executable of this Python environment (the ``dev`` extra installs it)."""
    found = shutil.which("rustac", path=str(Path(sys.executable).parent)) or shutil.which("rustac")
    if found is None:
        raise RuntimeError("rustac not found: install the dev extra (pip install -e '.[dev]') or pip install rustac")
    return found


@contextlib.contextmanager
def serve(*collections: Path, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run ``rustac serve`` on a free port of 127.0.0.1 over the item collection files; yield its URL.

    Waits for the landing page with a bounded poll; the server is terminated on exit.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: a full pipe would block the server once it has logged enough.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [rustac_command(), "serve", "--addr", f"127.0.0.1:{port}", *map(str, collections)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"rustac serve exited with {proc.returncode}: {log.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rustac serve did not answer at {url} within {startup_timeout:g} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
