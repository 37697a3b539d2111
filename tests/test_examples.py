"""Every ``examples/*.py`` runs, offline, with ``--out`` only, and writes valid outputs (PNG, JSON, COG).

The examples run once per session (:func:`run_examples`); the docs build (``test_docs.py``) reuses their figures.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
#: The examples this suite knows in detail; any other example gets the generic checks.
MINE = ("mask_geotiff", "train_sen12mscr", "evaluate_prediction")


@dataclass(frozen=True)
class Run:
    script: Path
    out: Path
    returncode: int
    seconds: float
    cpu_seconds: float
    stdout: str
    stderr: str


@functools.cache
def run_examples(base: str) -> dict[str, Run]:
    """Run every example as a subprocess with ``--out base/<name>`` (once per ``base``); results by name."""
    runs = {}
    for script in SCRIPTS:
        out = Path(base) / script.stem
        start, cpu = time.perf_counter(), _children_cpu()
        proc = subprocess.run(
            [sys.executable, str(script), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
        runs[script.stem] = Run(script, out, proc.returncode, wall, cpu, proc.stdout, proc.stderr)
    return runs


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def examples_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder of example outputs, shared with the docs build."""
    return tmp_path_factory.getbasetemp() / "examples"


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Run]:
    return run_examples(str(examples_base(tmp_path_factory)))


def _ok(run: Run) -> Run:
    assert run.returncode == 0, f"{run.script.name} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


def test_the_examples_are_there():
    names = {p.stem for p in SCRIPTS}
    assert set(MINE) <= names, f"missing examples: {set(MINE) - names}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_says_its_task_and_takes_out(script: Path):
    tree = ast.parse(script.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.splitlines()[0]) > 10, f"{script.name}: expected a module docstring saying the task"
    assert "--out" in script.read_text(), f"{script.name}: expected an --out option"


@pytest.mark.parametrize("name", [p.stem for p in SCRIPTS])
def test_example_runs_and_writes_valid_files(runs: dict[str, Run], name: str):
    from PIL import Image

    run = _ok(runs[name])
    files = [p for p in run.out.rglob("*") if p.is_file()]
    pngs = sorted(run.out.glob("*.png"))
    assert pngs, f"{name}: expected a PNG figure in {run.out}, found {[p.name for p in files]}"
    for png in [p for p in files if p.suffix == ".png"]:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert min(image.size) >= 100, f"{png}: a figure of {image.size} px"
        if name in MINE:
            assert png.stat().st_size < 300_000, f"{png}: {png.stat().st_size} bytes; figures stay < 300 KB"
    for js in [p for p in files if p.suffix == ".json"]:
        json.loads(js.read_text())
    for tif in [p for p in files if p.suffix in (".tif", ".tiff")]:
        _check_cog(tif)
    assert not [p for p in files if p.name.endswith(".tmp")], f"{name}: left temporary files behind"


def _check_cog(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", f"{path}: not a Cloud-Optimized GeoTIFF"
        assert src.crs is not None, f"{path}: no CRS"
        return src.read()


def test_mask_geotiff_classes_on_the_input_grid(runs: dict[str, Run], shared_data: Path):
    import rasterio

    run = _ok(runs["mask_geotiff"])
    classes = _check_cog(run.out / "mask_classes.tif")
    assert set(np.unique(classes)) <= {0, 1, 2, 255}
    summary = json.loads((run.out / "summary.json").read_text())
    with rasterio.open(summary["image"]) as src, rasterio.open(run.out / "mask_classes.tif") as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
    # The real patch is mostly cloudy: the detector must find clouds, and the shares must add up.
    assert summary["shares"]["cloud"] > 0.2
    assert math.isclose(sum(summary["shares"].values()), float(np.mean(classes != 255)), abs_tol=1e-9)
    probability = _check_cog(run.out / "cloud_probability.tif")
    assert np.nanmin(probability) >= 0 and np.nanmax(probability) <= 1


def test_train_sen12mscr_writes_a_checkpoint_and_learns(runs: dict[str, Run]):
    import csv

    from safetensors import safe_open

    run = _ok(runs["train_sen12mscr"])
    # The example itself loads the checkpoint with xcf.models.load; here the file is read without torch.
    with safe_open(run.out / "run" / "model.safetensors", framework="numpy") as f:
        header = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["xcloudfree"])
    assert meta["architecture"] == "dsen2cr" and meta["hparams"]["features"] == 16, meta
    assert weights and all(np.isfinite(w).all() for w in weights.values())
    assert f"({sum(w.size for w in weights.values()):,} parameters)" in run.stdout
    with open(run.out / "run" / "train_log.csv", newline="") as f:
        loss = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(loss) >= 10 and all(map(math.isfinite, loss))
    assert min(loss[-5:]) < loss[0], f"the loss did not go down: {loss}"


def test_evaluate_prediction_scores_against_the_real_target(runs: dict[str, Run]):
    run = _ok(runs["evaluate_prediction"])
    report = json.loads((run.out / "report.json").read_text())
    for key in ("mae", "rmse", "psnr", "ssim", "sam", "mae_reconstruction", "mae_reproduction"):
        assert isinstance(report[key], float) and math.isfinite(report[key]), key
    assert report["mask_method"] == "dsen2cr" and len(report["bands"]) == 13
    comparison = json.loads((run.out / "comparison.json").read_text())
    assert set(comparison["overall"]) == {"prediction", "identity"}
    # The scores are consistent with each other: PSNR = 20·log10(1 / RMSE) on reflectance in [0, 1].
    assert math.isclose(report["psnr"], 20 * math.log10(1 / report["rmse"]), rel_tol=1e-6)
    assert comparison["overall"]["prediction"]["psnr"] == pytest.approx(report["psnr"])
    _check_cog(run.out / "prediction.tif")
