"""STAC input (xcloudfree.io.stac) against a real STAC API server (rustac) serving local COGs of real data.

The catalogue (``tests/stac_server.py``): the real Rome L1C series in earth-search ``sentinel-2-l1c`` item shape,
the real Slovenia series in Planetary Computer ``sentinel-2-l2a`` item shape (DN + 1000, baseline 05.00, SCL from
the real s2cloudless mask) and synthetic Sentinel-1 RTC items (real item shape, constant backscatter per date).
Provider conventions are checked on the real provider item JSON of ``../shared/data/stac``. Nothing uses the
network: the server listens on 127.0.0.1 and the asset hrefs are local files.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import stac_server as server
import xarray as xr
from rasterio.transform import Affine

from xcloudfree.io import stac

ROME_BBOX = [12.715, 42.055, 12.725, 42.065]  # a 112 × 113 px part of the 256 × 256 Rome patch


def _features(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return data["features"] if data.get("type") == "FeatureCollection" else [data]


@pytest.fixture(scope="module")
def catalogue(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stac")
    slovenia = server.slovenia_series(shared_data)
    grid = slovenia["transform"]
    # S1 on a 20 m grid reaching 40 m beyond the S2 area: reprojection without edge effects.
    s1_transform = Affine(20.0, 0.0, grid.c - 40.0, 0.0, -20.0, grid.f + 40.0)
    t = slovenia["times"]
    acquisitions = [
        (t[0] - timedelta(days=1), -8.0, -15.0),  # 07-11: lag −1 d
        (t[1] - timedelta(days=5), -10.0, -17.0),  # 07-31: −5 d loses to ...
        (t[1] + timedelta(days=2), -9.0, -16.0),  # ... +2 d
        (t[3] + timedelta(days=6), -11.0, -18.0),  # 08-30: +6 d (window edge); 09-09: −4 d; 08-20: none
    ]
    files = [
        server.write_item_collection(server.rome_items(root, shared_data), root / "rome.json"),
        server.write_item_collection(server.slovenia_items(root, shared_data), root / "slovenia.json"),
        server.write_item_collection(
            server.s1_rtc_items(
                root, acquisitions, transform=s1_transform, shape=(56, 55), crs=slovenia["crs"], shared=shared_data
            ),
            root / "s1.json",
        ),
    ]
    with server.serve(*files) as url:
        yield SimpleNamespace(url=url, root=root, files=files, slovenia=slovenia, acquisitions=acquisitions)


# ------------------------------------------------------------------------- provider conventions (real JSON)


def test_earth_search_items_map_common_names_and_offsets(shared_data: Path) -> None:
    folder = shared_data / "stac"
    l1c = _features(folder / "items_earth-search_sentinel-2-l1c.geojson")[0]
    assert stac.s2_product(l1c) == "L1C"
    keys = stac.s2_band_assets(l1c)
    assert list(keys) == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    assert (keys["B04"], keys["B8A"], keys["B10"], keys["B11"]) == ("red", "nir08", "cirrus", "swir16")
    assert stac.s2_offset(l1c) == -1000.0  # baseline 05.11, earth-search leaves L1C as delivered

    l2a = _features(folder / "items_earth-search_sentinel-2-l2a.geojson")[0]
    keys = stac.s2_band_assets(l2a)
    assert stac.s2_product(l2a) == "L2A" and "B10" not in keys
    assert (keys["B04"], keys["SCL"]) == ("red", "scl")  # the COG, not red-jp2
    assert l2a["properties"]["earthsearch:boa_offset_applied"] is True and stac.s2_offset(l2a) == 0.0

    c1 = _features(folder / "items_earth-search_sentinel-2-c1-l2a.geojson")[0]
    assert stac.s2_product(c1) == "L2A" and stac.s2_band_assets(c1)["B12"] == "swir22"
    assert stac.s2_offset(c1) == -1000.0  # collection 1: baseline 05.11, offset kept in the data

    legacy = _features(folder / "items_earth-search_sentinel-s2-l2a-cogs.geojson")[0]
    assert stac.s2_band_assets(legacy)["B04"] == "B04" and stac.s2_offset(legacy) == 0.0


def test_planetary_computer_and_stactools_items(shared_data: Path) -> None:
    folder = shared_data / "stac"
    pc = _features(folder / "items_planetarycomputer_sentinel-2-l2a.geojson")[0]
    keys = stac.s2_band_assets(pc)
    assert stac.s2_product(pc) == "L2A" and len(keys) == 13  # 12 bands + SCL
    assert (keys["B04"], keys["B8A"], keys["SCL"]) == ("B04", "B8A", "SCL")
    assert pc["properties"]["s2:processing_baseline"] == "02.12" and stac.s2_offset(pc) == 0.0
    newer = json.loads(json.dumps(pc))
    newer["properties"]["s2:processing_baseline"] = "04.00"
    assert stac.s2_offset(newer) == -1000.0  # Planetary Computer does not remove the offset

    examples = folder / "stactools_sentinel2" / "examples"
    l1c = _features(next(examples.glob("sentinel2-l1c-example/*/*.json")))[0]
    l2a = _features(next(examples.glob("sentinel2-l2a-example/*/*.json")))[0]
    assert stac.s2_product(l1c) == "L1C" and len(stac.s2_band_assets(l1c)) == 13
    assert stac.s2_product(l2a) == "L2A" and "SCL" in stac.s2_band_assets(l2a)


def test_sentinel1_items_polarisations_and_units(shared_data: Path) -> None:
    folder = shared_data / "stac"
    rtc = _features(next((folder / "stactools_sentinel1" / "rtc").rglob("S1A_*_ASC.json")))[0]
    assert stac.s1_band_assets(rtc) == {"VV": "gamma0_vv", "VH": "gamma0_vh"}
    assert stac.s1_units(rtc) == "linear"
    grd = _features(next((folder / "stactools_sentinel1" / "grd").glob("S1A_IW_GRDH*/*.json")))[0]
    assert stac.s1_band_assets(grd) == {"VV": "vv", "VH": "vh"}
    assert stac.s1_units(grd) == "amplitude"
    hh_only = _features(folder / "items_earth-search_sentinel-1-grd.geojson")[0]
    assert stac.s1_band_assets(hh_only) == {}
    # A Planetary Computer RTC item carries the collection's item_assets (float32 γ0, nodata −32768).
    collection = json.loads((folder / "collection_planetarycomputer_sentinel-1-rtc.json").read_text())
    pc_rtc = {
        "id": "S1A_IW_GRDH_PC_RTC",
        "collection": collection["id"],
        "properties": {"sar:product_type": "RTC", "sar:polarizations": ["VV", "VH"]},
        "assets": collection["item_assets"],
    }
    assert stac.s1_band_assets(pc_rtc) == {"VV": "vv", "VH": "vh"} and stac.s1_units(pc_rtc) == "linear"


def test_match_s1_nearest_within_window() -> None:
    s2 = np.array(["2020-01-10", "2020-01-20", "2020-02-01"], dtype="datetime64[ns]")
    s1 = np.array(["2020-01-13", "2020-01-07", "2020-01-17", "2020-01-23"], dtype="datetime64[ns]")
    index, lag = stac.match_s1(s2, s1, window_days=6)
    # 01-10: 01-07 and 01-13 are both 3 d away → the earlier; 01-20: 01-17 and 01-23 tie → 01-17; 02-01: none
    assert index.tolist() == [1, 2, -1]
    np.testing.assert_array_equal(lag, [-3.0, -3.0, np.nan])
    assert stac.match_s1(s2, s1[:0])[0].tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="window_days"):
        stac.match_s1(s2, s1, window_days=-1)


# --------------------------------------------------------------------------------- against the STAC server


def test_search_and_load_rome_exactly(catalogue, shared_data: Path) -> None:
    items = stac.search(catalogue.url, collections="sentinel-2-l1c", bbox=ROME_BBOX, datetime="2018-01-01/2018-12-31")
    assert len(items) == 15 and [i.properties["datetime"][:10] for i in items][:2] == ["2018-01-06", "2018-01-31"]
    spring = stac.search(catalogue.url, collections=["sentinel-2-l1c"], datetime="2018-03-01/2018-05-31")
    assert [i.id for i in spring] == ["S2A_ROME146_20180322_0_L1C", "S2A_ROME146_20180411_0_L1C",
                                      "S2A_ROME146_20180506_0_L1C", "S2A_ROME146_20180531_0_L1C"]  # fmt: skip

    # Default resolution 10 m on the items' EPSG:4326 grid = the native 8.983e-05° pixels: no resampling.
    ts = stac.load(items, chunks={"x": 128, "y": 128})
    times, data, transform, _ = server.rome_series(shared_data)
    assert ts["s2"].dims == ("time", "band", "y", "x") and ts["s2"].chunks is not None
    assert ts["time"].dtype == np.dtype("datetime64[ns]") and ts.sizes["time"] == 15
    assert ts["band"].values.tolist()[10] == "B10" and ts.rio.crs.to_epsg() == 4326
    assert ts.rio.transform().almost_equals(transform)
    assert ts["s2"].attrs["product"] == "L1C" and ts["s2"].attrs["offset"] == 0
    np.testing.assert_array_equal(ts["s2_offset"].values, 0)
    np.testing.assert_array_equal(ts["s2"].isel(time=[0, 7, 14]).values, data[[0, 7, 14]].astype(np.float32))


def test_load_l2a_offset_scl_and_s1_matching(catalogue) -> None:
    """S2 L2A items of baseline 05.00 (DN + 1000) with a 20 m SCL, and synthetic S1 RTC items (linear γ0)."""
    s2_items = stac.search(catalogue.url, collections="sentinel-2-l2a", datetime="2015-07-01/2015-09-30")
    s1_items = stac.search(catalogue.url, collections="sentinel1-rtc-aws", datetime="2015-06-25/2015-09-20")
    assert len(s2_items) == 5 and len(s1_items) == 4
    with pytest.warns(UserWarning, match=r"no Sentinel-1 acquisition within ±6 days of S2 date\(s\) \['2015-08-20'\]"):
        ts = stac.load(s2_items, s1_items, chunks={"x": 128, "y": 128})
    series = catalogue.slovenia
    names = ts["band"].values.tolist()
    assert "B10" not in names and len(names) == 12
    expected = np.round(series["reflectance"] * 10000)[:, [series["band_names"].index(b) for b in names]]
    s2 = ts["s2"].values
    np.testing.assert_array_equal(s2, expected.astype(np.float32))  # the −1000 offset is removed
    np.testing.assert_array_equal(ts["s2_offset"].values, -1000.0)

    scl = ts["scl"].values
    assert scl.dtype == np.uint8 and set(np.unique(scl)) == {4, 9}  # categorical: no blended classes
    coarse = np.where(series["clm"], 9, 4)[:, ::2, ::2]
    nearest = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)[:, : scl.shape[1], : scl.shape[2]]
    np.testing.assert_array_equal(scl, nearest)

    np.testing.assert_allclose(ts["s1_lag_days"].values, [-1, 2, np.nan, 6, -3.996], atol=1e-3)
    s1 = ts["s1"].values
    assert ts["s1"].dims == ("time", "polarization", "y", "x") and ts["s1"].attrs["units"] == "dB"
    for t, (vv, vh) in enumerate([(-8, -15), (-9, -16), (None, None), (-11, -18), (-11, -18)]):
        if vv is None:
            assert np.isnan(s1[t]).all() and np.isnat(ts["s1_time"].values[t])
        else:
            np.testing.assert_allclose(s1[t, 0], vv, atol=1e-4)
            np.testing.assert_allclose(s1[t, 1], vh, atol=1e-4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wide = stac.load(s2_items, s1_items, s1_window_days=16, chunks={})
    assert not [w for w in caught if "Sentinel-1" in str(w.message)]
    # 08-20 → 09-05 (+16 d) once the window allows it; chunks={} loads into memory
    assert abs(wide["s1_lag_days"].values[2] - 16.0) < 0.01 and wide["s1"].chunks is None
    np.testing.assert_allclose(wide["s1"].values[2, 0], -11.0, atol=1e-4)


def test_fill_end_to_end(catalogue, shared_data: Path) -> None:
    from xcloudfree.timeseries import FILL_SOURCES, fill

    items = stac.search(catalogue.url, collections="sentinel-2-l1c", bbox=ROME_BBOX, datetime="2018-01-01/2018-12-31")
    # In memory: the series is small, and the Dask path of the loader is checked above.
    ts = stac.load(items, bbox=ROME_BBOX, chunks={})
    out = fill(ts, method="linear")
    _, data, transform, _ = server.rome_series(shared_data)
    col = round((ts["x"].values[0] - transform.c) / transform.a - 0.5)
    row = round((ts["y"].values[0] - transform.f) / transform.e - 0.5)
    source = data[:, :, row : row + ts.sizes["y"], col : col + ts.sizes["x"]].astype(np.float32)

    flags = out["fill_source"].values
    observed = flags == 0
    assert out["fill_source"].attrs["flag_meanings"] == " ".join(FILL_SOURCES.values())
    assert 0.2 < observed.mean() < 0.95 and (flags == 1).any()
    filled = out["s2_filled"].values
    np.testing.assert_array_equal(np.moveaxis(filled, 1, -1)[observed], np.moveaxis(source, 1, -1)[observed])
    temporal = np.broadcast_to((flags == 1)[:, None], filled.shape)
    assert np.isfinite(filled[temporal]).all()
    assert out["mask"].values[1].mean() > 0.9 and (flags[1] == 1).mean() > 0.9  # 2018-01-31 is overcast
    assert out.rio.crs.to_epsg() == 4326


def test_dem_from_path_or_dataarray(catalogue, tmp_path: Path) -> None:
    """A synthetic DEM ramp (metres, 30 m, EPSG:32633) lands bilinearly on the S2 grid."""
    items = _features(catalogue.files[1])[:1]
    series = catalogue.slovenia
    grid = series["transform"]
    ramp_transform = Affine(30.0, 0.0, grid.c - 300.0, 0.0, -30.0, grid.f + 300.0)
    yy, xx = np.mgrid[0:60, 0:60].astype(np.float32)
    ramp = xx * 3.0 + yy * 0.5 + 200.0  # metres
    path = server.write_band(tmp_path / "dem.tif", ramp, transform=ramp_transform, crs=series["crs"], nodata=-9999)
    ts = stac.load(items, dem=path, chunks={"x": 64, "y": 64})
    cols = (ts["x"].values - ramp_transform.c) / 30.0 - 0.5
    rows = (ts["y"].values - ramp_transform.f) / -30.0 - 0.5
    expected = cols[None, :] * 3.0 + rows[:, None] * 0.5 + 200.0
    assert ts["dem"].dims == ("y", "x") and ts["dem"].attrs["units"] == "m"
    np.testing.assert_allclose(ts["dem"].values, expected, atol=1e-2)
    da = xr.DataArray(ramp, dims=("y", "x"), coords={"y": ramp_transform.f - 15 - 30 * np.arange(60),
                                                       "x": ramp_transform.c + 15 + 30 * np.arange(60)})  # fmt: skip
    da = da.rio.write_crs(series["crs"])
    ts2 = stac.load(items, dem=da, chunks={})
    np.testing.assert_allclose(ts2["dem"].values, expected, atol=1e-2)


def test_cli_fill_writes_a_cube(catalogue, shared_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xcloudfree.cli import app

    out = tmp_path / "cube.zarr"
    bbox = "12.716,42.056,12.72,42.06"
    args = ["fill", "--stac", catalogue.url, "--collections", "sentinel-2-l1c", "--bbox", bbox]
    args += ["--datetime", "2018-05-01/2018-07-31", "--out", str(out), "--method", "linear,nearest", "--chunk", "64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sentinel-2: 4 item(s)" in result.output and f"cube: {out}" in result.output
    cube = xr.open_zarr(out)
    assert {"s2", "s2_filled", "mask", "fill_source", "fill_gap_days"} <= set(cube.data_vars)
    assert cube.sizes["time"] == 4 and cube["fill_source"].attrs["fill_methods"] == "linear,nearest"
    observed = (cube["fill_source"] == 0).values
    s2, filled = cube["s2"].values, cube["s2_filled"].values
    np.testing.assert_array_equal(np.moveaxis(filled, 1, -1)[observed], np.moveaxis(s2, 1, -1)[observed])
    assert not list(tmp_path.glob(".*"))  # written atomically: no staging store left behind

    bad = CliRunner().invoke(app, [*args[:6], "12.7,42.0", *args[7:]])
    assert bad.exit_code == 2 and "--bbox: expected min_lon,min_lat,max_lon,max_lat" in bad.output


# ------------------------------------------------------------------------------------------------- errors


def test_unreadable_assets_name_item_and_asset(catalogue) -> None:
    items = _features(catalogue.files[0])[:2]
    missing = json.loads(json.dumps(items))
    missing[1]["assets"]["red"]["href"] = (catalogue.root / "nowhere" / "B04.tif").as_uri()
    with pytest.raises(stac.AssetReadError, match=r"asset 'red' of item 'S2A_ROME146_20180131_0_L1C'.*no such file"):
        stac.load(missing, chunks={"x": 128, "y": 128})

    closed = f"http://127.0.0.1:{server.free_port()}/B04.tif"  # nothing listens there
    first = json.loads(json.dumps(items))
    first[0]["assets"]["coastal"]["href"] = closed
    start = time.monotonic()
    with pytest.raises(stac.AssetReadError, match=r"asset 'coastal' of item 'S2A_ROME146_20180106_0_L1C'"):
        stac.load(first, chunks={"x": 128, "y": 128})  # the first remote asset is probed at load time
    later = json.loads(json.dumps(items))
    later[1]["assets"]["red"]["href"] = closed
    ts = stac.load(later, chunks={"x": 128, "y": 128}, timeout=5)
    with pytest.raises(stac.AssetReadError, match=r"asset 'red' of item 'S2A_ROME146_20180131_0_L1C'.*127\.0\.0\.1"):
        ts["s2"].isel(time=1).sel(band="B04").compute()  # the others fail when read, in the Dask task
    assert time.monotonic() - start < 30


def test_bad_inputs_are_named(catalogue, shared_data: Path) -> None:
    with pytest.raises(ConnectionError, match="url: could not search the STAC API"):
        stac.search(f"http://127.0.0.1:{server.free_port()}", collections="x", timeout=5)
    with pytest.raises(ValueError, match="bbox: expected min lon < max lon"):
        stac.search(catalogue.url, bbox=[13, 42, 12, 43])
    with pytest.raises(ValueError, match="items_s2: expected at least one STAC item"):
        stac.load([])
    rome = _features(catalogue.files[0])[:1]
    with pytest.raises(ValueError, match=r"bands: expected names from .* found \['B13'\]"):
        stac.load(rome, bands=["B13"])
    mixed = rome + _features(catalogue.files[1])[:1]
    with pytest.raises(ValueError, match="items_s2: expected one product level"):
        stac.load(mixed)
    grd = _features(next((shared_data / "stac" / "stactools_sentinel1" / "grd").glob("S1A_IW_GRDH*/*.json")))
    with pytest.raises(ValueError, match="items_s1: item .* uncalibrated GRD amplitude"):
        stac.load(rome, grd)
