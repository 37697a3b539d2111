"""xcloudfree.metrics: parity with the UnCRtainTS metric code on real pairs, Dask = numpy, edge cases, the
distributional and downstream scores, and the evaluation figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import torch
import xarray as xr

import xcloudfree.metrics as xm
from xcloudfree.plot import plot_evaluation
from xcloudfree.sensors import S2_BAND_NAMES

REFERENCE = "reference/metrics_uncrtaints_cloudy_vs_clear.json"
PAIR = "sen12mscr/ROIs1158_spring_s2_cloudy/s2_cloudy_39/ROIs1158_spring_s2_cloudy_39_p100.tif"
KEYS = {"mae": "MAE", "rmse": "RMSE", "psnr": "PSNR", "sam": "SAM_deg", "ssim": "SSIM"}


def read_dn(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def unit(dn: np.ndarray) -> np.ndarray:
    """The reference's scaling: clip(DN, 0, 10000) / 10000, float64."""
    return np.clip(dn.astype(np.float64), 0, 10000) / 10000


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> dict:
    return json.loads((shared_data / REFERENCE).read_text())


@pytest.fixture(scope="module")
def pair(shared_data: Path, reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """One real cloudy/clear pair as DN (uint16, 13 bands)."""
    return read_dn(shared_data / PAIR), read_dn(shared_data / reference[PAIR]["target"])


def synthetic(seed: int = 0, shape: tuple[int, ...] = (5, 40, 36)) -> dict[str, np.ndarray]:
    """A prediction/target/cloudy triple with a mask and a few NaNs, reflectance-like values."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.0, 0.6, shape)
    pred = np.clip(target + rng.normal(0, 0.05, shape), 0, 1)
    cloudy = np.clip(target + 0.3 * rng.uniform(0, 1, shape), 0, 1)
    h, w = shape[-2:]
    pred[1, 3, 4] = np.nan
    target[2, 3 * h // 4, w // 2] = np.nan
    mask = np.zeros(shape[-2:], dtype=bool)
    mask[8:25, 10:30] = True
    return {"pred": pred, "target": target, "cloudy": cloudy, "mask": mask}


def close(a: float, b: float, rel: float) -> bool:
    return a == b or abs(a - b) <= rel * abs(b)


# --- parity with the reference implementation -------------------------------------------------------------------


def test_parity_with_uncrtaints_on_every_real_pair(shared_data: Path, reference: dict) -> None:
    assert len(reference) == 16
    worst = dict.fromkeys(KEYS, 0.0)
    for cloudy_path, ref in reference.items():
        pred = unit(read_dn(shared_data / cloudy_path))
        target = unit(read_dn(shared_data / ref["target"]))
        scores = xm.evaluate(pred, target)
        for ours, theirs in KEYS.items():
            worst[ours] = max(worst[ours], abs(scores[ours] - ref[theirs]) / abs(ref[theirs]))
    assert all(value <= 1e-6 for value in worst.values()), worst


def test_single_functions_match_the_reference(shared_data: Path, reference: dict, pair) -> None:
    ref = reference[PAIR]
    pred, target = unit(pair[0]), unit(pair[1])
    for name, theirs in KEYS.items():
        assert close(getattr(xm, name)(pred, target), ref[theirs], 1e-6), name
    assert close(xm.sam(pred, target, radians=True), math.radians(ref["SAM_deg"]), 1e-6)


def test_evaluate_scene_scales_dn_and_keeps_common_bands(pair, reference: dict) -> None:
    cloudy_dn, clear_dn = pair
    coords = {"band": list(S2_BAND_NAMES), "y": np.arange(256), "x": np.arange(256)}
    ds = xr.Dataset(
        {
            "s2": (("band", "y", "x"), cloudy_dn),
            "s2_clear": (("band", "y", "x"), clear_dn),
            "s2_cloudfree": (("band", "y", "x"), cloudy_dn.astype(np.float32)),
        },
        coords=coords,
    )
    scores = xm.evaluate_scene(ds)  # float32 reflectance from xcloudfree.sensors.reflectance
    for ours, theirs in KEYS.items():
        assert close(scores[ours], reference[PAIR][theirs], 1e-6), ours
    assert list(scores["band_nrmse"]) == list(S2_BAND_NAMES)

    # a prediction without B10 is scored on the 12 bands both have
    ds12 = ds.assign(s2_cloudfree=ds["s2_cloudfree"].drop_sel(band="B10"))
    keep = [i for i, b in enumerate(S2_BAND_NAMES) if b != "B10"]
    expected = xm.evaluate(unit(cloudy_dn[keep]), unit(clear_dn[keep]))
    scores12 = xm.evaluate_scene(ds12)
    assert "B10" not in scores12["band_nrmse"]
    assert close(scores12["ssim"], expected["ssim"], 1e-6) and close(scores12["mae"], expected["mae"], 1e-6)

    mask = xr.DataArray(unit(cloudy_dn)[0] > 0.15, dims=("y", "x"))
    masked = xm.evaluate_scene(ds, mask=mask)
    assert masked["mae_reproduction"] == 0.0  # the prediction is the cloudy image itself
    with pytest.raises(ValueError, match="'s2_cloudfree'"):
        xm.evaluate_scene(ds.drop_vars("s2_cloudfree"))


def test_ssim_valid_border_matches_scikit_image(pair) -> None:
    from skimage.metrics import structural_similarity

    pred, target = unit(pair[0])[:, 40:136, 60:140], unit(pair[1])[:, 40:136, 60:140]
    theirs = structural_similarity(
        target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0
    )
    ours = xm.ssim(pred, target, border="valid")
    # Tolerance 2e-6 relative: scikit-image's window sums to 1, ours to UnCRtainTS's float32 sum 1 - 6.9e-8.
    assert close(ours, theirs, 2e-6), (ours, theirs)
    assert not close(xm.ssim(pred, target), theirs, 1e-3)  # the zero border is a different convention


def test_window_is_uncrtaints_float32_window() -> None:
    # UnCRtainTS: torch.Tensor of exp(-(x - 5)^2 / (2 * 1.5^2)), normalised, outer product, all in float32
    g = torch.tensor([math.exp(-((x - 5) ** 2) / (2 * 1.5**2)) for x in range(11)], dtype=torch.float32)
    g = g / g.sum()
    window32 = (g[:, None] @ g[None, :]).double().numpy()
    g_ours = xm.gaussian_window()
    ours = np.outer(g_ours, g_ours)
    assert np.allclose(ours, window32, rtol=1e-6, atol=0)
    assert abs(ours.sum() - window32.sum()) < 1e-15
    assert np.argmax(g_ours) == 5 and np.allclose(g_ours, g_ours[::-1])


# --- Dask, torch, xarray ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("border", ["zero", "valid"])
def test_dask_chunks_equal_numpy_for_every_metric(border: str) -> None:
    s = synthetic()
    expected = xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"], mask=s["mask"], border=border)
    # a 4 × 4 grid of chunks, bands split too; and chunks of 4 × 4 pixels, smaller than the SSIM halo
    for chunks in ((2, 10, 9), (5, 4, 4)):
        lazy = {k: da.from_array(v, chunks=chunks if v.ndim == 3 else chunks[1:]) for k, v in s.items()}
        got = xm.evaluate(lazy["pred"], lazy["target"], cloudy=lazy["cloudy"], mask=lazy["mask"], border=border)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            if key == "band_nrmse":
                assert np.allclose(list(got[key].values()), list(value.values()), rtol=1e-12, atol=0)
            else:
                assert close(got[key], value, 1e-12), (chunks, key, got[key], value)
    for name in ("mae", "rmse", "psnr", "sam", "ssim"):
        lazy_value = getattr(xm, name)(da.from_array(s["pred"], chunks=(5, 10, 9)), s["target"])
        assert close(lazy_value, getattr(xm, name)(s["pred"], s["target"]), 1e-12), name
    assert np.allclose(
        xm.band_nrmse(da.from_array(s["pred"], chunks=(5, 10, 9)), s["target"]), xm.band_nrmse(s["pred"], s["target"])
    )


def test_every_chunk_is_read_once_and_chunking_changes_nothing() -> None:
    s = synthetic(15, (4, 57, 61))
    s["mask"] = np.random.default_rng(15).uniform(size=(57, 61)) * s["mask"]  # weights, not just 0/1
    expected = xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"], mask=s["mask"])
    reads: dict = {}

    def counted(name: str, a: np.ndarray, chunks: tuple) -> da.Array:
        def read(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
            key = (name, tuple(block_info[0]["chunk-location"]))
            reads[key] = reads.get(key, 0) + 1
            return block

        return da.from_array(a, chunks=chunks).map_blocks(read, dtype=a.dtype)

    # uneven chunks: seams with corners from four chunks; the band axis split too, so blocks are merged first
    for chunks in ((4, 20, 25), (2, (13, 30, 14), (7, 31, 23)), (4, 57, 61)):
        reads.clear()
        lazy = {k: counted(k, v, chunks if v.ndim == 3 else chunks[1:]) for k, v in s.items()}
        got = xm.evaluate(lazy["pred"], lazy["target"], cloudy=lazy["cloudy"], mask=lazy["mask"])
        assert set(reads.values()) == {1}, reads  # one pass over the data
        assert len(reads) == sum(lazy[k].npartitions for k in lazy)
        for key, value in expected.items():
            if key == "band_nrmse":
                assert np.allclose(list(got[key].values()), list(value.values()), rtol=1e-12, atol=0)
            else:
                assert close(got[key], value, 1e-12), (chunks, key, got[key], value)
    # only the mask lazy: the images are cut into its chunks
    only_mask = xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"], mask=da.from_array(s["mask"], chunks=16))
    assert all(close(only_mask[m], expected[m], 1e-12) for m in xm.METRICS)


def test_blur_equals_scipy_correlate() -> None:
    from scipy import ndimage

    from xcloudfree.metrics.structural import blur, gaussian_window

    planes = np.random.default_rng(0).uniform(size=(3, 37 + 10, 53 + 10))  # slabs and column blocks cut short
    g = gaussian_window()
    expected = ndimage.correlate1d(ndimage.correlate1d(planes, g, axis=-1), g, axis=-2)[:, 5:-5, 5:-5]
    assert np.allclose(blur(planes), expected, rtol=0, atol=1e-15)


def test_torch_and_xarray_inputs_equal_numpy() -> None:
    s = synthetic(1)
    expected = xm.evaluate(s["pred"], s["target"], mask=s["mask"])
    tensors = xm.evaluate(torch.from_numpy(s["pred"]), torch.from_numpy(s["target"]), mask=torch.from_numpy(s["mask"]))
    assert tensors.keys() == expected.keys()
    for key in xm.METRICS:
        assert tensors[key] == pytest.approx(expected[key], rel=1e-12)
        assert tensors[key + "_reconstruction"] == pytest.approx(expected[key + "_reconstruction"], rel=1e-12)
    names = ["B02", "B03", "B04", "B08", "B11"]
    # dims in another order, and Dask-backed: transposed to (band, y, x) and scored chunk by chunk

    def to_xr(a: np.ndarray) -> xr.DataArray:
        return xr.DataArray(a, dims=("band", "y", "x"), coords={"band": names}).transpose("y", "band", "x")

    arrays = xm.evaluate(
        to_xr(s["pred"]).chunk({"y": 16}), to_xr(s["target"]), mask=xr.DataArray(s["mask"], dims=("y", "x"))
    )
    assert list(arrays["band_nrmse"]) == names
    assert arrays["ssim"] == pytest.approx(expected["ssim"], rel=1e-12)
    assert arrays["sam_reconstruction"] == pytest.approx(expected["sam_reconstruction"], rel=1e-12)


def test_ssim_torch_is_the_same_ssim_and_differentiable() -> None:
    s = synthetic(2, (3, 24, 20))
    pred, target = np.nan_to_num(s["pred"]), np.nan_to_num(s["target"])
    tp = torch.from_numpy(pred).requires_grad_(True)
    for border in ("zero", "valid"):
        value = xm.ssim_torch(tp, torch.from_numpy(target), border=border)
        assert value.item() == pytest.approx(xm.ssim(pred, target, border=border), rel=1e-12)
    value.backward()
    assert tp.grad is not None and torch.isfinite(tp.grad).all() and tp.grad.abs().sum() > 0


# --- definitions and edge cases ---------------------------------------------------------------------------------


def test_identical_images() -> None:
    x = synthetic(3)["target"]
    scores = xm.evaluate(x, x)
    assert scores["psnr"] == math.inf
    assert scores["mae"] == 0 and scores["rmse"] == 0
    assert 0 <= scores["sam"] < 1e-5  # acos of a cosine rounded to 1 - 1e-16, as in the reference code
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["nan_count"] == 1  # the NaN of target, in both


def test_zero_spectra_in_sam() -> None:
    target = np.ones((3, 1, 4))
    pred = np.ones((3, 1, 4))
    target[:, 0, 0] = pred[:, 0, 0] = 0  # both zero: angle 0
    assert xm.sam(pred, target) == 0.0
    pred[:, 0, 1] = 0  # one zero: 90°, one pixel of four
    assert xm.sam(pred, target) == pytest.approx(90.0 / 4)
    pred[:, 0, 2] = [1, 0, 0]  # acos(1 / sqrt(3)) against (1, 1, 1)
    assert xm.sam(pred, target) == pytest.approx((90.0 + math.degrees(math.acos(1 / math.sqrt(3)))) / 4)


def test_nans_are_ignored_and_counted() -> None:
    s = synthetic(4)
    pred, target = s["pred"], s["target"]
    valid = np.isfinite(pred) & np.isfinite(target)
    err = (pred - target)[valid]
    scores = xm.evaluate(pred, target)
    assert scores["nan_count"] == (~valid).sum() == 2
    assert scores["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-12)
    assert scores["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-12)
    assert math.isfinite(scores["ssim"]) and math.isfinite(scores["sam"])
    # SAM leaves out the two pixels with a NaN band
    pixels = valid.all(axis=0)
    cos = (pred * target).sum(0) / np.linalg.norm(pred, axis=0) / np.linalg.norm(target, axis=0)
    assert scores["sam"] == pytest.approx(np.degrees(np.arccos(np.clip(cos[pixels], -1, 1))).mean(), rel=1e-12)


def test_masked_scores_are_the_scores_over_the_mask() -> None:
    s = synthetic(5)
    pred, target, cloudy, mask = (np.nan_to_num(s[k]) for k in ("pred", "target", "cloudy", "mask"))
    scores = xm.evaluate(pred, target, cloudy=cloudy, mask=mask)
    inside = np.abs(pred - target)[:, mask]
    outside = (pred - cloudy)[:, ~mask]
    assert scores["mae_reconstruction"] == pytest.approx(inside.mean(), rel=1e-12)
    assert scores["rmse_reproduction"] == pytest.approx(np.sqrt((outside**2).mean()), rel=1e-12)
    assert scores["psnr_reproduction"] == pytest.approx(-20 * np.log10(np.sqrt((outside**2).mean())), rel=1e-12)
    # a float mask weights the pixels
    weights = np.random.default_rng(0).uniform(size=mask.shape)
    assert xm.mae(pred, target, mask=weights) == pytest.approx(
        (np.abs(pred - target) * weights).sum() / (weights.sum() * len(pred)), rel=1e-12
    )
    assert xm.ssim(pred, target, mask=np.ones(mask.shape, bool)) == pytest.approx(xm.ssim(pred, target), rel=1e-12)


def test_empty_mask_gives_nan_and_a_warning() -> None:
    s = synthetic(6)
    with pytest.warns(RuntimeWarning, match="_reconstruction"):
        scores = xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"], mask=np.zeros((40, 36), bool))
    assert all(math.isnan(scores[f"{m}_reconstruction"]) for m in xm.METRICS)
    assert all(math.isfinite(scores[f"{m}_reproduction"]) for m in xm.METRICS)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(xm.mae(s["pred"], s["target"], mask=np.zeros((40, 36))))


def test_bad_input_raises_value_error_naming_it() -> None:
    s = synthetic(7)
    with pytest.raises(ValueError, match="target: expected the shape of pred"):
        xm.mae(s["pred"], s["target"][:, :-1])
    with pytest.raises(ValueError, match="target: expected reflectance"):
        xm.rmse(s["pred"], (np.nan_to_num(s["target"]) * 10000).astype(np.uint16))
    with pytest.raises(ValueError, match="target: expected reflectance in \\[0, 1\\], found values up to"):
        xm.evaluate(s["pred"], s["target"] * 10000)
    with pytest.raises(ValueError, match="mask: expected bool or weights"):
        xm.mae(s["pred"], s["target"], mask=np.full((40, 36), 2.0))
    with pytest.raises(ValueError, match="mask: expected shape"):
        xm.mae(s["pred"], s["target"], mask=np.ones((36, 40), bool))
    with pytest.raises(ValueError, match="cloudy: the reproduction scores need a mask"):
        xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"])
    with pytest.raises(ValueError, match="border"):
        xm.ssim(s["pred"], s["target"], border="reflect")
    with pytest.raises(ValueError, match="pred: expected an image"):
        xm.mae(s["pred"][0], s["target"][0])


# --- batches and data sets --------------------------------------------------------------------------------------


def test_per_sample_mean_and_pooled() -> None:
    a, b = synthetic(8), synthetic(9)
    pred = np.stack([np.nan_to_num(a["pred"]), np.nan_to_num(b["target"]) + 0.2])
    target = np.stack([np.nan_to_num(a["target"]), np.nan_to_num(b["target"])])
    per_sample = xm.rmse(pred, target, reduction="none")
    assert per_sample.shape == (2,)
    assert per_sample[1] == pytest.approx(0.2)
    assert xm.rmse(pred, target) == pytest.approx(per_sample.mean())
    assert xm.rmse(pred, target, reduction="pooled") == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))
    assert xm.psnr(pred, target) == pytest.approx(np.mean(20 * np.log10(1 / per_sample)))
    lazy = da.from_array(pred, chunks=(1, 5, 20, 18))  # chunked along samples too
    assert np.allclose(xm.rmse(lazy, target, reduction="none"), per_sample, rtol=1e-12)
    assert xm.ssim(lazy, target, reduction="pooled") == pytest.approx(xm.ssim(pred, target, reduction="pooled"))


def test_evaluate_dataset_streams_samples_of_any_size() -> None:
    samples = [synthetic(10), synthetic(11, (5, 30, 50)), synthetic(12, (5, 44, 20))]
    for s in samples[1:]:
        s["mask"] = np.zeros(s["pred"].shape[1:], bool)
        s["mask"][5:15, 5:15] = True
    result = xm.evaluate_dataset(
        (s["pred"] for s in samples),
        (s["target"] for s in samples),
        cloudy=[s["cloudy"] for s in samples],
        masks=[s["mask"] for s in samples],
    )
    singles = [xm.evaluate(s["pred"], s["target"], cloudy=s["cloudy"], mask=s["mask"]) for s in samples]
    assert result["n_samples"] == 3 and len(result["per_sample"]) == 3
    assert set(result["definitions"]) == {"per_sample_mean", "pooled"}
    for key in ("mae", "ssim", "sam_reconstruction", "psnr_reproduction"):
        assert result["per_sample"][1][key] == pytest.approx(singles[1][key], rel=1e-12)
        assert result["per_sample_mean"][key] == pytest.approx(np.mean([r[key] for r in singles]), rel=1e-12)
    errors = np.concatenate([np.abs(s["pred"] - s["target"]).ravel() for s in samples])
    assert result["pooled"]["mae"] == pytest.approx(np.nanmean(errors), rel=1e-12)
    assert result["pooled"]["nan_count"] == result["per_sample_mean"]["nan_count"] == 6
    with pytest.raises(ValueError, match="masks: expected one item per sample"):
        xm.evaluate_dataset([s["pred"] for s in samples], [s["target"] for s in samples], masks=[samples[0]["mask"]])


def test_band_nrmse_is_rmse_over_the_target_range() -> None:
    s = synthetic(13)
    pred, target = np.nan_to_num(s["pred"]), np.nan_to_num(s["target"])
    expected = np.sqrt(((pred - target) ** 2).mean(axis=(1, 2))) / (target.max(axis=(1, 2)) - target.min(axis=(1, 2)))
    assert np.allclose(xm.band_nrmse(pred, target), expected, rtol=1e-12)
    target[0] = 0.3
    assert np.isnan(xm.band_nrmse(pred, target)[0])


# --- distributional ---------------------------------------------------------------------------------------------


def test_improved_precision_recall_on_known_geometry() -> None:
    real = np.arange(20, dtype=float)[:, None]  # points 0..19; with k = 3 the ball radius is 2 inside, 3 at the ends
    fake = np.array([[5.5], [-2.5], [21.5], [100.0], [-10.0], [101.0], [102.0], [103.0]])
    result = xm.improved_precision_recall(real, fake, k=3)
    assert result["precision"] == pytest.approx(3 / 8)  # 5.5 (ball of 5), -2.5 (of 0) and 21.5 (of 19)
    # the sparse fake points get huge balls (5.5: radius 16) that cover every real point: recall's known weakness
    assert result["recall"] == 1.0
    assert result["f1"] == pytest.approx(
        2 * result["precision"] * result["recall"] / (result["precision"] + result["recall"])
    )
    same = xm.improved_precision_recall(real, real + 0.1, k=3, batch_size=4)
    assert same["precision"] == same["recall"] == 1.0
    with pytest.raises(ValueError, match="real: expected more than k"):
        xm.improved_precision_recall(real[:3], fake, k=3)


def test_precision_recall_on_images_labels_its_extractor() -> None:
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 0.4, (14, 4, 16, 16))
    result = xm.precision_recall(real, real.copy(), k=3)
    assert result["extractor"] == "band_statistics" and result["comparable_to_paper"] is False
    assert result["precision"] == result["recall"] == 1.0
    dark = xm.precision_recall(real, real * 0.1 + 0.7, k=3)
    assert dark["precision"] == 0.0 and dark["recall"] == 0.0
    assert xm.band_statistics(real).shape == (14, 17 * 4)
    calls = []

    def mean_per_band(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.mean(axis=(2, 3))

    custom = xm.precision_recall(
        da.from_array(real, chunks=(5, 4, 16, 16)), real, k=3, extractor=mean_per_band, batch_size=8
    )
    assert custom["extractor"] == "mean_per_band" and custom["precision"] == 1.0
    assert calls == [8, 6, 8, 6]


def test_vgg16_features_load_user_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = xm.VGG16Features().eval()
    state = model.state_dict()
    path = tmp_path / "vgg16.safetensors"
    save_file({**state, "classifier.6.weight": torch.zeros(2, 4096), "classifier.6.bias": torch.zeros(2)}, str(path))
    loaded = xm.VGG16Features.from_safetensors(path)
    images = torch.rand(2, 3, 40, 40)
    with torch.inference_mode():
        features = loaded(images)
        assert features.shape == (2, 4096) and (features >= 0).all()
        assert torch.equal(features, model(images))
    rgb_first = np.random.default_rng(1).uniform(0, 0.3, (2, 13, 40, 40))
    result = xm.precision_recall(rgb_first, rgb_first, k=1, weights=path)
    assert result["extractor"] == "vgg16_fc2" and result["comparable_to_paper"] is True
    assert result["precision"] == result["recall"] == 1.0
    save_file({k: v for k, v in state.items() if k != "classifier.3.bias"}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="classifier.3.bias"):
        xm.VGG16Features.from_safetensors(tmp_path / "bad.safetensors")


# --- downstream -------------------------------------------------------------------------------------------------


def test_lulc_agreement() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 400).reshape(40, 40)
    means = np.array([[0.05, 0.3, 0.1], [0.1, 0.05, 0.4], [0.3, 0.3, 0.3], [0.02, 0.02, 0.02]])
    target = means[labels].transpose(2, 0, 1) + rng.normal(0, 0.02, (3, 40, 40))
    labels[:2] = -1  # unlabelled rows
    same = xm.lulc_agreement(target, target, labels, n_estimators=20)
    assert same["agreement"] == 1.0 and same["prediction"] == same["target"]
    assert same["target"]["overall_accuracy"] > 0.95 and same["classes"] == [0, 1, 2, 3]
    assert same["n_train"] + same["n_test"] == 40 * 40 - 80
    noisy = xm.lulc_agreement(target + rng.normal(0, 0.15, target.shape), target, labels, n_estimators=20)
    assert noisy["prediction"]["overall_accuracy"] < noisy["target"]["overall_accuracy"]
    assert noisy["agreement"] < 1.0 and set(noisy["prediction"]["f1"]) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="labels: expected integer classes"):
        xm.lulc_agreement(target, target, labels.astype(float))


# --- figure -----------------------------------------------------------------------------------------------------


def test_plot_evaluation_writes_a_png(tmp_path: Path) -> None:
    s = synthetic(14)
    path = tmp_path / "fig.png"
    fig = plot_evaluation(s["pred"], s["target"], path, band_names=list("abcde"), mask=s["mask"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]  # no temporary left behind
    ax_bar = fig.axes[1]
    assert [t.get_text() for t in ax_bar.get_xticklabels()] == list("abcde")
    heights = [bar.get_height() for bar in ax_bar.patches]
    assert np.allclose(heights, xm.band_nrmse(s["pred"], s["target"]))
    # a large lazy image is block-averaged before it is computed
    big = da.random.default_rng(0).uniform(0, 0.5, (2, 2100, 40), chunks=(2, 700, 40))
    fig = plot_evaluation(big, big * 0.9)
    assert fig.axes[0].images[0].get_array().shape == (700, 13)
    with pytest.raises(ValueError, match="band_names: expected 2 names"):
        plot_evaluation(big, big, band_names=["x"])
