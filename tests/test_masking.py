"""Cloud and shadow masks: parity with the reference outputs, chunking invariance, invalid data, inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rioxarray
import xarray as xr

import xcloudfree as xcf
from xcloudfree import masking
from xcloudfree.masking import s2cloudless as s2c_backend


def _real_images(shared_data: Path) -> list[tuple[Path, Path]]:
    """Every real S2 GeoTIFF with its reference npz (npz name = tif stem); fails if any reference is unmatched."""
    refs = sorted((shared_data / "reference" / "masks").glob("*.npz"))
    tifs = {p.stem: p for p in (shared_data / "sen12mscr").rglob("*.tif")}
    assert refs, "no reference masks in ../shared/data/reference/masks"
    missing = [r.stem for r in refs if r.stem not in tifs]
    assert not missing, f"reference masks without their image: {missing}"
    return [(tifs[r.stem], r) for r in refs]


@pytest.fixture(scope="module")
def real_images(shared_data):
    return _real_images(shared_data)


@pytest.fixture(scope="module")
def scene():
    return xcf.datasets.synthetic_scene(size=(1000, 700), seed=1, cloud_cover=0.4)


def _combined(masks: xr.Dataset) -> np.ndarray:
    """The reference encoding: 1 cloud, −1 shadow, 0 clear."""
    return np.where(masks["cloud"], 1, np.where(masks["shadow"], -1, 0))


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars) == {"cloud_probability", "cloud", "shadow", "mask"}
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)  # NaN == NaN here


# ------------------------------------------------------------------------------------------- reference parity
def test_dsen2cr_and_uncrtaints_match_reference_on_every_real_image(real_images):
    assert len(real_images) >= 30
    worst_score = worst_unc = 0.0
    for tif, ref in real_images:
        s2 = rioxarray.open_rasterio(tif)
        z = np.load(ref)
        masks = masking.detect(s2, "dsen2cr")
        worst_score = max(worst_score, float(np.abs(masks.cloud_probability.values - z["dsen2cr_cloud_score"]).max()))
        agree = (_combined(masks) == z["dsen2cr_cloud_shadow_mask"]).mean()
        assert agree >= 0.9999, f"{tif.name}: combined mask agrees on {agree:.6f} of pixels"
        unc = masking.detect(s2, "uncrtaints")
        worst_unc = max(worst_unc, float(np.abs(unc.cloud_probability.values - z["uncrtaints_cloud_score"]).max()))
    assert worst_score <= 1e-5 and worst_unc <= 1e-5, (worst_score, worst_unc)


def test_shadow_statistics_scene_and_window_agree_on_one_patch(real_images):
    tif = next(t for t, _ in real_images if "cloudy_85_p753" in t.name)
    s2 = rioxarray.open_rasterio(tif)
    window = masking.detect(s2, "dsen2cr", shadow_stats="window")
    scene = masking.detect(s2, "dsen2cr", shadow_stats="scene")
    assert window.shadow.any()
    assert (_combined(window) == _combined(scene)).mean() >= 0.9999


def test_s2cloudless_matches_the_package_reference(real_images):
    # The LightGBM model costs ~10 µs per pixel here: three images (cloudy, partly cloudy, clear) in the tests,
    # all of them in bench/bench_masking.py --parity.
    chosen = [p for p in real_images if any(k in p[0].name for k in ("fall_s2_cloudy_139", "cloudy_85_p753", "_112_"))]
    assert len(chosen) >= 3
    for tif, ref in chosen:
        z = np.load(ref)
        masks = masking.detect(
            rioxarray.open_rasterio(tif), "s2cloudless", threshold=0.4, average_over=4, dilation_size=2
        )
        assert np.abs(masks.cloud_probability.values - z["s2cloudless_prob"]).max() <= 1e-4
        np.testing.assert_array_equal(masks.cloud.values, z["s2cloudless_mask_t04_a4_d2"].astype(bool), tif.name)


def test_carf_drops_shadows_and_keeps_the_clouds(real_images):
    s2 = rioxarray.open_rasterio(next(t for t, _ in real_images if "cloudy_85_p753" in t.name))
    full, carf = masking.detect(s2, "dsen2cr"), masking.detect(s2, "carf")
    assert full.shadow.any() and not carf.shadow.any()
    np.testing.assert_array_equal(carf.cloud.values, full.cloud.values)
    np.testing.assert_array_equal(carf.mask.values, carf.cloud.values.astype(np.float32))


# ------------------------------------------------------------------------------------------------ the result
def test_result_layout_keeps_grid_crs_attrs_and_is_lazy(scene):
    s2 = scene.s2.chunk({"y": 250, "x": 350})
    s2.attrs["processing_baseline"] = "02.09"
    with dask.config.set(scheduler=_no_compute):  # "scene" statistics are computed in detect(): see below
        masks = masking.detect(s2, "dsen2cr", shadow_stats="window")
    assert set(masks.data_vars) == {"cloud_probability", "cloud", "shadow", "mask"}
    assert masks.cloud_probability.dtype == np.float32 and masks["mask"].dtype == np.float32
    assert masks.cloud.dtype == bool and masks.shadow.dtype == bool
    assert all(isinstance(masks[v].data, da.Array) for v in masks.data_vars)
    assert masks.rio.crs == scene.rio.crs
    np.testing.assert_array_equal(masks.x.values, scene.x.values)
    assert masks.attrs["processing_baseline"] == "02.09" and masks.attrs["mask_method"] == "dsen2cr"
    computed = masks.compute()
    prob = computed.cloud_probability.values
    assert np.nanmin(prob) >= 1e-5 and np.nanmax(prob) <= 1.0
    assert not (computed.cloud & computed.shadow).any()
    np.testing.assert_array_equal(computed["mask"].values, (computed.cloud | computed.shadow).values)


def _no_compute(*args, **kwargs):
    raise AssertionError("detect() computed something on lazy input")


def test_numpy_dataset_and_dataarray_inputs_agree(scene):
    ref = masking.detect(scene.s2, "dsen2cr")
    bare = masking.detect(scene.s2.values, "dsen2cr")
    from_scene = masking.detect(scene, "dsen2cr")
    _assert_same(ref, bare)
    _assert_same(ref, from_scene)
    assert "x" not in bare.coords  # a bare array has no grid to keep


def test_processing_baseline_offset_is_applied(scene):
    s2 = scene.s2.isel(y=slice(0, 256), x=slice(0, 256))
    shifted = (s2.astype("uint16") + 1000).assign_attrs(s2.attrs | {"processing_baseline": "04.00"})
    for method in ("dsen2cr", "s2cloudless"):
        kw = {"resolution": 60} if method == "s2cloudless" else {}
        _assert_same(masking.detect(s2, method, **kw), masking.detect(shifted, method, **kw))


def test_time_dimension_is_masked_date_by_date(scene):
    s2 = scene.s2.isel(y=slice(0, 128), x=slice(0, 160))
    dates = xr.concat([s2, s2[:, ::-1, :].assign_coords(y=s2.y)], dim="time").assign_coords(time=[0, 1])
    masks = masking.detect(dates, "dsen2cr")
    assert masks.cloud.dims == ("time", "y", "x")
    _assert_same(masks.isel(time=0, drop=True), masking.detect(s2, "dsen2cr"))
    # On Dask the scene statistics of every date come from one compute (one pass over the series), not one each.
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return dask.get(*args, **kwargs)

    with dask.config.set(scheduler=counting):
        lazy = masking.detect(dates.chunk({"time": 1, "y": 64, "x": 80}), "dsen2cr")
    assert len(calls) == 1
    _assert_same(lazy.compute(), masks)


# ----------------------------------------------------------------------------------------- chunking invariance
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("dsen2cr", {}),
        ("dsen2cr", {"shadow_stats": "window", "window": 64}),
        ("dsen2cr", {"shadow_stats": "scene", "window": 64}),
        ("uncrtaints", {}),
        ("carf", {}),
        ("s2cloudless", {"resolution": 60}),
        ("cyclecr", {"resolution": 60}),
    ],
)
def test_one_chunk_and_7x5_chunks_give_identical_masks(scene, method, params):
    one = masking.detect(scene.s2.chunk({"y": -1, "x": -1}), method, **params)
    many = masking.detect(scene.s2.chunk({"y": 143, "x": 140}), method, **params)
    assert scene.s2.chunk({"y": 143, "x": 140}).data.numblocks == (1, 7, 5)
    assert many.cloud.data.numblocks[0] > 1 and many.cloud.data.numblocks[1] > 1
    one, many = one.compute(), many.compute()
    _assert_same(one, many)
    assert one.cloud.any() and not one.cloud.all()


@pytest.mark.parametrize("shadow_stats", ["scene", "window"])
def test_strips_of_any_height_give_the_block_result(scene, shadow_stats, monkeypatch):
    """Blocks run in strips of rules.STRIP rows (bounded working memory): the strip height changes no pixel."""
    from xcloudfree.masking import rules

    s2 = scene.s2.isel(y=slice(0, 600))
    default = masking.detect(s2, "dsen2cr", shadow_stats=shadow_stats, window=64)
    monkeypatch.setattr(rules, "STRIP", 64)
    for data in (s2, s2.chunk({"y": 256, "x": 320})):
        _assert_same(masking.detect(data, "dsen2cr", shadow_stats=shadow_stats, window=64).compute(), default)


@pytest.mark.parametrize("method", ["s2cloudless", "cyclecr"])
def test_full_resolution_s2cloudless_chunking_with_a_stand_in_model(scene, method, monkeypatch):
    """At 10 m the block plumbing (averaging, dilation, blur halos) is what matters, not LightGBM's speed."""

    class PerPixel:
        def get_cloud_probability_maps(self, x):
            return np.clip((x[..., 1] - 0.08) * 3.0, 0, 1).astype(np.float32)  # a bright-blue test

    monkeypatch.setattr(s2c_backend, "_classifier", PerPixel)
    one = masking.detect(scene.s2.chunk({"y": -1, "x": -1}), method).compute()
    many = masking.detect(scene.s2.chunk({"y": 143, "x": 140}), method).compute()
    _assert_same(one, many)
    assert one.cloud.any() and not one.cloud.all()


