"""The accessor as the README uses it: ds.cloudfree.mask / remove / evaluate, thin forwards to the functions."""

import numpy as np
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
