"""Compositing: clear pixels keep their observation, covered ones take the prediction, hard edges feathered."""

import numpy as np
import pytest
import torch
import xarray as xr
from dask.callbacks import Callback

import xcloudfree as xcf
from xcloudfree.inference.composite import composite, feather_weights
from xcloudfree.sensors import harmonize_s2


def _binary_mask():
    m = np.zeros((60, 80), np.float32)
    m[10:30, 20:50] = 1  # a cloud
    m[45:60, 0:12] = 1  # touching the image border
    m[2, 75] = np.nan  # an invalid pixel
    return xr.DataArray(m, dims=("y", "x"), coords={"y": np.arange(60) * -10.0, "x": np.arange(80) * 10.0})


def test_feather_weights_ramp_outwards_and_ignore_chunking():
    m = _binary_mask()
    w = feather_weights(m, feather=3)
    assert w.dims == ("y", "x") and w.dtype == np.float32 and (w["x"] == m["x"]).all()
    assert (w.values[m.values == 1] == 1).all()  # every covered pixel gets the full prediction
    np.testing.assert_allclose(
        w.values[30:35, 35], [0.5 * (1 + np.cos(np.pi * d / 4)) for d in range(1, 6)][:3] + [0, 0]
    )
    far = np.ones(m.shape, bool)
    far[6:34, 16:54], far[41:, :16] = False, False
    assert (w.values[far] == 0).all() and w.values[2, 75] == 0
    for chunks in (7, 16, 60):  # chunks narrower than the 4 px halo included
        lazy = feather_weights(m.chunk({"y": chunks, "x": chunks}), feather=3)
        assert lazy.chunks is not None
        np.testing.assert_array_equal(lazy.values, w.values)
    np.testing.assert_array_equal(feather_weights(m.fillna(0), feather=0).values, m.fillna(0).values)
    soft = xr.DataArray(np.linspace(0, 1, 50, dtype=np.float32)[None].repeat(4, 0), dims=("y", "x"))
    np.testing.assert_array_equal(feather_weights(soft).values, soft.values)  # no hard edge: used as it is
    with pytest.raises(ValueError, match="feather: expected a whole number"):
        feather_weights(m, feather=-1)


def test_composite_has_no_seam():
    m = xr.DataArray(np.repeat((np.arange(40) < 20)[None].astype(np.float32), 10, 0), dims=("y", "x"))
    observed = xr.full_like(m, 1000.0).expand_dims(band=["B02"])
    prediction = xr.full_like(m, 3000.0).expand_dims(band=["B02"])
    hard = composite(observed, prediction, m, feather=0).values[0, 0]
    soft = composite(observed, prediction, m, feather=3).values[0, 0]
    assert np.abs(np.diff(hard)).max() == 2000  # a seam: the whole difference in one pixel step
    assert np.abs(np.diff(soft)).max() < 0.4 * 2000
    assert (soft[:20] == 3000).all() and (soft[24:] == 1000).all()


def test_composite_is_the_blend_expression_bit_for_bit_in_any_chunking():
    rng = np.random.default_rng(0)
    m = _binary_mask()
    m[40:44, 60:70] = rng.random((4, 10))  # a soft patch
    observed = xr.DataArray(rng.random((2, 60, 80), np.float32) * 5000, dims=("band", "y", "x"), coords=m.coords)
    prediction = observed.copy(data=rng.random((2, 60, 80), np.float32) * 5000)
    prediction[0, 0, :5] = np.nan
    w = feather_weights(m, 3)
    expected = xr.where(w >= 1, prediction, xr.where(w <= 0, observed, observed + w * (prediction - observed)))
    out = composite(observed, prediction, m, feather=3)
    lazy = composite(observed.chunk({"y": 25, "x": 30}), prediction.chunk({"y": 25, "x": 30}), m.chunk(20), 3)
    for got in (out, lazy):
        assert got.dims == ("band", "y", "x") and got.dtype == np.float32
        np.testing.assert_array_equal(got.values, expected.transpose("band", "y", "x").values)