def test_cloud_iou_against_synthetic_truth(scene):
    truth = scene.cloud_truth.values
    for method, params in (("dsen2cr", {}), ("s2cloudless", {"resolution": 60})):
        cloud = masking.detect(scene.s2, method, **params).cloud.values
        iou = (cloud & truth).sum() / (cloud | truth).sum()
        assert iou > 0.85, (method, iou)


# ----------------------------------------------------------------------------------------------- invalid data
def test_nan_pixels_are_invalid_and_do_not_spread():
    bright = np.full((13, 64, 64), 6000.0, np.float32)  # a uniform thick cloud
    holed = bright.copy()
    holed[:, 20:30, 25:40] = np.nan
    holed[3, 50, 50] = np.nan  # one band missing is enough
    ref, out = masking.detect(bright, "dsen2cr"), masking.detect(holed, "dsen2cr")
    invalid = np.isnan(holed).any(axis=0)
    assert np.isnan(out.cloud_probability.values[invalid]).all() and np.isnan(out["mask"].values[invalid]).all()
    assert not out.cloud.values[invalid].any() and not out.shadow.values[invalid].any()
    # The neighbours keep exactly the score they had without the hole.
    np.testing.assert_array_equal(out.cloud_probability.values[~invalid], ref.cloud_probability.values[~invalid])
    assert out.cloud.values[~invalid].all()


