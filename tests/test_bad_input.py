"""Bad input never gives silent garbage: each class of mistake a new user makes is refused with a clear error.

One test per class, parametrised over its cases: argument checks, tiles and halos, band and polarisation names,
values of lazy data, checkpoints, mixed metric scales, output paths, staging files and the Zarr swap, the
temporary checkpoint of an in-memory model, training configurations and resume, and the CLI's one-line errors.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from typer.testing import CliRunner

import xcloudfree as xcf
from xcloudfree.cli import app
from xcloudfree.inference import runtime
from xcloudfree.io import geotiff
from xcloudfree.sensors import S2_BAND_NAMES

runner = CliRunner()


@pytest.fixture(scope="module")
def scene() -> xr.Dataset:
    return xcf.datasets.synthetic_scene(48, seed=5, cloud_cover=0.3)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return xcf.models.create("dsen2cr", features=8, blocks=1)


def write_tif(path: Path, data: np.ndarray, descriptions: list[str] | None = None, **profile) -> Path:
    """A small georeferenced GeoTIFF (band, y, x); band descriptions when given."""
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=count,
        height=height,
        width=width,
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=rasterio.transform.from_origin(500000, 4600000, 10, 10),
        **profile,
    ) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or [], 1):
            dst.set_band_description(i, text)
    return path


def dn(bands: int = 13, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(200, 4000, (bands, size, size)).astype(np.uint16)


def sar(size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).uniform(-25, -5, (2, size, size)).astype(np.float32)


# --- arguments ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": -3}, r"^batch_size: expected an integer ≥ 1, found -3"),
        ({"batch_size": 0}, r"^batch_size: expected an integer ≥ 1, found 0"),
        ({"tile": 64.0}, r"^tile: expected an integer ≥ 1, found 64.0 \(float\)"),
        ({"tile": "64"}, r"^tile: expected an integer ≥ 1, found '64' \(str\)"),
        ({"tile": True}, r"^tile: expected an integer"),
        ({"overlap": -1}, r"^overlap: expected an integer in \[0, 63\], found -1"),
        ({"overlap": 64}, r"^overlap: expected an integer in \[0, 63\], found 64"),
        ({"device": "tpu"}, r"^device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'tpu'"),
        ({"device": 0}, r"^device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 0 \(int\)"),
        ({"precision": "fp8"}, r"^precision: expected one of .*found 'fp8'"),
        ({"blend": "linear"}, r"^blend: expected one of"),
    ],
)
def test_arguments_are_checked_before_any_work(scene, model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        xcf.inference.predict(scene, model, **{"tile": 64, "device": "cpu", **kwargs})
    with pytest.raises(ValueError, match=message):
        scene.cloudfree.remove(model=model, **{"tile": 64, "device": "cpu", **kwargs})


def test_tiles_must_hold_the_halo(scene, model):
    halo = model.spec.halo
    with pytest.raises(ValueError, match=rf"^tile: expected more than twice the model's halo \({halo} px"):
        xcf.inference.predict(scene, model, tile=4, device="cpu")
    with pytest.raises(ValueError, match=r"^tile: expected more than twice"):
        xcf.inference.predict(scene, model, tile=2 * halo, device="cpu")
    out = xcf.inference.predict(scene, model, tile=2 * halo + 8, device="cpu")["s2_cloudfree"]
    assert np.isfinite(out.values).all()


# --- band and polarisation names ----------------------------------------------------------------------------------
def test_band_names_are_kept_or_refused_never_overwritten(tmp_path, scene):
    # Named data in another order keep their names: B01 holds B01's values, not B12's.
    reordered = scene["s2"].isel(band=slice(None, None, -1))
    built = xcf.make_scene(s2=reordered, s1=scene["s1"])
    np.testing.assert_array_equal(built["s2"].sel(band="B01").values, scene["s2"].sel(band="B01").values)
    data = dn()
    order = list(S2_BAND_NAMES[::-1])
    read = xcf.io.read_s2(write_tif(tmp_path / "rev.tif", data, order))
    assert list(read["band"].values) == order
    np.testing.assert_array_equal(read.sel(band="B01").values, data[-1])

    numbered = [f"B{i}" for i in range(1, 14)]
    path = write_tif(tmp_path / "numbered.tif", data, numbered)
    cases = [
        ({}, r"^s2: expected Sentinel-2 band names .* found band descriptions \['B1', 'B2'.*'B1': 'B01'"),
        ({"bands": list(S2_BAND_NAMES)}, r"^bands: expected the names s2 carries in its band descriptions"),
        ({"bands": {"B1": "B01"}}, r"^bands: expected a Sentinel-2 name for each .* none for \['B2'"),
        ({"bands": "B01"}, r"^bands: expected a list of band names or a mapping"),
        ({"product": "L3"}, r"^product: expected 'L1C' or 'L2A'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            xcf.io.read_s2(path, **kwargs)
    # An explicit mapping is the way in: B1 → B01 ... (B13 is this file's name for B12, B9 for B8A, and so on).
    mapping = dict(zip(numbered, S2_BAND_NAMES, strict=True))
    mapped = xcf.io.read_s2(path, bands=mapping)
    assert list(mapped["band"].values) == list(S2_BAND_NAMES)
    np.testing.assert_array_equal(mapped.sel(band="B12").values, data[12])


def test_polarisations_are_kept_or_refused_never_renamed(tmp_path):
    hh = write_tif(tmp_path / "hh.tif", sar(), ["HH", "HV"])
    with pytest.raises(ValueError, match=r"^s1: expected 2 distinct polarisations .* found band descriptions \['HH'"):
        xcf.io.read_s1(hh)
    with pytest.raises(ValueError, match=r"^polarizations: expected the polarisations s1 carries .*\['HH', 'HV'\]"):
        xcf.io.read_s1(hh, polarizations=["VV", "VH"])
    snap = xcf.io.read_s1(write_tif(tmp_path / "snap.tif", sar(), ["Sigma0_VH_db", "Sigma0_VV_db"]))
    assert list(snap["polarization"].values) == ["VH", "VV"]
    bare = xr.DataArray(sar(), dims=("polarization", "y", "x"), coords={"polarization": ["HH", "HV"]})
    with pytest.raises(ValueError, match=r"^s1: expected 2 distinct polarisations .* band coordinate \['HH', 'HV'\]"):
        xcf.make_scene(s2=dn(), s1=bare)


# --- values of lazy data ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("linear_s1", r"^s1: expected backscatter in dB .* in a sample of the \(lazy\) data that look linear"),
        ("reflectance_s2", r"^s2: expected digital numbers .* that look like 0–1 reflectance"),
        ("uint8_s2", r"^s2: expected digital numbers .* found uint8: an 8-bit rendering"),
        ("truncated_s2", r"^s2: expected a readable GeoTIFF, found '.*truncated.tif'"),
    ],
)
def test_lazy_inputs_are_value_checked(tmp_path, kind, message):
    s2, s1 = dn(size=64), sar(64)
    if kind == "linear_s1":
        s1 = 10 ** (s1 / 10)
    elif kind == "reflectance_s2":
        s2 = s2.astype(np.float32) / 10000
    elif kind == "uint8_s2":
        s2 = (s2 // 16).astype(np.uint8)
    paths = {"s2": write_tif(tmp_path / "s2.tif", s2), "s1": write_tif(tmp_path / "s1.tif", s1)}
    if kind == "truncated_s2":
        whole = paths["s2"].read_bytes()
        paths["s2"] = tmp_path / "truncated.tif"
        paths["s2"].write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=message):
        xcf.io.open_scene(**paths, chunks={"x": 32, "y": 32})
    out = tmp_path / "o.tif"
    result = runner.invoke(app, ["remove", "--s2", str(paths["s2"]), "--s1", str(paths["s1"]), "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert not out.exists()


def test_the_value_sample_reads_a_few_blocks(tmp_path):
    data = dn(size=512)
    data[:, 300:340, 400:440] = 0  # outside every sampled window
    path = write_tif(tmp_path / "big.tif", data, tiled=True, blockxsize=128, blockysize=128)
    lazy = xcf.io.read_s2(path, chunks={"x": 256, "y": 256})
    sample = xcf.scene.value_sample(lazy)
    n = xcf.scene.SAMPLE_WINDOWS**2 * xcf.scene.SAMPLE_SIDE**2
    assert sample.shape == (13, n) and sample.min() >= 200
    last = data[:, 384 : 384 + xcf.scene.SAMPLE_SIDE, 384 : 384 + xcf.scene.SAMPLE_SIDE].reshape(13, -1)
    np.testing.assert_array_equal(sample[:, -last.shape[1] :], last)  # the last block's window, read from the file
    # A lazy array that is not the whole file: windows in its first and last chunks.
    part = xcf.scene.value_sample(lazy.isel(x=slice(0, 500)))
    assert part.shape == (13, 2 * n)
    np.testing.assert_array_equal(part[:, : xcf.scene.SAMPLE_SIDE], data[:, 0, : xcf.scene.SAMPLE_SIDE])
    # A COG: its overview, whole.
    cog = xcf.io.write_cog(lazy, tmp_path / "cog.tif", blocksize=128)
    overview = xcf.scene.value_sample(xcf.io.read_s2(cog, chunks={"x": 256, "y": 256}))
    assert overview.shape[0] == 13 and overview.shape[1] < 512 * 512 / 3


# --- checkpoints --------------------------------------------------------------------------------------------------
def _forge(src: Path, dst: Path, edit) -> Path:
    """A copy of a checkpoint with its JSON header edited by ``edit(dict)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["xcloudfree"])
    edit(info)
    save_file(tensors, str(dst), metadata={**meta, "xcloudfree": json.dumps(info)})
    return dst


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("string", r"hparams.features: expected an integer in \[1, 4096\], found '8' \(str\)"),
        ("negative", r"hparams.blocks: expected an integer in \[1, 4096\], found -1"),
        ("huge", r"hparams.features: expected an integer in \[1, 4096\], found 1000000000"),
        ("deep", r"build a network with more parameters than the \d+ tensors the file holds"),
        ("wide", r"the weights do not fit .* wrong shape"),
        ("bool", r"hparams.sar: expected true or false, found 'yes'"),
        ("relabelled", r"spec expected \{'output_bands'.* found .*would mislabel"),
        ("halo", r"spec expected \{'halo': \d+\} .* found \{'halo': 0\}: .* cut its receptive field"),
        ("typed", r"the saved spec is not valid: spec.halo: expected an integer ≥ 0, found '8' \(str\)"),
    ],
)
def test_checkpoints_are_checked_before_allocating(tmp_path, model, case, message):
    good = xcf.models.save(model, tmp_path / "good.safetensors")
    edits = {
        "string": lambda i: i["hparams"].update(features="8"),
        "negative": lambda i: i["hparams"].update(blocks=-1),
        "huge": lambda i: i["hparams"].update(features=10**9),
        "deep": lambda i: i["hparams"].update(blocks=4000),  # 7 s to build on the meta device, cut short
        "wide": lambda i: i["hparams"].update(features=4096),  # 2·10⁸ parameters: shapes compared on meta
        "bool": lambda i: i["hparams"].update(sar="yes"),
        "relabelled": lambda i: i["spec"].update(output_bands=i["spec"]["output_bands"][::-1]),
        "halo": lambda i: i["spec"].update(halo=0),
        "typed": lambda i: i["spec"].update(halo="8"),
    }
    bad = _forge(good, tmp_path / f"{case}.safetensors", edits[case])
    with pytest.raises(ValueError, match=message):
        xcf.models.load(bad)
    with pytest.raises(ValueError, match=message):
        xcf.inference.predict(xcf.datasets.synthetic_scene(24, seed=1), bad, tile=64, device="cpu")


