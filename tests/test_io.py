"""Scene model and GeoTIFF I/O on the real SEN12MS-CR files and on small made-up rasters."""

import dask
import numpy as np
import pytest
import rioxarray
import xarray as xr
from pyproj import Transformer

import xcloudfree as xcf
from xcloudfree.sensors import S2_BAND_NAMES, S2_L2A_BAND_NAMES

TRIPLETS = {
    # ROI, patch: EPSG
    ("ROIs1970_fall", "139", "839"): 32650,
    ("ROIs2017_winter", "112", "797"): 32631,
}


def triplet_paths(root, prefix, roi, patch):
    return {
        "s2": root / f"{prefix}_s2_cloudy/s2_cloudy_{roi}/{prefix}_s2_cloudy_{roi}_p{patch}.tif",
        "s2_clear": root / f"{prefix}_s2/s2_{roi}/{prefix}_s2_{roi}_p{patch}.tif",
        "s1": root / f"{prefix}_s1/s1_{roi}/{prefix}_s1_{roi}_p{patch}.tif",
    }


@pytest.mark.parametrize(("key", "epsg"), TRIPLETS.items())
def test_real_triplets_open_as_scenes(sen12mscr_root, key, epsg):
    paths = triplet_paths(sen12mscr_root, *key)
    ds = xcf.io.open_scene(**paths)
    assert list(ds["s2"]["band"].values) == list(S2_BAND_NAMES)
    assert list(ds["s2_clear"]["band"].values) == list(S2_BAND_NAMES)
    assert list(ds["s1"]["polarization"].values) == ["VV", "VH"]
    assert ds.rio.crs.to_epsg() == epsg
    assert ds["s2"].dtype == np.uint16 and ds["s1"].dtype == np.float32
    assert ds.sizes["x"] == ds.sizes["y"] == 256
    transforms = {name: rioxarray.open_rasterio(p).rio.transform() for name, p in paths.items()}
    assert transforms["s1"] == transforms["s2"] == transforms["s2_clear"]
    assert ds.rio.transform() == transforms["s2"]
    assert ds["s2"].attrs["product"] == "L1C" and ds["s1"].attrs["units"] == "dB"


def test_open_scene_with_chunks_is_lazy(sen12mscr_root):
    paths = triplet_paths(sen12mscr_root, "ROIs1970_fall", "139", "839")

    def refuse(*args, **kwargs):
        raise AssertionError("open_scene computed a Dask graph")

    with dask.config.set(scheduler=refuse):
        ds = xcf.io.open_scene(**paths, chunks={"x": 128, "y": 128})
        assert ds["s2"].chunks == ((13,), (128, 128), (128, 128))
        assert ds["s1"].chunks is not None
        with pytest.raises(AssertionError, match="computed"):
            ds["s2"].max().compute()  # the guard is live: computing would have been caught
    eager = xcf.io.open_scene(**paths)
    np.testing.assert_array_equal(ds["s2"].values, eager["s2"].values)


def test_real_dem_reprojects_onto_an_s2_grid(shared_data):
    dem_path = shared_data / "dem" / "rome_30m_dem.tif"
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    x0, y0 = to_utm.transform(12.49, 42.01)  # inside the DEM tile (12.45–12.55 E, 41.95–42.05 N)
    x = np.floor(x0) + 5.0 + 10.0 * np.arange(300)
    y = np.floor(y0) - 5.0 - 10.0 * np.arange(250)
    s2 = xr.DataArray(np.full((13, 250, 300), 1000, np.uint16), dims=("band", "y", "x"), coords={"x": x, "y": y})
    s2 = s2.rio.write_crs("EPSG:32633")
    dem = xcf.io.read_dem(dem_path, like=s2)
    assert dem.dims == ("y", "x") and dem.shape == (250, 300)
    assert dem.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(dem["x"].values, x)
    raw = rioxarray.open_rasterio(dem_path).values
    assert np.isfinite(dem.values).all()
    assert raw.min() <= dem.min() and dem.max() <= raw.max()
    # bilinear from 30 m to 10 m: neighbouring pixels change little (nearest would step)
    assert float(np.abs(np.diff(dem.values, axis=1)).max()) < 10.0
    scene = xcf.make_scene(s2=s2, dem=dem)
    assert "dem" in scene and scene["dem"].attrs["units"] == "metre"