def test_nodata_value_marks_pixels_invalid(scene):
    s2 = scene.s2.isel(y=slice(0, 128), x=slice(0, 128)).copy()
    s2[:, :10, :] = 0
    s2 = s2.rio.write_nodata(0)
    masks = masking.detect(s2, "dsen2cr")
    assert np.isnan(masks.cloud_probability.values[:10]).all()
    assert np.isfinite(masks.cloud_probability.values[10:]).all()
    classes = masking.to_classes(masks)
    assert (classes.values[:10] == masking.NODATA_CLASS).all()


# ------------------------------------------------------------------------------------------------- bad input
def test_l2a_without_b10_names_b10_and_suggests_alternatives(scene):
    l2a = scene.s2.drop_sel(band="B10")
    for method in ("dsen2cr", "uncrtaints", "carf"):
        with pytest.raises(ValueError, match="B10") as err:
            masking.detect(l2a, method)
        assert "scl" in str(err.value) and "s2cloudless" in str(err.value)


def test_bad_method_and_parameters_are_rejected(scene):
    with pytest.raises(ValueError, match="method"):
        masking.detect(scene.s2, "fmask")
    with pytest.raises(ValueError, match="average_over"):
        masking.detect(scene.s2, "dsen2cr", average_over=3)
    with pytest.raises(ValueError, match="shadow_stats"):
        masking.detect(scene.s2, "dsen2cr", shadow_stats="tile")
    with pytest.raises(ValueError, match="s2"):
        masking.detect(np.zeros((64, 64)), "dsen2cr")