# --- metrics ------------------------------------------------------------------------------------------------------
def test_metrics_refuse_dn_scored_against_reflectance(scene):
    target = (scene["s2_clear"].values / 10000).astype(np.float32)
    pred = scene["s2"].values.astype(np.float32)
    with pytest.raises(ValueError, match=r"^pred: expected reflectance in \[0, 1\], found values up to .* DN .*target"):
        xcf.metrics.evaluate(pred, target)
    with pytest.raises(ValueError, match=r"^target: expected reflectance in \[0, 1\].*look like DN.*while pred"):
        xcf.metrics.evaluate(target, pred)
    # A scene whose target holds 0–1 reflectance where DN belong: scaled twice, it is refused, not scored.
    mixed = scene.assign(s2_cloudfree=scene["s2"].astype("float32"), s2_clear=scene["s2_clear"] / 10000)
    with pytest.raises(ValueError, match=r"^target: expected reflectance .* divided by 10000 twice"):
        mixed.cloudfree.evaluate()


# --- output paths, staging files, the Zarr swap ----------------------------------------------------------------------
def _writers(scene, model):
    return {
        "cog": lambda p: xcf.io.write_cog(scene["s2"], p),
        "zarr": lambda p: xcf.io.write_zarr(scene[["s1"]], p),
        "checkpoint": lambda p: xcf.models.save(model, p),
    }