class _TaskOutputs(Callback, list):
    def __init__(self):
        Callback.__init__(self)
        list.__init__(self)

    def _posttask(self, key, result, dsk, state, worker_id):
        self.append(result)


def test_a_hard_mask_travels_as_bytes_with_the_same_pixels():
    rng = np.random.default_rng(1)
    m = _binary_mask().assign_attrs(flag_values=[0.0, 1.0])  # as detect() marks its hard masks
    observed = xr.DataArray(rng.random((2, 60, 80), np.float32) * 5000, dims=("band", "y", "x"), coords=m.coords)
    prediction = observed.copy(data=rng.random((2, 60, 80), np.float32) * 5000)
    expected = composite(observed, prediction, m, feather=3).values
    for mask, moved in ((m.chunk(20), {"uint8"}), (m.chunk(33), {"uint8"}), (m.drop_attrs().chunk(20), {"float32"})):
        lazy = composite(observed.chunk({"y": 25, "x": 30}), prediction.chunk({"y": 25, "x": 30}), mask)
        with _TaskOutputs() as outputs:  # what the tasks hand on: 2-D arrays are the mask's chunks
            np.testing.assert_array_equal(lazy.values, expected)
        assert {str(a.dtype) for a in outputs if getattr(a, "ndim", 0) == 2} == moved
    lazy_observed, lazy_prediction = observed.chunk({"y": 25}), prediction.chunk({"y": 25})
    with pytest.raises(ValueError, match="feather: expected a whole number"):
        composite(lazy_observed, lazy_prediction, m.chunk(20), feather=-1)
    with pytest.raises(ValueError, match=r"mask: expected a \(y, x\) DataArray"):
        composite(lazy_observed, lazy_prediction, m.T.chunk(20))
    scene = xcf.datasets.synthetic_scene(32, seed=0)
    assert xcf.masking.detect(scene.s2, method="dsen2cr")["mask"].attrs["flag_values"] == [0.0, 1.0]
    assert "flag_values" not in xcf.masking.detect(scene.s2, method="cyclecr")["mask"].attrs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return xcf.models.create("dsen2cr", features=8, blocks=2)


def test_remove_keeps_clear_pixels_and_returns_the_mask(model):
    scene = xcf.datasets.synthetic_scene(96, seed=5, cloud_cover=0.4)
    out = scene.cloudfree.remove(model, tile=64, device="cpu")  # keep_clear=True and the dsen2cr mask by default
    raw_scene = scene.cloudfree.remove(model, tile=64, device="cpu", keep_clear=False)
    raw = raw_scene["s2_cloudfree"]
    mask = xcf.masking.detect(scene["s2"], method="dsen2cr")["mask"]
    xr.testing.assert_equal(out["mask"], mask)
    assert "mask" not in raw_scene and not np.array_equal(raw.values, out["s2_cloudfree"].values)
    weight = feather_weights(mask).values
    observed = harmonize_s2(scene["s2"]).astype("float32").values
    np.testing.assert_array_equal(out["s2_cloudfree"].values[:, weight == 0], observed[:, weight == 0])
    np.testing.assert_array_equal(out["s2_cloudfree"].values[:, weight == 1], raw.values[:, weight == 1])
    assert 0 < (weight == 1).mean() < 1 and ((weight > 0) & (weight < 1)).any()

    lazy = scene.chunk({"y": 40, "x": 40}).cloudfree.remove(model, tile=64, device="cpu", mask="uncrtaints")
    assert lazy["s2_cloudfree"].chunks is not None
    xr.testing.assert_equal(lazy["mask"].compute(), xcf.masking.detect(scene["s2"], method="uncrtaints")["mask"])
    eager = scene.cloudfree.remove(model, tile=64, device="cpu", mask="uncrtaints")
    np.testing.assert_allclose(lazy["s2_cloudfree"].values, eager["s2_cloudfree"].values, rtol=1e-5, atol=1e-2)