def test_dem_onto_a_strided_slice_uses_the_slice_grid(shared_data):
    """A strided slice keeps its parent's stored 10 m transform; the DEM must land on the 20 m grid it shows."""
    dem_path = shared_data / "dem" / "rome_30m_dem.tif"
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(12.49, 42.01)
    x, y = np.floor(x0) + 5.0 + 10.0 * np.arange(200), np.floor(y0) - 5.0 - 10.0 * np.arange(160)
    s2 = xr.DataArray(np.ones((2, 160, 200), np.uint16), dims=("band", "y", "x"), coords={"x": x, "y": y})
    s2 = s2.rio.write_crs("EPSG:32633")
    s2 = s2.rio.write_transform(s2.rio.transform())
    coarse = s2[:, ::2, ::2]
    fresh = xr.DataArray(np.ones((2, 80, 100), np.uint16), dims=("band", "y", "x"), coords=coarse.coords)
    fresh = fresh.rio.write_crs("EPSG:32633").drop_vars("spatial_ref").rio.write_crs("EPSG:32633")
    got = xcf.io.read_dem(dem_path, like=coarse)
    want = xcf.io.read_dem(dem_path, like=fresh)
    assert got.shape == (80, 100)
    np.testing.assert_array_equal(got.values, want.values)


# --- made-up rasters for bad input -------------------------------------------------------------------------


def raster(path, data, *, crs="EPSG:32633", x0=500000.0, y0=5100000.0, res=10.0, **attrs):
    layers, h, w = data.shape
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": np.arange(1, layers + 1),
            "x": x0 + res * (np.arange(w) + 0.5),
            "y": y0 - res * (np.arange(h) + 0.5),
        },
        attrs=attrs,
    ).rio.write_crs(crs)
    da.rio.to_raster(path)
    return path


@pytest.fixture
def dn():
    rng = np.random.default_rng(0)
    return rng.integers(200, 4000, size=(13, 32, 32)).astype(np.uint16)


@pytest.fixture
def db():
    rng = np.random.default_rng(1)
    return rng.uniform(-25, -5, size=(2, 32, 32)).astype(np.float32)


def test_missing_file_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match=r"s2: expected an existing GeoTIFF file, found no file"):
        xcf.io.open_scene(s2=tmp_path / "nope.tif")


def test_band_count_fitting_no_product(tmp_path, dn):
    path = raster(tmp_path / "s2.tif", dn[:7])
    with pytest.raises(ValueError, match=r"s2: expected 13 Sentinel-2 bands.*found 7 band"):
        xcf.io.open_scene(s2=path)
    ds = xcf.io.open_scene(s2=path, bands=["B02", "B03", "B04", "B08", "B11", "B12", "B8A"])
    assert list(ds["s2"]["band"].values)[-1] == "B8A"


def test_l2a_12_bands_open_with_product_or_bands(tmp_path, dn):
    path = raster(tmp_path / "l2a.tif", dn[:12])
    with pytest.raises(ValueError, match="product='L2A'"):
        xcf.io.open_scene(s2=path)
    ds = xcf.io.open_scene(s2=path, product="L2A")
    assert list(ds["s2"]["band"].values) == list(S2_L2A_BAND_NAMES)
    assert ds["s2"].attrs["product"] == "L2A"
    ds = xcf.io.open_scene(s2=path, bands=list(S2_L2A_BAND_NAMES))
    assert "B10" not in ds["s2"]["band"].values


def test_three_band_s1(tmp_path, dn, db):
    s2 = raster(tmp_path / "s2.tif", dn)
    s1 = raster(tmp_path / "s1.tif", np.concatenate([db, db[:1]]))
    with pytest.raises(ValueError, match=r"s1: expected 2 layers \(VV, VH"):
        xcf.io.open_scene(s2=s2, s1=s1)


