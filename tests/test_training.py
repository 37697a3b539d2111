"""Training: every trainer runs, checkpoints load, resume is exact, configs are validated, data are consistent."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import xcloudfree as xcf
from xcloudfree.training import load_config, make_trainer, train
from xcloudfree.training.data import SyntheticDataset, augment, batch_indices, curated

TINY = {
    "dsen2cr": {"features": 8, "blocks": 1},
    "carf": {"features": 16, "growth": 8, "blocks": 1, "layers": 1, "heads": 2, "window": 4},
    "pix2pix": {"num_downs": 5, "ngf": 4},
    "acgan": {"ngf": 4, "n_blocks": 1},
    "cyclecr": {"ngf": 4, "n_blocks": 1},
}


def config(name, tmp_path, **overrides):
    return {
        "model": {"name": name, "hparams": TINY[name]},
        "data": {"source": "synthetic", "size": 64, "val_samples": 1},
        "steps": 2,
        "batch_size": 2,
        "crop": 32 if name != "pix2pix" else 32,
        "device": "cpu",
        "log_every": 1,
        "val_every": 2,
        "checkpoint_every": 2,
        "output": str(tmp_path / name),
        **overrides,
    }


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_trainer_runs_two_steps(name, tmp_path):
    cfg = config(name, tmp_path)
    trainer = make_trainer(cfg)
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    path = trainer.fit()
    assert trainer.step == 2
    changed = [k for k, v in trainer.generator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no generator weight changed"
    log = (tmp_path / name / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and all(np.isfinite(float(x)) for x in log[-1].split(",")[1:])
    val = (tmp_path / name / "val_log.csv").read_text().splitlines()
    assert val[0].split(",") == ["step", "mae", "rmse", "psnr", "ssim", "sam"] and len(val) == 2
    model = xcf.models.load(path)
    assert model.architecture == name and model.metadata["trained_steps"] == 2
    x = torch.zeros(1, model.spec.in_channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.generator.eval()(x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_resume_is_exact(name, tmp_path):
    # An image pool of 1 and (pix2pix) dropout draw from torch's generator: resume must continue its stream exactly.
    extra = {"steps": 2, "checkpoint_every": 1, "pool_size": 1}
    if name == "pix2pix":
        extra.update(model={"name": name, "hparams": {"num_downs": 6, "ngf": 4}}, crop=64)
    straight = make_trainer(config(name, tmp_path / "a", **extra))
    straight.fit()
    make_trainer(config(name, tmp_path / "b", **extra)).fit(steps=1)
    train(config(name, tmp_path / "b", **extra), resume=True)
    resumed = xcf.models.load(tmp_path / "b" / name / "model.safetensors")
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key  # bit for bit
    rows = (tmp_path / "b" / name / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


def test_adversarial_resume_keeps_optimizer_state(tmp_path):
    cfg = config("pix2pix", tmp_path, steps=2)
    trainer = make_trainer(cfg)
    trainer.fit()
    again = make_trainer(cfg)
    again.load_state(tmp_path / "pix2pix" / "state.safetensors")
    assert again.step == 2
    a, b = trainer.optimizers["D"].state_dict(), again.optimizers["D"].state_dict()
    for idx in a["state"]:
        torch.testing.assert_close(a["state"][idx]["exp_avg"], b["state"][idx]["exp_avg"])
    assert again.schedules["G"].last_epoch == 2


def test_method_defaults_and_validation(tmp_path):
    cfg = load_config({"model": {"name": "dsen2cr"}})
    assert (cfg.loss.name, cfg.optimizer.name, cfg.optimizer.lr) == ("carl", "nadam", 7e-5)
    cfg = load_config({"model": {"name": "pix2pix"}})
    assert cfg.loss.params["lam"] == 100.0 and cfg.optimizer.betas == [0.5, 0.999] and cfg.schedule.name == "linear"
    assert load_config({"model": {"name": "carf"}}).schedule.name == "step"
    assert load_config({"model": {"name": "dsen2cr"}, "loss": {"name": "l1"}}).loss.params == {}
    bad = [
        ({"model": {"name": "unet3d"}}, r"config.model.name: expected one of"),
        ({"stepz": 3}, r"config.stepz: unknown key"),
        ({"data": {"sizee": 3}}, r"config.data.sizee: unknown key"),
        ({"optimizer": {"lr": "fast"}}, r"config.optimizer.lr: expected float or None, found 'fast'"),
        ({"steps": 0}, r"config.steps: expected a positive number, found 0"),
        ({"data": {"source": "sen12mscr"}}, r"config.data.root: expected the SEN12MS-CR folder"),
        ({"crop": 256, "data": {"size": 128}}, r"config.crop: expected at most data.size"),
    ]
    for raw, message in bad:
        with pytest.raises(ValueError, match=message):
            load_config(raw)
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: dsen2cr}\nsteps: 5\n")
    assert load_config(path).steps == 5
    with pytest.raises(ValueError, match="config: expected a YAML or JSON file"):
        load_config(tmp_path / "missing.yaml")


def test_augmentation_is_identical_for_every_tensor():
    spec = xcf.models.create("dsen2cr", features=4, blocks=1).spec
    data = SyntheticDataset(spec, size=64, crop=48, seed=3)
    raw = data._sample(5)
    # make every tensor carry the same pattern so that any misalignment shows
    pattern = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64)
    sample = {k: v * 0 + pattern for k, v in raw.items()}
    for seed in range(6):
        out = augment(sample, np.random.default_rng(seed), crop=48)
        first = out["input"][0]
        assert first.shape == (48, 48)
        for v in out.values():
            assert torch.equal(v[0], first)
    # the same index and draw give the same sample; another draw a different crop
    torch.testing.assert_close(data.sample(5, 1)["target"], data.sample(5, 1)["target"])
    assert not torch.equal(data.sample(5, 1)["target"], data.sample(5, 2)["target"])


def test_batches_are_a_function_of_the_step():
    a = [batch_indices(s, 4, 10, seed=1) for s in range(5)]
    assert a == [batch_indices(s, 4, 10, seed=1) for s in range(5)]
    epoch = sorted(i for s in (0, 1) for i in batch_indices(s, 4, 10, seed=1)) + batch_indices(2, 4, 10, seed=1)[:2]
    assert sorted(epoch) == list(range(10))  # the first 10 draws are one permutation


def test_parallel_loading_changes_nothing(tmp_path):
    serial = make_trainer(config("dsen2cr", tmp_path / "serial"))
    serial.fit()
    parallel = make_trainer(config("dsen2cr", tmp_path / "parallel", workers=2))
    parallel.fit()
    for key, value in serial.generator.state_dict().items():
        torch.testing.assert_close(parallel.generator.state_dict()[key], value, rtol=0, atol=0)


def test_geotiff_source_with_synthetic_clouds_on_clear_data(tmp_path):
    scene = xcf.datasets.synthetic_scene(64, seed=9, cloud_cover=0.0)
    files = {
        "s2": str(xcf.io.write_cog(scene["s2_clear"], tmp_path / "clear_as_input.tif")),
        "s2_clear": str(xcf.io.write_cog(scene["s2_clear"], tmp_path / "clear.tif")),
        "s1": str(xcf.io.write_cog(scene["s1"], tmp_path / "s1.tif")),
    }
    cfg = config(
        "dsen2cr",
        tmp_path,
        data={"source": "geotiff", "files": [files], "synthetic_clouds": "perlin", "val_samples": 1},
    )
    trainer = make_trainer(cfg)
    sample = trainer.dataset._sample(0)
    # the input got Perlin clouds where the mask says so; the target stayed clear
    mask = sample["mask"][0]
    assert 0.05 < float((mask > 0.1).float().mean()) < 0.95
    bright = sample["input"][1][mask > 0.9].mean() if (mask > 0.9).any() else None
    assert bright is None or bright > sample["target"][1][mask > 0.9].mean() + 1.0  # B02 on the [0, 5] scale
    torch.testing.assert_close(sample["input"][:13][:, mask == 0], sample["target"][:, mask == 0])
    assert trainer.fit().is_file()


def test_copy_paste_clouds_from_a_donor():
    from xcloudfree.training.data import with_synthetic_clouds

    clear = xcf.datasets.synthetic_scene(64, seed=1, cloud_cover=0.0)
    donor = xcf.datasets.synthetic_scene(64, seed=2, cloud_cover=0.6)
    out = with_synthetic_clouds(clear, np.random.default_rng(0), method="copy_paste", donor=donor)
    m = out["mask"].values
    assert m.max() > 0.9 and m.min() < 1e-3
    free = m < 1e-3
    np.testing.assert_allclose(out["s2"].values[:, free], clear["s2_clear"].values[:, free], rtol=0.01)
    thick = m > 0.99
    np.testing.assert_allclose(out["s2"].values[:, thick], donor["s2"].values[:, thick], rtol=0.02)
    with pytest.raises(ValueError, match="donor: expected a cloudy scene"):
        with_synthetic_clouds(clear, np.random.default_rng(0), method="copy_paste")


def test_pix2pix_curates_real_data_by_default(sen12mscr_root, tmp_path):
    cfg = config(
        "pix2pix", tmp_path, data={"source": "sen12mscr", "root": str(sen12mscr_root), "split": None, "val_samples": 1}
    )
    cfg["crop"] = 64
    with pytest.warns(UserWarning, match="incomplete"):
        trainer = make_trainer(cfg)
    report = json.loads((tmp_path / "pix2pix" / "curation.json").read_text())
    # of the two complete triplets the RGB rule keeps winter_112 (the fall_139 target is too flat, REFERENCE §4)
    assert report["total"] == 2 and report["kept"] == 1 and len(trainer.dataset) == 1
    assert trainer.dataset.scenes[0].attrs["roi"] == "ROIs2017_winter_112"
    assert load_config({"model": {"name": "dsen2cr"}}).data.curate is None  # other methods do not curate


def test_carf_learning_rate_halves_after_exactly_five_epochs(tmp_path, monkeypatch):
    # StepLR(5 epochs, 0.5) (REFERENCE §4): 37 samples in batches of 4 make 9 steps an epoch, so the rate halves
    # at steps 45 and 90, whatever the number of steps of the run.
    monkeypatch.setattr(SyntheticDataset, "__len__", lambda self: 37)
    trainer = make_trainer(config("carf", tmp_path, batch_size=4))
    assert (trainer.cfg.schedule.step_size, trainer.cfg.schedule.unit, trainer.steps_per_epoch) == (5, "epochs", 9)
    optimizer, schedule = trainer.optimizers["G"], trainer.schedules["G"]
    rates = []
    for _ in range(91):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: only keeps the scheduler's call order
        schedule.step()
    assert rates[0] == rates[44] == pytest.approx(1e-4)
    assert rates[45] == rates[89] == pytest.approx(5e-5)
    assert rates[90] == pytest.approx(2.5e-5)


def test_schedule_unit_steps_or_epochs_in_the_config():
    carf = {"model": {"name": "carf"}}
    assert load_config(carf).schedule.unit == "epochs"
    # A step size of one's own counts steps unless the unit is said too.
    assert load_config({**carf, "schedule": {"step_size": 3000}}).schedule.unit == "steps"
    assert load_config({**carf, "schedule": {"step_size": 2, "unit": "epochs"}}).schedule.unit == "epochs"
    assert load_config({"model": {"name": "dsen2cr"}}).schedule.unit == "steps"
    with pytest.raises(ValueError, match=r"config.schedule.unit: expected 'steps' or 'epochs', found 'days'"):
        load_config({**carf, "schedule": {"unit": "days"}})


def _strict(text):
    """``json.loads`` that refuses NaN and ±Infinity tokens, as any reader but Python's does."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_trainer_follows_the_inference_device_and_precision_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trainer = make_trainer(config("dsen2cr", tmp_path, device="auto"))
    assert trainer.device == torch.device("cpu") and trainer.amp_dtype is None  # amp: true is "auto": fp32 on CPU
    assert not trainer.scaler.is_enabled()
    with pytest.raises(ValueError, match=r"^config.device: expected an available device, found 'cuda'"):
        make_trainer(config("dsen2cr", tmp_path, device="cuda"))
    with pytest.raises(ValueError, match=r"^device: expected an available device, found 'cuda'"):
        xcf.inference.resolve_model(xcf.models.create("dsen2cr", **TINY["dsen2cr"]), device="cuda")