def test_missing_extra_raises_an_import_error_naming_it(scene, monkeypatch):
    monkeypatch.setitem(sys.modules, "s2cloudless", None)
    for method in ("s2cloudless", "cyclecr"):
        with pytest.raises(ImportError, match=r'pip install "xcloudfree\[s2cloudless\]"'):
            masking.detect(scene.s2, method)


# ------------------------------------------------------------------------------------------- cyclecr, scl, classes
def test_cyclecr_map_is_a_blur_of_the_kept_probability(scene):
    s2 = scene.s2.isel(y=slice(0, 192), x=slice(0, 192))
    prob = masking.detect(s2, "s2cloudless", resolution=60).cloud_probability.values
    cmap = masking.detect(s2, "cyclecr", resolution=60)
    from scipy.ndimage import gaussian_filter

    expected = gaussian_filter(np.where(prob > 0.5, prob, 0.0).astype(np.float64), 2.0)
    np.testing.assert_allclose(cmap["mask"].values, expected, atol=1e-6)
    np.testing.assert_array_equal(cmap.cloud_probability.values, prob)


def test_scl_classes_and_resampling(scene):
    s2 = scene.s2.isel(y=slice(0, 40), x=slice(0, 40))
    codes = np.arange(40 * 40).reshape(40, 40) % 12
    on_grid = xr.DataArray(codes.astype(np.uint8), dims=("y", "x"), coords={"y": s2.y, "x": s2.x})
    masks = masking.detect(on_grid, "scl")
    assert (masks.cloud.values == np.isin(codes, (8, 9, 10))).all()
    assert (masks.shadow.values == (codes == 3)).all()
    assert np.isnan(masks.cloud_probability.values[codes == 0]).all()
    custom = masking.detect(on_grid, "scl", cloud_classes=(9,), shadow_classes=(2, 3))
    assert (custom.cloud.values == (codes == 9)).all() and (custom.shadow.values == np.isin(codes, (2, 3))).all()
    # A 20 m SCL lands on the 10 m grid by nearest neighbour.
    coarse = on_grid.isel(y=slice(0, None, 2), x=slice(0, None, 2)).assign_coords(
        y=s2.y.values[::2] - 5.0, x=s2.x.values[::2] + 5.0
    )
    resampled = masking.detect(s2, "scl", scl=coarse)
    assert resampled.cloud.shape == (40, 40)
    np.testing.assert_array_equal(
        resampled.cloud.values, np.repeat(np.repeat(masks.cloud.values[::2, ::2], 2, 0), 2, 1)
    )


def test_to_classes(scene):
    masks = masking.detect(scene.s2.isel(y=slice(0, 256), x=slice(0, 256)), "dsen2cr")
    classes = masking.to_classes(masks)
    assert classes.dtype == np.uint8 and classes.rio.nodata == masking.NODATA_CLASS
    np.testing.assert_array_equal(classes.values == 1, masks.cloud.values)
    np.testing.assert_array_equal(classes.values == 2, masks.shadow.values)
    assert set(np.unique(classes.values)) <= {0, 1, 2}
    assert classes.rio.crs == scene.rio.crs


