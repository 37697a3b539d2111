"""The accessor as the README uses it: ds.cloudfree.mask / remove / evaluate, thin forwards to the functions."""

import numpy as np
import pytest
import xarray as xr

import xcloudfree as xcf


def test_readme_chain_on_a_synthetic_scene():
    scene = xcf.datasets.synthetic_scene(size=128, seed=4, cloud_cover=0.5).chunk({"x": 64, "y": 64})
    masks = scene.cloudfree.mask(method="dsen2cr")
    assert set(masks.data_vars) == {"cloud_probability", "cloud", "shadow", "mask"}
    assert masks["cloud"].chunks is not None  # lazy
    xr.testing.assert_identical(masks.compute(), xcf.masking.detect(scene["s2"], method="dsen2cr").compute())
    out = scene.cloudfree.remove(tile=128, device="cpu")
    assert out["s2_cloudfree"].chunks is not None and out.rio.crs == scene.rio.crs
    scores = out.cloudfree.evaluate(target="s2_clear", mask="dsen2cr")
    assert {"mae", "rmse", "psnr", "ssim", "sam", "psnr_reconstruction", "psnr_reproduction"} <= set(scores)
    baseline = out.cloudfree.evaluate(target="s2_clear", prediction="s2")
    assert scores["psnr"] > baseline["psnr"] + 5  # the bundled weights beat the cloudy input


def test_dataarray_accessor_masks_an_s2_array():
    scene = xcf.datasets.synthetic_scene(size=64, seed=1)
    s2 = scene["s2"]
    masks = s2.cloudfree.mask(method="uncrtaints")
    np.testing.assert_array_equal(masks["cloud"].values, xcf.masking.detect(s2, method="uncrtaints")["cloud"].values)
    assert s2.cloudfree.validate() is s2


def test_dataarray_accessor_finds_the_layer_dim_anywhere():
    scene = xcf.datasets.synthetic_scene(size=48, seed=2)
    dates = [scene["s2"], scene["s2"].isel(x=slice(None, None, -1)).assign_coords(x=scene["x"])]
    series = xr.concat(dates, dim="time").rename(None)  # (time, band, y, x), no name to go by
    masks = series.cloudfree.mask(method="dsen2cr", shadow_stats="window")
    assert masks["mask"].dims == ("time", "y", "x")
    for t, date in enumerate(dates):
        per_date = xcf.masking.detect(date, method="dsen2cr", shadow_stats="window")
        np.testing.assert_array_equal(masks["mask"].isel(time=t).values, per_date["mask"].values)
    last = series.transpose("y", "x", "time", "band").cloudfree.mask(method="dsen2cr", shadow_stats="window")
    np.testing.assert_array_equal(last["mask"].transpose("time", "y", "x").values, masks["mask"].values)
    s1 = xr.concat([scene["s1"]] * 2, dim="time").rename(None)
    assert s1.cloudfree.validate() is s1  # checked as s1: dB values pass
    with pytest.raises(ValueError, match=r"s1: expected dims \('polarization', 'y', 'x'\)"):
        s1.transpose("y", "x", "time", "polarization").cloudfree.validate()  # taken for s1, which has an order
    dem = xr.concat([scene["dem"]] * 2, dim="time").rename(None)
    assert dem.cloudfree.validate() is dem


@pytest.mark.parametrize("dims", [("lat", "lon"), ("band", "polarization", "y", "x"), ("y", "x", "layer")])
def test_dataarray_accessor_refuses_arrays_that_are_no_scene_variable(dims):
    da = xr.DataArray(np.zeros((2,) * len(dims), np.float32), dims=dims)
    with pytest.raises(ValueError, match=r"da: expected a 'band' dimension .* found dims"):
        da.cloudfree.mask()
