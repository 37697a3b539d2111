"""Trainers: supervised (dsen2cr, carf), paired adversarial (pix2pix5, acgan) and cycle-consistent (cyclecr).

Every trainer follows one loop: draw the batch of step ``s`` (a function of the seed and ``s`` alone), one optimiser
step per network (gradients clipped after backward), schedule, log (CSV + tqdm), validate every ``val_every`` steps,
checkpoint every ``checkpoint_every`` steps and at the end. The state (networks, optimisers, schedules, image pools,
RNG) is one safetensors file plus strict JSON metadata: nothing is pickled, and ``resume`` continues bit for bit on
CPU. What a trainer trains on comes from :class:`~xcloudfree.training.data.TrainingData`; where and in which
precision it runs, from :mod:`xcloudfree.inference.runtime` (the rules of inference).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import models
from ..inference.runtime import amp_dtype, autocast, resolve_device, to_device
from ..io.jsonfile import to_json, write_json
from . import losses
from .config import TrainConfig, load_config
from .data import TrainingData

__all__ = ["Trainer", "SupervisedTrainer", "AdversarialTrainer", "CycleTrainer", "train", "make_trainer"]

_STATE_KEY = "xcloudfree_train"


class ImagePool:
    """A buffer of past fakes (Shrivastava et al.): half the time the discriminator sees an older fake."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)


def _optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    o = cfg.optimizer
    betas = tuple(o.betas) if o.betas else (0.9, 0.999)
    cls = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam, "adamw": torch.optim.AdamW}[o.name]
    return cls(params, lr=o.lr, betas=betas, weight_decay=o.weight_decay)