def test_s1_on_another_grid(tmp_path, dn, db):
    s2 = raster(tmp_path / "s2.tif", dn)
    shifted = raster(tmp_path / "s1_shift.tif", db, x0=500100.0)
    with pytest.raises(ValueError, match=r"s1: expected the grid of s2 .*origin \(500000.00.*found .*500100.00"):
        xcf.io.open_scene(s2=s2, s1=shifted)
    other_crs = raster(tmp_path / "s1_crs.tif", db, crs="EPSG:32632")
    with pytest.raises(ValueError, match=r"s1: expected the grid of s2 \(CRS EPSG:32633.*found CRS EPSG:32632"):
        xcf.io.open_scene(s2=s2, s1=other_crs)


def test_s2_scaled_to_reflectance(tmp_path, dn):
    path = raster(tmp_path / "refl.tif", dn.astype(np.float32) / 10000)
    with pytest.raises(ValueError, match=r"s2: expected digital numbers .* look like 0–1 reflectance"):
        xcf.io.open_scene(s2=path)


def test_s1_linear_is_refused(tmp_path, dn, db):
    s2 = raster(tmp_path / "s2.tif", dn)
    s1 = raster(tmp_path / "s1.tif", (10 ** (db / 10)).astype(np.float32))
    with pytest.raises(ValueError, match="s1: expected backscatter in dB.*look linear"):
        xcf.io.open_scene(s2=s2, s1=s1)


def test_nans_are_refused_unless_tolerated(tmp_path, dn, db):
    db = db.copy()
    db[0, :4, :4] = np.nan
    s2 = raster(tmp_path / "s2.tif", dn)
    s1 = raster(tmp_path / "s1.tif", db)
    with pytest.raises(ValueError, match=r"s1: expected at most 0.00% NaN \(nodata\), found 16 NaN"):
        xcf.io.open_scene(s2=s2, s1=s1)
    ds = xcf.io.open_scene(s2=s2, s1=s1, max_nan_fraction=0.01)
    assert int(ds["s1"].isnull().sum()) == 16


def test_make_scene_from_numpy_and_validation_errors():
    rng = np.random.default_rng(2)
    ds = xcf.make_scene(
        s2=rng.integers(0, 5000, (13, 8, 8)).astype(np.uint16), s1=rng.uniform(-20, -5, (2, 8, 8)).astype(np.float32)
    )
    assert list(ds["s1"]["polarization"].values) == ["VV", "VH"]
    assert ds.cloudfree.validate() is ds
    with pytest.raises(ValueError, match=r"s1: expected polarization names from \['VV', 'VH'\], found \['HH', 'HV'\]"):
        xcf.validate_scene(ds.assign_coords(polarization=["HH", "HV"]))
    with pytest.raises(ValueError, match=r"s2_clear: expected the bands of s2 \['B01'.*found \['B01'.*'B8A', 'B09'\]"):
        xcf.make_scene(s2=ds["s2"], s2_clear=ds["s2"].drop_sel(band=["B10", "B11", "B12"]))
    with pytest.raises(ValueError, match=r"dem: expected a 2-D array"):
        xcf.make_scene(s2=ds["s2"].values, dem=np.zeros((1, 2, 8, 8)))
    with pytest.raises(ValueError, match=r"s1: expected the grid of s2 .*shape 8×8.*found .*shape 4×4"):
        xcf.make_scene(s2=ds["s2"].values, s1=ds["s1"].values[:, :4, :4])
    s2 = ds["s2"]
    assert s2.cloudfree.validate() is s2


# --- writing -------------------------------------------------------------------------------------------------


