"""The `xcloudfree` command."""

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

import xcloudfree as xcf
from xcloudfree.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"xcloudfree {xcf.__version__}"


@pytest.mark.parametrize("module", ["xcloudfree", "xcloudfree.cli", "xcloudfree.jobs"])
def test_imports_are_light(module):
    # `import xcloudfree` and `xcloudfree --help` load xarray and nothing heavier (DESIGN: heavy imports inside
    # functions); rioxarray alone took over a second when scene.py imported it at the top.
    heavy = ["rioxarray", "rasterio", "torch", "distributed", "matplotlib", "odc.stac", "scipy.ndimage"]
    code = f"import sys; import {module}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_models_and_io_helpers_do_not_load_rasterio():
    # Loading a checkpoint or writing a report reads no raster: xcloudfree.io's names load their module on first use.
    code = (
        "import sys; import xcloudfree.models, xcloudfree.io.jsonfile; from xcloudfree.io import SEN12MSCR; "
        "print([m for m in ('rioxarray', 'rasterio') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_info_on_real_files(sen12mscr_root):
    s2 = sen12mscr_root / "ROIs1970_fall_s2/s2_139/ROIs1970_fall_s2_139_p839.tif"
    result = runner.invoke(app, ["info", str(s2)])
    assert result.exit_code == 0, result.output
    assert "read as: s2" in result.output and "EPSG:32650" in result.output
    assert "band: B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12" in result.output
    s1 = sen12mscr_root / "ROIs1970_fall_s1/s1_139/ROIs1970_fall_s1_139_p839.tif"
    result = runner.invoke(app, ["info", str(s1)])
    assert "read as: s1" in result.output and "polarization: VV, VH" in result.output and "dB" in result.output


def test_info_bad_input(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing.tif")])
    assert result.exit_code == 2 and "expected an existing GeoTIFF file" in result.output


def test_demo_runs_the_main_job(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--size", "160", "--seed", "3"])
    assert result.exit_code == 0, result.output
    for name in ("s2_cloudy.tif", "s2_cloudfree.tif", "mask_dsen2cr.tif", "quicklook.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    with rasterio.open(tmp_path / "s2_cloudy.tif") as src:
        assert src.count == 13 and src.crs.to_epsg() == 32633
        assert src.descriptions[10] == "B10"
    truth = xcf.datasets.synthetic_scene(160, seed=3, cloud_cover=0.4)
    back = xcf.io.read_s2(tmp_path / "s2_cloudy.tif")
    np.testing.assert_array_equal(back.values, truth["s2"].values)
    pred = xcf.io.read_s2(tmp_path / "s2_cloudfree.tif")
    assert pred.dtype == np.float32 and pred.rio.crs == truth.rio.crs
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["model"] == "dsen2cr" and len(report["weights_sha256"]) == 64  # the bundled weights
    inside_pred, inside_id = report["prediction"]["inside_clouds"], report["identity"]["inside_clouds"]
    assert report["prediction_wins_inside_clouds"] is True
    assert inside_pred["psnr"] > inside_id["psnr"] + 10 and inside_pred["mae"] < inside_id["mae"]
    assert (tmp_path / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_lists_counts_and_specs():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "18,947,341" in lines["dsen2cr"] and "14,827,373" in lines["carf"] and "54,416,003" in lines["pix2pix"]
    assert "in [VV, VH, B04, B03, B02] → out [B04, B03, B02]" in lines["pix2pix"]


def test_mask_and_remove_on_files(tmp_path):
    scene = xcf.datasets.synthetic_scene(96, seed=5)
    s2 = xcf.io.write_cog(scene["s2"], tmp_path / "s2.tif")
    s1 = xcf.io.write_cog(scene["s1"], tmp_path / "s1.tif")
    result = runner.invoke(app, ["mask", "--s2", str(s2), "--out", str(tmp_path / "mask.tif")])
    assert result.exit_code == 0, result.output
    classes = xcf.io.read_dem(tmp_path / "mask.tif")  # one layer
    expected = xcf.masking.to_classes(xcf.masking.detect(scene, method="dsen2cr")).values
    np.testing.assert_array_equal(classes.values.astype(np.uint8), expected)
    result = runner.invoke(
        app,
        [
            "remove",
            "--s2",
            str(s2),
            "--s1",
            str(s1),
            "--out",
            str(tmp_path / "free.tif"),
            "--tile",
            "64",
            "--chunk",
            "48",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    free = xcf.io.read_s2(tmp_path / "free.tif")
    direct = xcf.inference.predict(scene, "dsen2cr", tile=64, device="cpu")["s2_cloudfree"]
    np.testing.assert_allclose(free.values, direct.values, rtol=1e-5, atol=1e-2)
    result = runner.invoke(app, ["remove", "--s2", str(s2), "--out", str(tmp_path / "x.tif")])
    assert result.exit_code == 2 and "s1: the model needs Sentinel-1" in result.output


def test_train_command(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {name: dsen2cr, hparams: {features: 4, blocks: 1}}\n"
        "data: {source: synthetic, size: 48, val_samples: 1}\n"
        f"steps: 1\nbatch_size: 1\ncrop: 32\ndevice: cpu\noutput: {tmp_path / 'run'}\n"
    )
    result = runner.invoke(app, ["train", str(cfg)])
    assert result.exit_code == 0, result.output
    assert xcf.models.load(tmp_path / "run" / "model.safetensors").metadata["trained_steps"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: dsen2cr}\nsteps: -1\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "config.steps: expected a positive number" in result.output


def test_evaluate_files_report_and_plot(sen12mscr_root, tmp_path):
    cloudy = sen12mscr_root / "ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif"
    clear = sen12mscr_root / "ROIs1970_fall_s2/s2_139/ROIs1970_fall_s2_139_p839.tif"
    base = ["evaluate", "--pred", str(cloudy), "--target", str(clear), "--mask", "dsen2cr"]
    extra = ["--cloudy", str(cloudy), "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "f.png")]
    result = runner.invoke(app, base + extra)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    reference = json.loads((sen12mscr_root.parent / "reference/metrics_uncrtaints_cloudy_vs_clear.json").read_text())
    ref = next(v for k, v in reference.items() if k.endswith("s2_cloudy_139_p839.tif"))
    assert report["psnr"] == pytest.approx(ref["PSNR"], rel=1e-6)
    assert report["ssim"] == pytest.approx(ref["SSIM"], rel=1e-6)
    assert report["mask_method"] == "dsen2cr" and len(report["bands"]) == 13
    assert report["psnr_reproduction"] == "inf"  # outside the mask the "prediction" is the cloudy input
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, [*base, "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "mask: the method 'dsen2cr' runs on the cloudy input" in result.output