# ----------------------------------------------------------------------------- saturated pixels, scene statistics
def test_s2cloudless_clips_saturated_pixels_like_the_references(shared_data):
    """A real L1C date with DN > 10000: the model must see clip(DN, 0, 10000) / 10000 (UnCRtainTS)."""
    from s2cloudless import S2PixelCloudDetector

    tif = next((shared_data / "s2_timeseries_rome").glob("*ImgNo_14_*.tif"))
    full = rioxarray.open_rasterio(tif)
    saturated = (full.values > 10000).any(axis=0)
    rows, cols = np.nonzero(saturated)
    assert saturated.sum() >= 10
    # The 48² corner around the saturated pixels keeps the LightGBM cost small; the model is per pixel.
    y0, x0 = min(int(rows.min()), 256 - 48), min(int(cols.min()), 256 - 48)
    s2 = full.isel(y=slice(y0, y0 + 48), x=slice(x0, x0 + 48))
    assert (s2.values > 10000).any()
    bands = [list(xcf.sensors.S2_BAND_NAMES).index(b) for b in s2c_backend.MODEL_BANDS]
    dn = s2.values[bands].transpose(1, 2, 0)[None].astype(np.float64)
    package = S2PixelCloudDetector(all_bands=False)
    clipped = package.get_cloud_probability_maps(np.clip(dn, 0, 10000) / 10000)[0]
    unclipped = package.get_cloud_probability_maps(dn / 10000)[0]
    ours = masking.detect(s2, "s2cloudless").cloud_probability.values
    np.testing.assert_array_equal(ours, clipped)
    assert np.abs(ours - unclipped).max() > 0.05  # the clip matters on this image


def test_s2cloudless_saturated_dn_count_as_10000_at_every_resolution(scene):
    s2 = scene.s2.isel(y=slice(0, 120), x=slice(0, 120)).astype("uint16")
    bright = s2.values >= np.quantile(s2.values, 0.9)  # the brightest tenth made saturated, at or beyond 10000
    at_limit = s2.copy(data=np.where(bright, 10000, s2.values).astype("uint16"))
    beyond = s2.copy(data=np.where(bright, 20000, s2.values).astype("uint16"))
    for resolution in (None, 60):
        a = masking.detect(at_limit, "s2cloudless", resolution=resolution)
        b = masking.detect(beyond, "s2cloudless", resolution=resolution)
        _assert_same(a, b)


def _mosaic(real_images) -> xr.DataArray:
    """2×2 real cloudy 256² images with shadows as one 512² array."""
    names = ("cloudy_85_p753", "cloudy_85_p492", "cloudy_39_p100", "cloudy_139_p839")
    tiles = [rioxarray.open_rasterio(next(t for t, _ in real_images if n in t.name)).values for n in names]
    return xr.DataArray(np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]), dims=("band", "y", "x"))


def test_scene_statistics_are_the_default_and_match_the_whole_array_rule(real_images):
    """REFERENCE §4 takes the shadow thresholds over the whole array passed in; 256 windows do not on 512²."""
    from scipy import signal

    s2 = _mosaic(real_images)
    refl = s2.values.astype(np.float32) / 10000
    csi, blue = (refl[7] + refl[11]) / 2, refl[1]  # B08, B11, B02 in the canonical 13-band order
    t3 = csi.min() + 3 / 4 * (csi.mean() - csi.min())
    t4 = blue.min() + 5 / 6 * (blue.mean() - blue.min())
    reference = signal.medfilt2d(np.where((csi < t3) & (blue < t4), -1.0, 0.0), 5) < 0

    default = masking.detect(s2, "dsen2cr")
    assert default.attrs["mask_parameters"].count('"shadow_stats": "scene"') == 1
    np.testing.assert_array_equal(default.shadow.values, reference & ~default.cloud.values)
    window = masking.detect(s2, "dsen2cr", shadow_stats="window")
    assert (window.shadow.values != default.shadow.values).mean() > 0.01
    # On Dask: the same pixels for any chunking, the statistics computed once in detect(), the masks left lazy.
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return dask.get(*args, **kwargs)

    with dask.config.set(scheduler=counting):
        lazy = masking.detect(s2.chunk({"y": 200, "x": 300}), "dsen2cr")
        assert len(calls) == 1 and isinstance(lazy.shadow.data, da.Array)
        assert not any("scene_partials" in str(key) for key in dict(lazy.shadow.data.__dask_graph__()))
    _assert_same(lazy.compute(), default)