def test_write_cog_from_dask_keeps_crs_and_is_atomic(tmp_path):
    scene = xcf.datasets.synthetic_scene(96, seed=3, chunks={"x": 32, "y": 32})
    out = xcf.io.write_cog(scene["s2"], tmp_path / "sub" / "s2.tif")
    assert sorted(p.name for p in out.parent.iterdir()) == ["s2.tif"]  # no temporary left behind
    back = xcf.io.read_s2(out)
    assert back.rio.crs == scene.rio.crs and back.rio.transform() == scene.rio.transform()
    assert list(back["band"].values) == list(S2_BAND_NAMES)  # band names kept as descriptions
    np.testing.assert_array_equal(back.values, scene["s2"].values)
    import rasterio

    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_write_cog_overviews_are_nan_means_of_the_full_resolution(tmp_path):
    import rasterio

    scene = xcf.datasets.synthetic_scene(150, seed=3, chunks={"x": 64, "y": 64})  # odd halvings: 75, 38
    reflectance = (scene["s2"] / 10000).astype("float32")
    reflectance = reflectance.where(reflectance.x > reflectance.x[38])  # NaN columns, then a half-covered window
    mask = (scene["s2"].isel(band=0) > 1000).rio.write_crs(scene.rio.crs)
    out = xcf.io.write_cog(reflectance, tmp_path / "r.tif", blocksize=32)
    classes = xcf.io.write_cog(mask, tmp_path / "m.tif", blocksize=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "r.tif"]  # levels and their .ovr removed
    full = reflectance.values.astype("float64")
    with rasterio.open(out) as src:
        assert src.overviews(1) == [2, 4, 8]  # halvings while wider than a block: 75, 38, 19
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        level = src.read(out_shape=(13, 75, 75))
        with pytest.warns(RuntimeWarning):  # the all-NaN windows
            expected = np.nanmean(full.reshape(13, 75, 2, 75, 2), axis=(2, 4))
        np.testing.assert_allclose(level, expected, rtol=1e-6)
        assert np.isnan(level[:, :, :19]).all() and not np.isnan(level[:, :, 19:]).any()
        coarsest = src.read(1, out_shape=(19, 19))
        assert np.isfinite(coarsest[:, 5:]).all()
    with rasterio.open(classes) as src:
        assert src.overviews(1) == [2, 4, 8] and src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1, out_shape=(75, 75)), mask.values[::2, ::2])


def test_write_cog_failure_leaves_previous_file(tmp_path):
    scene = xcf.datasets.synthetic_scene(64, seed=4)
    path = xcf.io.write_cog(scene["dem"], tmp_path / "dem.tif")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="expected a CRS"):
        xcf.io.write_cog(xr.DataArray(np.zeros((4, 4)), dims=("y", "x")), path)
    lazy = scene["s2"].chunk({"x": 32})
    broken = lazy.map_blocks(_boom, template=lazy)
    with pytest.raises(RuntimeError, match="boom"):
        xcf.io.write_cog(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif"]


def _boom(block):
    raise RuntimeError("boom")


def test_write_zarr_roundtrip_replaces_atomically(tmp_path):
    scene = xcf.datasets.synthetic_scene(64, seed=5, chunks={"x": 32, "y": 32})
    path = xcf.io.write_zarr(scene, tmp_path / "scene.zarr")
    back = xr.open_zarr(path)
    assert back.rio.crs == scene.rio.crs
    np.testing.assert_array_equal(back["s2"].values, scene["s2"].values)
    ragged = scene.isel(x=slice(3, None))  # chunks (29, 32): irregular, which Zarr cannot store as they are
    np.testing.assert_array_equal(
        xr.open_zarr(xcf.io.write_zarr(ragged, tmp_path / "r.zarr"))["s2"].values, ragged["s2"].values
    )
    (tmp_path / "r.zarr").rename(tmp_path / "r.kept")
    xcf.io.write_zarr(scene[["dem"]], path)  # overwrite
    assert set(xr.open_zarr(path).data_vars) == {"dem"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.kept", "scene.zarr"]


def test_write_zarr_progress_bar_writes_the_same_store(tmp_path, capfd):
    scene = xcf.datasets.synthetic_scene(64, seed=6, chunks={"x": 32, "y": 32})
    path = xcf.io.write_zarr(scene[["s2"]], tmp_path / "p.zarr", progress=True)
    assert "100%" in capfd.readouterr().err
    np.testing.assert_array_equal(xr.open_zarr(path)["s2"].values, scene["s2"].values)
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]
