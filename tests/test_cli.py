"""The `xcloudfree` command."""

import subprocess
import sys

import numpy as np
import rasterio
from typer.testing import CliRunner

import xcloudfree as xcf
from xcloudfree.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"xcloudfree {xcf.__version__}"


def test_help_is_fast_and_light():
    # `xcloudfree --help` must not import torch or distributed (DESIGN: heavy imports inside functions).
    code = "import sys; import xcloudfree.cli; print('torch' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


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


def test_demo_writes_cogs_and_quicklook(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--size", "128"])
    assert result.exit_code == 0, result.output
    for name in ("s2_cloudy.tif", "s2_clear.tif", "s1.tif", "dem.tif", "mask_dsen2cr.tif", "quicklook.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with rasterio.open(tmp_path / "s2_cloudy.tif") as src:
        assert src.count == 13 and src.crs.to_epsg() == 32633
        assert src.descriptions[10] == "B10"
    back = xcf.io.open_scene(s2=tmp_path / "s2_cloudy.tif", s1=tmp_path / "s1.tif", dem=tmp_path / "dem.tif")
    truth = xcf.datasets.synthetic_scene(128, seed=0, cloud_cover=0.4)
    np.testing.assert_array_equal(back["s2"].values, truth["s2"].values)
    assert (tmp_path / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
