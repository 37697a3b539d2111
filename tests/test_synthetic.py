"""Synthetic scenes and procedural clouds: deterministic, plausible, georeferenced."""

import numpy as np
import pytest
import xarray as xr

import xcloudfree as xcf
from xcloudfree.datasets import LAND_COVER, copy_paste_clouds, perlin_clouds, perlin_noise


@pytest.fixture(scope="module")
def scene():
    return xcf.datasets.synthetic_scene(256, seed=7, cloud_cover=0.4)


def ratio(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a - b) / (a + b)


def test_deterministic_by_seed(scene):
    again = xcf.datasets.synthetic_scene(256, seed=7, cloud_cover=0.4)
    other = xcf.datasets.synthetic_scene(256, seed=8, cloud_cover=0.4)
    xr.testing.assert_identical(scene, again)
    assert not np.array_equal(scene["s2"].values, other["s2"].values)


def test_layout_grid_and_truth(scene):
    assert scene["s2"].dims == ("band", "y", "x") and scene["s2"].dtype == np.uint16
    assert scene["s1"].dims == ("polarization", "y", "x") and scene["s1"].dtype == np.float32
    assert set(scene.data_vars) >= {"s2", "s2_clear", "s1", "dem", "cloud_truth", "shadow_truth"}
    assert scene.rio.crs.to_epsg() == 32633  # UTM 33N
    t = scene.rio.transform()
    assert (t.a, t.e, t.c, t.f) == (10.0, -10.0, 500000.0, 5100000.0)
    assert scene["cloud_truth"].mean() == pytest.approx(0.4, abs=0.02)
    assert not (scene["cloud_truth"] & scene["shadow_truth"]).any()
    assert 0.01 < float(scene["shadow_truth"].mean()) < 0.3
    xcf.validate_scene(scene)
    rect = xcf.datasets.synthetic_scene((100, 70), seed=1)
    assert (rect.sizes["y"], rect.sizes["x"]) == (100, 70)


def test_spectra_are_plausible(scene):
    clear = scene["s2_clear"]
    ndvi = ratio(clear.sel(band="B08"), clear.sel(band="B04"))
    lc = scene["landcover"]
    assert float(ndvi.where(lc == 1).median()) > 0.5  # forest
    assert float(ndvi.where(lc == 2).quantile(0.9)) > 0.5  # well-grown crop parcels
    assert float(ndvi.where(lc == 0).median()) < 0  # water
    nir = clear.sel(band="B08")
    assert float(nir.where(lc == 0).median()) < 0.3 * float(nir.where(lc == 1).median())  # water: low NIR
    assert 20 < float(clear.drop_sel(band="B10").min()) and float(clear.max()) < 10000  # L1C DN range
    assert 0 < float(clear.sel(band="B10").min()) and float(clear.sel(band="B10").max()) < 100  # clear-sky cirrus


def test_clouds_bright_and_shadows_dark(scene):
    cloudy, clear = scene["s2"].astype(float), scene["s2_clear"].astype(float)
    rgb = cloudy.sel(band=["B02", "B03", "B04"]).mean("band")
    thick = scene["cloud_opacity"] > 0.8
    assert float(rgb.where(thick).mean()) > 5000
    assert float(rgb.where(thick).mean()) > 4 * float(rgb.where(~scene["cloud_truth"]).mean())
    b10 = cloudy.sel(band="B10")
    assert float(b10.where(thick).mean()) > 20 * float(b10.where(~scene["cloud_truth"]).mean())  # cirrus band
    # thin margins exist between clear and thick
    margin = (scene["cloud_opacity"] > 0.1) & (scene["cloud_opacity"] < 0.5)
    assert float(margin.mean()) > 0.02
    # shadows: darker than the same ground when clear, and darker than their unshadowed surroundings
    shadow = scene["shadow_truth"]
    nir, nir_clear = cloudy.sel(band="B08"), clear.sel(band="B08")
    assert float((nir / nir_clear).where(shadow).mean()) < 0.7
    open_ground = ~shadow & ~scene["cloud_truth"]
    assert float(nir.where(shadow).mean()) < 0.75 * float(nir.where(open_ground).mean())
    # outside clouds and shadows the cloudy image is the clear one (plus sensor noise)
    diff = (cloudy - clear).where(open_ground & (scene["cloud_opacity"] == 0))
    assert float(abs(diff).mean()) < 20


def test_s1_backscatter_by_class(scene):
    vv = scene["s1"].sel(polarization="VV")
    lc = scene["landcover"]
    water, forest, urban = (float(vv.where(lc == k).median()) for k in (0, 1, 3))
    assert water < -15 < forest < urban
    assert float(scene["s1"].sel(polarization="VH").median()) < float(vv.median())


def test_snow_option_and_land_cover_codes():
    snowy = xcf.datasets.synthetic_scene(128, seed=2, cloud_cover=0.0, snow=True)
    assert set(np.unique(snowy["landcover"].values)) <= set(LAND_COVER)
    snow = snowy["landcover"] == 5
    assert snow.any() and not snowy["cloud_truth"].any()
    green, swir = snowy["s2_clear"].sel(band="B03"), snowy["s2_clear"].sel(band="B11")
    assert float(ratio(green, swir).where(snow).median()) > 0.8  # NDSI of snow


def test_perlin_clouds_cover_and_range():
    for cover in (0.1, 0.5, 0.9):
        alpha = perlin_clouds((200, 300), seed=1, cover=cover)
        assert alpha.shape == (200, 300) and alpha.dtype == np.float32
        assert 0.0 <= alpha.min() and alpha.max() <= 1.0
        assert (alpha >= 0.1).mean() == pytest.approx(cover, abs=0.01)
    np.testing.assert_array_equal(perlin_clouds(64, seed=3), perlin_clouds(64, seed=3))
    assert not perlin_clouds(64, cover=0.0).any() and perlin_clouds(64, cover=1.0).all()
    with pytest.raises(ValueError, match="cover"):
        perlin_clouds(64, cover=1.5)
    noise = perlin_noise((128, 128), seed=0, scale=32)
    assert abs(float(noise.mean())) < 1e-5 and float(noise.std()) == pytest.approx(1.0, rel=1e-4)
    # smooth: neighbouring pixels correlate strongly
    assert np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1] > 0.9


def test_copy_paste_clouds(scene):
    clear = scene["s2_clear"].values.astype(np.float32)
    cloudy = scene["s2"].values.astype(np.float32)
    m = scene["cloud_opacity"].values
    out = copy_paste_clouds(clear, cloudy, m)
    np.testing.assert_allclose(out[:, m == 0], clear[:, m == 0])
    np.testing.assert_allclose(out[:, m == 1], cloudy[:, m == 1])
    da = copy_paste_clouds(scene["s2_clear"].astype("float32"), scene["s2"].astype("float32"), scene["cloud_opacity"])
    np.testing.assert_allclose(da.values, out, rtol=1e-6)
    with pytest.raises(ValueError, match="cloud_map: expected the spatial shape"):
        copy_paste_clouds(clear, cloudy, m[:10])
