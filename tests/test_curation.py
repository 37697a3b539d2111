"""pix2pix5 data curation: each rule on synthetic scenes, then the real SEN12MS-CR patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr

from xcloudfree.io import SEN12MSCR
from xcloudfree.scene import make_scene
from xcloudfree.training.curation import REASONS, CurationRules, check, curate

SIZE = 32


def sar(vv_db=None, vh_db=None, seed=0) -> np.ndarray:
    """(2, SIZE, SIZE) dB; textured backscatter in [−20, −5] dB unless given."""
    rng = np.random.default_rng(seed)
    layers = [
        rng.uniform(-20, -5, (SIZE, SIZE)) if v is None else np.broadcast_to(v, (SIZE, SIZE)) for v in (vv_db, vh_db)
    ]
    return np.stack(layers).astype(np.float32)


def optical(rgb=None, seed=0) -> np.ndarray:
    """(13, SIZE, SIZE) uint16 DN; R, G, B set to ``rgb`` (SIZE, SIZE) when given, else textured."""
    rng = np.random.default_rng(seed)
    dn = rng.uniform(200, 4000, (13, SIZE, SIZE))
    if rgb is not None:
        dn[[3, 2, 1]] = rgb
    return dn.astype(np.uint16)


def halves(a: float, b: float) -> np.ndarray:
    """Left half DN ``a``, right half ``b``: on the 8-bit scale each channel's std is |a − b|/2 · 255 · gain / 10000."""
    out = np.full((SIZE, SIZE), a)
    out[:, SIZE // 2 :] = b
    return out


def scene(s1=None, s2=None, s2_clear=None, season="summer") -> xr.Dataset:
    attrs = {} if season is None else {"season": season}
    return make_scene(s2=s2, s1=s1, s2_clear=s2_clear, attrs=attrs, validate=False)


def test_good_scene_is_kept_with_stats():
    result = check(scene(s1=sar(), s2=optical(seed=1), s2_clear=optical(seed=2)))
    assert result.kept and result.reasons == []
    s = result.stats
    assert s["rgb_source"] == "s2_clear" and s["rgb_std_min"] == 10.0 and s["season"] == "summer"
    vv_linear = 10 ** (sar()[0].astype(np.float64) / 10)
    assert s["sar_std_VV"] == pytest.approx(vv_linear.std(), rel=1e-6)
    assert s["sar_max_VV"] == pytest.approx(vv_linear.max(), rel=1e-6)
    display = np.clip(optical(seed=2)[[3, 2, 1]] / 10000 * 255 * 2.5, 0, 255)
    assert s["rgb_std"] == pytest.approx(display.std(axis=(1, 2)).mean(), rel=1e-9)


def test_constant_sar_is_rejected():
    result = check(scene(s1=sar(-10.0, -17.0), s2_clear=optical()))
    assert not result.kept and result.reasons == ["sar_std"]
    assert result.stats["sar_std_VV"] < 1e-12


def test_dead_polarisation_is_rejected():
    result = check(scene(s1=sar(None, -17.0), s2_clear=optical()))
    assert result.reasons == ["sar_std"]
    assert result.stats["sar_std_VV"] > 1e-3 and result.stats["sar_std_VH"] < 1e-12


def test_sar_below_noise_floor_is_rejected_by_its_maximum():
    # linear power uniform in [1e-5, 8e-4] (−50 … −31 dB): varies (std ≈ 2e-4 ≥ 1e-4) but never reaches 1e-3
    rng = np.random.default_rng(3)
    dark = (10 * np.log10(rng.uniform(1e-5, 8e-4, (2, SIZE, SIZE)))).astype(np.float32)
    result = check(scene(s1=dark, s2_clear=optical()))
    assert result.reasons == ["sar_max"]
    assert result.stats["sar_std_VV"] >= 1e-4 and result.stats["sar_max_VV"] < 1e-3


def test_sar_scale_choice():
    # SEN12MS-CR caps backscatter at 0 dB: taken literally on dB, "max < 0.001" rejects every patch
    capped = np.minimum(sar(seed=4) + 10, 0.0)
    assert check(scene(s1=capped, s2_clear=optical()), CurationRules(sar_scale="db")).reasons == ["sar_max"]
    assert check(scene(s1=capped, s2_clear=optical())).kept
    # on the network's unit scale, SAR wholly below the −25 dB clip is flat zero
    below_clip = sar(seed=5) - 15.0  # −35 … −20 dB → partly inside the clip range
    assert check(scene(s1=below_clip, s2_clear=optical()), CurationRules(sar_scale="unit")).kept
    buried = np.full((2, SIZE, SIZE), -30.0, np.float32) + np.random.default_rng(6).uniform(-2, 2, (2, SIZE, SIZE))
    result = check(scene(s1=buried.astype(np.float32), s2_clear=optical()), CurationRules(sar_scale="unit"))
    assert result.reasons == ["sar_std", "sar_max"]


def test_sar_nan_pixels_are_ignored_and_all_nan_rejected():
    s1 = sar(seed=7)
    s1[:, :4] = np.nan
    result = check(scene(s1=s1, s2_clear=optical()))
    assert result.kept
    assert result.stats["sar_max_VV"] == pytest.approx(np.nanmax(10 ** (s1[0].astype(np.float64) / 10)), rel=1e-6)
    s1[1] = np.nan
    assert check(scene(s1=s1, s2_clear=optical())).reasons == ["sar_std", "sar_max"]


def test_flat_rgb_thresholds_by_season():
    flat = optical(rgb=halves(1000, 1200))  # std 100 DN → 6.375 on the display scale: between 3 and 10
    for season, kept in (("summer", False), ("winter", True), ("spring", False), ("fall", False), (None, False)):
        result = check(scene(s1=sar(), s2_clear=flat, season=season))
        assert result.stats["rgb_std"] == pytest.approx(6.375)
        assert result.kept is kept, season
        assert result.reasons == ([] if kept else ["rgb_std"])
    relaxed = CurationRules(rgb_std_min_spring=3.0)
    assert check(scene(s1=sar(), s2_clear=flat, season="spring"), relaxed).kept
    assert check(scene(s1=sar(), s2_clear=flat, season="summer"), season="winter").kept  # argument wins
    brighter = CurationRules(rgb_gain=5.0)  # doubles the display std to 12.75
    assert check(scene(s1=sar(), s2_clear=flat), brighter).stats["rgb_std"] == pytest.approx(12.75)


def test_display_scale_saturates():
    # clouds brighter than DN 4000 are all 255 at gain 2.5: a fully cloudy image is flat on the display scale
    white = optical(rgb=halves(5000, 9000))
    result = check(scene(s1=sar(), s2_clear=white))
    assert result.stats["rgb_std"] == 0.0 and result.reasons == ["rgb_std"]


def test_rgb_source_prefers_the_target():
    flat_target, cloudy = optical(rgb=np.full((SIZE, SIZE), 900)), optical(seed=8)
    both = scene(s1=sar(), s2=cloudy, s2_clear=flat_target)
    assert check(both).reasons == ["rgb_std"] and check(both).stats["rgb_source"] == "s2_clear"
    on_input = check(both, CurationRules(rgb_source=("s2",)))
    assert on_input.kept and on_input.stats["rgb_source"] == "s2"
    only_cloudy = check(scene(s1=sar(), s2=cloudy))
    assert only_cloudy.kept and only_cloudy.stats["rgb_source"] == "s2"
    assert check(scene(s1=sar(), s2=cloudy), CurationRules(rgb_source="s2_clear")).reasons == ["no_optical"]


def test_missing_modalities():
    assert check(scene(s2_clear=optical())).reasons == ["no_s1"]
    result = check(scene(s1=sar()))
    assert result.reasons == ["no_optical"] and result.stats["rgb_source"] is None


def test_dask_scene_gives_the_same_verdict():
    ds = scene(s1=sar(seed=9), s2_clear=optical(rgb=halves(1000, 1200)), season="winter")
    eager, lazy = check(ds), check(ds.chunk({"x": 8, "y": 16}))
    assert lazy.kept == eager.kept and lazy.reasons == eager.reasons
    assert lazy.stats.keys() == eager.stats.keys()
    for key, value in eager.stats.items():
        assert lazy.stats[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key


def test_bad_input_raises():
    with pytest.raises(ValueError, match="sar_scale"):
        CurationRules(sar_scale="log")
    with pytest.raises(ValueError, match="rgb_source"):
        CurationRules(rgb_source=("s2_cloudy",))
    with pytest.raises(ValueError, match="rgb_gain"):
        CurationRules(rgb_gain=0)
    good = scene(s1=sar(), s2_clear=optical())
    with pytest.raises(ValueError, match="season"):
        check(good, season="autumn")
    with pytest.raises(ValueError, match="time"):
        check(xr.concat([good, good], dim="time"))
    with pytest.raises(ValueError, match="scene"):
        check(good["s1"])
    with pytest.raises(ValueError, match="s2_clear"):
        check(good.sel(band=["B02", "B03"]))


def test_curate_report_over_synthetic_scenes():
    scenes = [
        scene(s1=sar(), s2_clear=optical(seed=10)),  # kept
        scene(s1=sar(-10.0, -17.0), s2_clear=optical(rgb=halves(1000, 1200))),  # sar_std + rgb_std
        scene(s1=sar(), s2_clear=optical(rgb=halves(1000, 1200)), season="winter"),  # kept in winter
        scene(s1=sar(), season="fall"),  # no_optical
        scene(s2_clear=optical(), season=None),  # no_s1
    ]
    scenes[0].attrs.update(roi="ROIs1868_summer_1", patch=7)
    report = curate(scenes)
    assert (report.total, report.kept, report.rejected) == (5, 2, 3)
    assert report.kept_indices == [0, 2]
    assert dict(report.by_reason) == {"sar_std": 1, "rgb_std": 1, "no_optical": 1, "no_s1": 1}
    assert report.examples["sar_std"] == ["#1"] and report.examples["no_s1"] == ["#4"]
    assert report.by_season == {
        "summer": {"total": 2, "kept": 1},
        "winter": {"total": 1, "kept": 1},
        "fall": {"total": 1, "kept": 0},
        "unknown": {"total": 1, "kept": 0},
    }
    assert report.samples[0]["name"] == "ROIs1868_summer_1_p7" and report.samples[0]["kept"]
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["rejected"] == 3 and len(as_dict["samples"]) == 5 and as_dict["rules"]["rgb_gain"] == 2.5
    text = str(report)
    assert "kept 2 of 5" in text and REASONS["no_s1"] in text


def test_curate_real_sen12mscr(sen12mscr_root):
    with pytest.warns(UserWarning, match="incomplete"):
        idx = SEN12MSCR(sen12mscr_root, require=("s1", "s2"))
    report = curate(idx)
    assert report.total == len(idx) >= 5
    assert report.kept + report.rejected == report.total == len(report.samples)
    assert sum(c["total"] for c in report.by_season.values()) == report.total
    assert sum(c["kept"] for c in report.by_season.values()) == report.kept == len(report.kept_indices)
    for sample in report.samples:
        assert sample["kept"] == (sample["reasons"] == [])
        assert sample["rgb_source"] == "s2_clear" and sample["season"] in ("spring", "summer", "fall", "winter")
    for reason, count in report.by_reason.items():
        assert count == sum(reason in s["reasons"] for s in report.samples)
    # every real S1 patch carries signal on the linear scale; the literal dB reading would reject them all
    assert "sar_std" not in report.by_reason and "sar_max" not in report.by_reason
    assert curate(idx, CurationRules(sar_scale="db")).by_reason["sar_max"] == report.total
    # the RGB statistic against an independent read of one target file
    sample = report.samples[0]
    with rasterio.open(idx.samples[0].files["s2"]) as src:
        rgb = src.read([4, 3, 2]).astype(np.float64)
    assert sample["rgb_std"] == pytest.approx(np.clip(rgb / 10000 * 255 * 2.5, 0, 255).std(axis=(1, 2)).mean())