@pytest.mark.parametrize("writer", ["cog", "zarr", "checkpoint"])
def test_output_paths_are_checked(tmp_path, scene, model, writer):
    write = _writers(scene, model)[writer]
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("keep me")
    cases = [
        (tmp_path / "file" / "out", r"^path: expected a folder to write into, found the file '.*file' in the way"),
        (Path("/proc/xcloudfree-out"), r"^path: expected a writable folder, found '/proc' not writable"),
    ]
    if writer == "zarr":
        cases += [
            (tmp_path / "file", r"^path: expected a directory \(Zarr store\) path, found an existing file"),
            (tmp_path / "folder", r"^path: expected a new path or an existing Zarr store .* holding other files"),
        ]
    else:
        cases.append((tmp_path / "folder", r"^path: expected a file path to write, found an existing directory"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            write(path)
    assert (tmp_path / "folder" / "notes.txt").read_text() == "keep me"
    written = write(tmp_path / "new" / "deeper" / "out")
    assert written.exists() and sorted(p.name for p in written.parent.iterdir()) == ["out"]


def test_staging_files_never_pile_up(tmp_path, scene, monkeypatch):
    target = tmp_path / "out.tif"
    # A failed write removes its own staging files.
    monkeypatch.setattr("rasterio.shutil.copy", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        xcf.io.write_cog(scene["s2"], target)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # Killed writes (a process that no longer runs) leave staging files: the next write to the target removes
    # them; a live writer's files and other targets' files stay.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(done.stdout), os.getppid()
    host = geotiff._HOST
    stale = [f".out.tif.xcf-{host}-{dead}-0123abcd.tmp", f".out.tif.xcf-{host}-{dead}-0123abcd.staging.tif"]
    kept = [f".out.tif.xcf-{host}-{alive}-89abcdef.staging.tif", f".other.tif.xcf-{host}-{dead}-0123abcd.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / f".out.tif.xcf-{host}-{dead}-deadbeef.tmp").mkdir()  # a killed Zarr staging store
    xcf.io.write_cog(scene["s2"], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "out.tif"])


_KILLED_SWAP = """
import os, sys, time
import xcloudfree as xcf
from xcloudfree.io import geotiff
ds = xcf.datasets.synthetic_scene(16, seed=2)[["s1"]]
geotiff._exchange = lambda a, b: False  # a platform without an atomic exchange: two renames
real = os.replace
def slow(a, b):
    real(a, b)
    if str(b).endswith(".old"):
        print("between", flush=True)
        time.sleep(60)
os.replace = slow
xcf.io.write_zarr(ds, sys.argv[1])
"""


def test_zarr_replacement_never_leaves_no_store(tmp_path, scene):
    target = tmp_path / "scene.zarr"
    xcf.io.write_zarr(scene[["s1"]], target)
    # With the atomic exchange (Linux), replacing leaves exactly the new store and nothing else.
    xcf.io.write_zarr(scene[["dem"]], target)
    assert list(xr.open_zarr(target).data_vars) == ["dem"] and os.listdir(tmp_path) == ["scene.zarr"]
    # Without it, a kill between the two renames leaves the old store aside; the next write puts it back first.
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SWAP, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "between"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not target.exists()
    restored = geotiff.clean_stale(target)
    assert target.exists() and list(xr.open_zarr(target).data_vars) == ["dem"]
    assert [p.suffix for p in restored] == [".tmp"]  # the new store, complete but never swapped in
    xcf.io.write_zarr(scene[["s1"]], target)
    assert list(xr.open_zarr(target).data_vars) == ["s1"] and os.listdir(tmp_path) == ["scene.zarr"]


def test_in_memory_model_checkpoint_is_removed(model, monkeypatch):
    monkeypatch.setattr(runtime, "active_client", lambda: object())  # as under a dask.distributed client
    shipped = []
    monkeypatch.setattr(runtime, "ship_file", lambda client, path, name: shipped.append(name))
    module = xcf.models.create("dsen2cr", features=4, blocks=1)
    ref, _ = runtime.resolve_model(module, device="cpu")
    folder = Path(ref.path).parent
    assert folder.is_dir() and folder.name.startswith("xcloudfree-model-")
    assert shipped == [f"xcloudfree-model-{ref.sha256}.safetensors"]  # the workers get their own copy
    del module
    gc.collect()
    assert not folder.exists()


# --- training -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {name: dsen2cr\nsteps: 3\n", r"^config: expected valid YAML in .*, found .* at line 2"),
        ("- model\n- steps\n", r"^config: expected a mapping of sections .* found a list"),
        ("steps: ten\n", r"^config.steps: expected int, found 'ten'"),
        ("stepz: 3\n", r"^config.stepz: unknown key"),
        ("model: dsen2cr\n", r"^config.model: expected a mapping, found 'dsen2cr'"),
        ("data: {cloud_cover: [0.9, 0.1]}\n", r"^config.data.cloud_cover: expected \[min, max\] fractions"),
        ("workers: -1\n", r"^config.workers: expected an integer ≥ 0, found -1"),
        ("device: tpu\n", r"^config.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'tpu'"),
        ("optimizer: {betas: [0.5]}\n", r"^config.optimizer.betas: expected two numbers"),
    ],
)
def test_configs_name_the_bad_key(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        xcf.training.load_config(path)


def test_bad_hyperparameters_in_a_config_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"^hparams.features: expected an integer in \[1, 4096\], found '64'"):
        xcf.training.make_trainer({"model": {"name": "dsen2cr", "hparams": {"features": "64"}}, "device": "cpu"})


def test_resume_refuses_a_changed_configuration(tmp_path):
    from xcloudfree.training import make_trainer

    base = {
        "model": {"name": "dsen2cr", "hparams": {"features": 4, "blocks": 1}},
        "data": {"source": "synthetic", "size": 32, "val_samples": 1},
        "steps": 1,
        "batch_size": 1,
        "crop": 16,
        "device": "cpu",
        "output": str(tmp_path / "run"),
    }
    make_trainer(base).fit()
    state = tmp_path / "run" / "state.safetensors"
    changed = {**base, "optimizer": {"lr": 1e-3}, "batch_size": 2}
    with pytest.raises(ValueError, match=r"^resume: expected the configuration .* \['batch_size', 'optimizer.lr'\]"):
        make_trainer(changed).load_state(state)
    with pytest.warns(UserWarning, match=r"resume: continuing with a changed configuration: batch_size: 1 → 2"):
        make_trainer(changed).load_state(state, allow_changes=True)
    with pytest.warns(UserWarning, match=r"steps: 1 → 5"):
        make_trainer({**base, "steps": 5}).load_state(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make_trainer({**base, "log_every": 7}).load_state(state)  # cadence changes are fine
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    result = runner.invoke(app, ["train", str(path), "--resume"])
    assert result.exit_code == 2 and result.stderr.startswith("error: resume: expected the configuration")


# --- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_turns_every_expected_error_into_one_line(tmp_path):
    s2 = write_tif(tmp_path / "s2.tif", dn())
    s1 = write_tif(tmp_path / "s1.tif", sar())
    refl = write_tif(tmp_path / "refl.tif", dn().astype(np.float32) / 10000)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {name: dsen2cr\n")
    (tmp_path / "dir.tif").mkdir()
    remove = ["remove", "--s2", str(s2), "--s1", str(s1), "--device", "cpu"]
    cases = [
        ([*remove, "--out", str(tmp_path / "o.tif"), "--batch-size", "-1"], "batch_size: expected an integer ≥ 1"),
        ([*remove, "--out", str(tmp_path / "o.tif"), "--tile", "8"], "tile: expected more than twice"),
        ([*remove, "--out", str(tmp_path / "o.tif"), "--device", "tpu"], "device: expected 'auto'"),
        ([*remove, "--out", str(tmp_path / "dir.tif")], "path: expected a file path to write"),
        ([*remove, "--out", "/proc/o.tif"], "path: expected a writable folder"),
        (["mask", "--s2", str(refl), "--out", str(tmp_path / "m.tif")], "s2: expected digital numbers"),
        (["mask", "--s2", str(s2), "--out", str(s2 / "m.tif")], "path: expected a folder to write into"),
        (["evaluate", "--pred", str(s2), "--target", str(refl), "--json", str(tmp_path / "r.json")], "target:"),
        (["train", str(bad_yaml)], "config: expected valid YAML"),
        (["train", str(tmp_path / "missing.yaml")], "config: expected a YAML or JSON file"),
        (["info", str(s1), "--as", "s2"], "s2: expected 13 Sentinel-2 bands"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"error: {message}"), (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.output


def test_cli_errors_of_new_commands_are_caught_too():
    # Commands added later get the same treatment without their own try/except.
    import typer

    from xcloudfree import cli

    extra = typer.Typer(cls=cli._Commands)

    @extra.command()
    def fail(kind: str) -> None:
        raise {"value": ValueError("x: expected y, found z"), "os": FileNotFoundError(2, "No such file", "f")}[kind]

    @extra.command()
    def other() -> None:
        pass

    for kind, line in (("value", "error: x: expected y, found z\n"), ("os", "error: [Errno 2] No such file: 'f'\n")):
        result = runner.invoke(extra, ["fail", kind])
        assert (result.exit_code, result.stderr) == (2, line)