def test_curation_report_with_nan_is_strict_json(tmp_path):
    good = xcf.datasets.synthetic_scene(32, seed=1, cloud_cover=0.3)
    dead = good.copy(deep=True)
    dead["s1"][:] = np.nan  # no valid SAR pixel: the statistics are NaN
    kept = curated([good, dead], tmp_path)
    assert list(kept.indices) == [0]
    report = _strict((tmp_path / "curation.json").read_text())
    assert report["samples"][1]["sar_std_VV"] == "nan" and report["kept"] == 1


def test_state_metadata_is_strict_and_old_metadata_still_loads(tmp_path):
    trainer = make_trainer(config("dsen2cr", tmp_path, steps=1))
    trainer.fit()
    state = tmp_path / "dsen2cr" / "state.safetensors"
    with safe_open(str(state), framework="pt") as f:
        meta = _strict(f.metadata()["xcloudfree_train"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert _strict((tmp_path / "dsen2cr" / "config.json").read_text())["model"]["name"] == "dsen2cr"
    # Metadata as the previous writer made it (Python's json: NaN tokens allowed) loads as before.
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"xcloudfree_train": json.dumps({**meta, "unused": float("nan")})})
    again = make_trainer(config("dsen2cr", tmp_path, steps=1))
    again.load_state(old)
    assert again.step == trainer.step == 1
    for key, value in trainer.generator.state_dict().items():
        assert torch.equal(again.generator.state_dict()[key], value), key