def _schedule(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate factor per optimiser step; ``schedule.unit: epochs`` counts ``steps_per_epoch`` steps each."""
    s, steps = cfg.schedule, cfg.steps
    step_size = s.step_size * (steps_per_epoch if s.unit == "epochs" else 1)
    if s.name == "linear":  # constant, then linear decay to 0 over the last (1 - start) of the steps
        start = int(s.start * steps)
        factor = lambda k: 1.0 if k < start else max(0.0, 1.0 - (k - start) / max(1, steps - start))  # noqa: E731
    elif s.name == "step":
        factor = lambda k: s.gamma ** (k // step_size)  # noqa: E731
    else:
        factor = lambda k: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """The loop shared by all methods; subclasses define the networks and :meth:`train_step`.

    Attributes
    ----------
    device : torch.device of ``config.device`` (:func:`~xcloudfree.inference.runtime.resolve_device`)
    amp_dtype : autocast dtype, None for float32 (``config.amp``: precision ``"auto"``, else ``"float32"``)
    data : :class:`~xcloudfree.training.data.TrainingData` built from ``config.data``
    """

    def __init__(self, config: TrainConfig | dict | str | Path) -> None:
        self.cfg = cfg = load_config(config)
        # The device and precision rules of inference (xcloudfree.inference.runtime): CUDA asked for where there
        # is none is refused here, not at the first forward pass; ``amp`` is precision "auto", else float32.
        self.device = torch.device(resolve_device(cfg.device, name="config.device"))
        self.amp_dtype = amp_dtype(self.device, "auto" if cfg.amp else "float32")
        # Data draw their randomness from (seed, step); torch's generator drives init, dropout and image pools.
        torch.manual_seed(cfg.seed)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, Any] = {}
        self.pools: dict[str, ImagePool] = {}
        self.build()
        for name, net in self.nets.items():
            to_device(net, self.device)
            self.optimizers[name] = _optimizer(cfg, net.parameters())
        self.generator = self.nets["G"]
        self.step = 0
        self.output = Path(cfg.output)
        self.data = TrainingData.from_config(cfg, self.generator.spec)
        # Schedules in epochs (the papers' unit) need the data set's length: an epoch is len // batch_size steps.
        self.steps_per_epoch = self.data.steps_per_epoch
        for name, optimizer in self.optimizers.items():
            self.schedules[name] = _schedule(cfg, optimizer, self.steps_per_epoch)

    # --- to be defined by each method -------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    # --- data ---------------------------------------------------------------------------------------------------
    @property
    def dataset(self) -> torch.utils.data.Dataset:
        """The training set (:attr:`TrainingData.train`)."""
        return self.data.train

    @property
    def val(self) -> list[dict[str, torch.Tensor]]:
        """The validation samples (:attr:`TrainingData.val`)."""
        return self.data.val

    def batches(self, start: int, end: int) -> Any:
        """The batches of steps ``start … end − 1`` on the trainer's device (:meth:`TrainingData.batches`)."""
        return self.data.batches(start, end, self.device)

    # --- one optimiser step -------------------------------------------------------------------------------------
    def autocast(self) -> Any:
        """The forward passes' autocast context (a no-op in float32)."""
        return autocast(self.device, self.amp_dtype)

    def update(self, names: str | tuple[str, ...], loss: torch.Tensor) -> None:
        """Backward once, clip (after backward, unlike the reference port), step every named network."""
        names = (names,) if isinstance(names, str) else names
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for name in names:
            if self.cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizers[name])
                nn.utils.clip_grad_norm_(self.nets[name].parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizers[name])
        self.scaler.update()

    # --- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """MAE, RMSE, PSNR, SSIM, SAM (reflectance, UnCRtainTS definitions) of the generator on the validation set,
        mean over samples."""
        from ..metrics import evaluate
        from ..sensors import denormalize_s2

        G = self.generator.eval()
        preset = G.spec.normalization
        scores: dict[str, list[float]] = {}
        for sample in self.val:
            x = sample["input"][None].to(self.device)
            with self.autocast():
                y = G(x)
            pred = (denormalize_s2(y[0].float().cpu().numpy(), preset) / 10000).clip(0, 1)
            target = (denormalize_s2(sample["target"].numpy(), preset) / 10000).clip(0, 1)
            result = evaluate(pred, target)
            for key in ("mae", "rmse", "psnr", "ssim", "sam"):
                scores.setdefault(key, []).append(float(result[key]))
        G.train()
        return {k: float(np.mean(v)) for k, v in scores.items()}

    # --- state --------------------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The training state as tensors (networks, optimiser moments, pools, RNG) and JSON-able metadata."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "optimizers": {},
            "schedules": {},
            "pools": {},
            "scaler": self.scaler.state_dict(),
        }
        for name, net in self.nets.items():
            for key, value in net.state_dict().items():
                tensors[f"net/{name}/{key}"] = value.detach().cpu().contiguous()
            meta["optimizers"][name] = _pack_optimizer(self.optimizers[name], f"opt/{name}/", tensors)
            meta["schedules"][name] = self.schedules[name].state_dict()
        for name, pool in self.pools.items():
            meta["pools"][name] = len(pool.images)
            for i, image in enumerate(pool.images):
                tensors[f"pool/{name}/{i}"] = image.detach().cpu().contiguous()
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        return tensors, meta

    def save_state(self, path: str | Path) -> Path:
        """Write the whole training state as one safetensors file (atomically)."""
        from safetensors.torch import save_file

        tensors, meta = self.state_tensors()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata={_STATE_KEY: to_json(meta)})
        os.replace(tmp, path)
        return path

    def load_state(self, path: str | Path, *, allow_changes: bool = False) -> None:
        """Continue from :meth:`save_state`'s file: networks, optimisers, schedules, pools, RNG and the step.

        A configuration that differs from the saved one in anything but cadence and paths is refused, naming the
        changed keys (``allow_changes=True`` continues with a warning instead); ``steps``, ``device`` and ``amp``
        changes continue with a warning.
        """
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})[_STATE_KEY])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (KeyError, OSError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"resume: expected a training state written by xcloudfree, found {str(path)!r} ({err})"
            ) from err
        _check_resume_config(meta.get("config", {}), self.cfg.to_dict(), allow_changes)
        for name, net in self.nets.items():
            prefix = f"net/{name}/"
            net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            _unpack_optimizer(self.optimizers[name], f"opt/{name}/", tensors, meta["optimizers"][name], self.device)
            self.schedules[name].load_state_dict(meta["schedules"][name])
        for name, count in meta["pools"].items():
            self.pools[name].images = [tensors[f"pool/{name}/{i}"].to(self.device) for i in range(count)]
        self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng/cuda"])
        self.step = int(meta["step"])

    def save_model(self, path: str | Path, val: dict[str, float] | None = None) -> Path:
        """The generator as an inference checkpoint (safetensors + JSON), with the config as provenance."""
        return models.save(
            self.generator,
            path,
            metadata={"trained_steps": self.step, "config": self.cfg.to_dict(), "validation": val or {}},
        )

    # --- the loop -----------------------------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> Path:
        """Train until step ``steps`` (default: the config's), checkpointing; returns the final model path."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        end = cfg.steps if steps is None else steps
        self.output.mkdir(parents=True, exist_ok=True)
        write_json(cfg.to_dict(), self.output / "config.json")
        train_log = _CsvLog(self.output / "train_log.csv")
        val_log = _CsvLog(self.output / "val_log.csv")
        val: dict[str, float] = {}
        start_time = time.perf_counter()
        for net in self.nets.values():
            net.train()
        bar = tqdm(total=end, initial=self.step, desc=f"train {cfg.model.name}", disable=None)
        for batch in self.batches(self.step, end):
            parts = self.train_step(batch)
            for schedule in self.schedules.values():
                schedule.step()
            self.step += 1
            if not all(math.isfinite(v) for v in parts.values()):
                raise FloatingPointError(f"training diverged at step {self.step}: {parts}")
            if self.step % cfg.log_every == 0 or self.step == end:
                lr = self.optimizers["G"].param_groups[0]["lr"]
                train_log.write(
                    {"step": self.step, "seconds": round(time.perf_counter() - start_time, 3), "lr": lr, **parts}
                )
                bar.set_postfix({k: f"{v:.4g}" for k, v in parts.items() if k == "loss" or k.startswith("G")})
            if self.step % cfg.val_every == 0 or self.step == end:
                val = self.validate()
                val_log.write({"step": self.step, **val})
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save_model(self.output / f"model_step{self.step}.safetensors", val)
                self.save_state(self.output / "state.safetensors")
            bar.update(1)
        bar.close()
        return self.save_model(self.output / "model.safetensors", val)


class _CsvLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.exists():
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


class SupervisedTrainer(Trainer):
    """dsen2cr (CARL) and carf (cloud-aware loss): one generator, a pixel loss against the clear target."""

    def build(self) -> None:
        self.nets["G"] = models.create(self.cfg.model.name, **self.cfg.model.hparams)

    def loss(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        name, params = self.cfg.loss.name, self.cfg.loss.params
        if name == "carl":
            return losses.carl(pred, batch["target"], batch["cloudy"], batch["mask"], **params)
        if name == "carf":
            return losses.carf_loss(pred, batch["target"], batch["mask"], **params)
        if name == "l1":
            return losses.l1(pred, batch["target"])
        raise ValueError(f"config.loss.name: expected 'carl', 'carf' or 'l1' for {self.cfg.model.name}, found {name!r}")

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        with self.autocast():
            pred = self.generator(batch["input"])
        loss = self.loss(pred.float(), batch)
        self.update("G", loss)
        return {"loss": float(loss.detach())}


class AdversarialTrainer(Trainer):
    """pix2pix5 and acgan: a conditional generator and a PatchGAN that sees (input, output) pairs; cGAN + λ·L1."""

    def build(self) -> None:
        cfg = self.cfg
        G = models.create(cfg.model.name, **cfg.model.hparams)
        self.nets["G"] = G
        if cfg.model.name == "acgan":
            self.nets["D"] = models.create("acgan_discriminator", inputs=G.hparams.get("inputs", "SOD"))
        else:
            self.nets["D"] = models.create("patchgan", in_channels=G.spec.in_channels + G.spec.out_channels)
        self.pools["fake"] = ImagePool(cfg.pool_size)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        G, D = self.nets["G"], self.nets["D"]
        mode = self.cfg.loss.params.get("mode", "vanilla")
        x, target = batch["input"], batch["target"]
        with self.autocast():
            fake = G(x)
            pair_fake = self.pools["fake"].query(torch.cat([x, fake], 1))
            d_loss, d_parts = losses.discriminator_loss(D(torch.cat([x, target], 1)), D(pair_fake.detach()), mode=mode)
        self.update("D", d_loss.float())
        with self.autocast():
            g_loss, g_parts = losses.pix2pix_generator_loss(
                D(torch.cat([x, fake], 1)), fake, target, lam=self.cfg.loss.params.get("lam", 100.0), mode=mode
            )
        self.update("G", g_loss.float())
        return {"loss": float(g_loss.detach()), **_floats("G_", g_parts), **_floats("D_", d_parts)}


class CycleTrainer(Trainer):
    """cyclecr: G_S1→S2 (cloud-map conditioned), G_S2→S1, D_S2 (sees the map) and D_S1, LSGAN, cycle, identity and
    cloud-map losses (weights 5 / 10 / 1 / 10, ``loss.params.weights`` overrides); with paired data
    (``paired_fraction`` of the steps) an L1 term to the clear target as well.

    Identity terms feed each generator an image of its own output domain: G_S2→S1 gets S1 (three channels, as its
    RGB input), G_S1→S2 gets the optical image in the SAR slots (our choice; the paper does not spell it out).
    """

    def build(self) -> None:
        cfg = self.cfg
        self.nets["G"] = models.create("cyclecr", **cfg.model.hparams)
        self.nets["G_S1"] = models.create("cyclecr_s2_to_s1", **cfg.model.hparams)
        self.nets["D_S2"] = models.create("cyclecr_discriminator", domain="s2")
        self.nets["D_S1"] = models.create("cyclecr_discriminator", domain="s1")
        size = cfg.pool_size or 50
        self.pools = {"S2": ImagePool(size), "S1": ImagePool(size)}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        G, F_ = self.nets["G"], self.nets["G_S1"]
        D_S2, D_S1 = self.nets["D_S2"], self.nets["D_S1"]
        x, target = batch["input"], batch["target"]
        s1, s2, m = x[:, :3], x[:, 3:6], x[:, 6:7]
        paired = _draw(self.cfg.seed, self.step) < self.cfg.paired_fraction
        with self.autocast():
            s2_fake, m_hat = G(x, return_cloud_map=True)
            s1_rec = F_(s2_fake)
            s1_fake = F_(s2)
            s2_rec = G(torch.cat([s1_fake, s2, m], 1))
            s1_idt = F_(s1)
            s2_idt = G(torch.cat([s2, s2, m], 1))
            g_loss, parts = losses.cyclecr_generator_loss(
                fake_logits=[D_S2(torch.cat([s2_fake, m], 1)), D_S1(s1_fake)],
                s1=s1,
                s2=s2,
                m=m,
                s1_rec=s1_rec,
                s2_rec=s2_rec,
                m_hat=m_hat,
                s1_idt=s1_idt,
                s2_idt=s2_idt,
                pred=s2_fake if paired else None,
                target=target if paired else None,
                weights=self.cfg.loss.params.get("weights"),
            )
        self.update(("G", "G_S1"), g_loss.float())
        with self.autocast():
            fake_s2 = self.pools["S2"].query(torch.cat([s2_fake, m], 1).detach())
            d_s2, _ = losses.discriminator_loss(D_S2(torch.cat([target, m], 1)), D_S2(fake_s2), mode="lsgan")
            fake_s1 = self.pools["S1"].query(s1_fake.detach())
            d_s1, _ = losses.discriminator_loss(D_S1(s1), D_S1(fake_s1), mode="lsgan")
        self.update("D_S2", d_s2.float())
        self.update("D_S1", d_s1.float())
        return {
            "loss": float(g_loss.detach()),
            **_floats("G_", parts),
            "D_S2": float(d_s2.detach()),
            "D_S1": float(d_s1.detach()),
        }


def _pack_optimizer(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor]) -> dict:
    """Put an optimiser's tensors into ``tensors`` under ``prefix`` and return the rest (JSON-able metadata)."""
    opt_state = optimizer.state_dict()
    plain: dict[str, Any] = {}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{idx}/{key}"] = value
    return {"param_groups": opt_state["param_groups"], "plain": plain}


def _unpack_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], saved: dict, device: torch.device
) -> None:
    """Load what :func:`_pack_optimizer` wrote into ``optimizer``; moments go to ``device``, step counts stay."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field_name = key[len(prefix) :].split("/", 1)
            state.setdefault(int(idx), {})[field_name] = value.to(device) if field_name != "step" else value
    for key, value in saved["plain"].items():
        idx, field_name = key.split("/", 1)
        state.setdefault(int(idx), {})[field_name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _check_resume_config(saved: dict[str, Any], current: dict[str, Any], allow_changes: bool) -> None:
    from .config import RESUME_SILENT, RESUME_WARN, config_changes

    changes = {k: v for k, v in config_changes(saved, current).items() if k not in RESUME_SILENT}
    refused = {k: v for k, v in changes.items() if k not in RESUME_WARN}
    text = "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changes.items())
    if refused and not allow_changes:
        raise ValueError(
            f"resume: expected the configuration the state was saved with, found changes to {sorted(refused)} "
            f"({text}); restore them, start a new output folder, or pass allow_changes=True (--allow-changes)"
        )
    if changes:
        warnings.warn(f"resume: continuing with a changed configuration: {text}", stacklevel=3)


def _draw(seed: int, step: int) -> float:
    return float(np.random.default_rng([seed, step, 17]).random())


def _floats(prefix: str, parts: dict[str, Any]) -> dict[str, float]:
    return {prefix + k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()}


_TRAINERS = {"supervised": SupervisedTrainer, "adversarial": AdversarialTrainer, "cycle": CycleTrainer}


def make_trainer(config: TrainConfig | dict | str | Path) -> Trainer:
    """The trainer of the configured method, with its networks, optimisers and data built.

    >>> tiny = {"name": "dsen2cr", "hparams": {"features": 4, "blocks": 1}}
    >>> trainer = make_trainer(
    ...     {"model": tiny, "data": {"size": 32, "val_samples": 1}, "crop": 16, "device": "cpu", "output": "unused"}
    ... )
    >>> type(trainer).__name__, trainer.device, trainer.amp_dtype, sorted(trainer.nets)
    ('SupervisedTrainer', device(type='cpu'), None, ['G'])
    """
    cfg = load_config(config)
    return _TRAINERS[cfg.trainer](cfg)


def train(
    config: TrainConfig | dict | str | Path, *, resume: bool | str | Path = False, allow_changes: bool = False
) -> Path:
    """Train from a configuration (YAML/JSON path or dict); returns the final model checkpoint.

    ``resume=True`` continues from ``<output>/state.safetensors``; a path continues from that state file. A resumed
    configuration must match the saved one (see :meth:`Trainer.load_state`, ``allow_changes``).
    """
    trainer = make_trainer(config)
    if resume:
        state = trainer.output / "state.safetensors" if resume is True else Path(resume)
        if not state.is_file():
            raise ValueError(f"resume: expected a training state file, found no file at {str(state)!r}")
        trainer.load_state(state, allow_changes=allow_changes)
    return trainer.fit()
