"""The training configuration: one schema (YAML or JSON), each method's paper defaults, clear errors.

::

    model: {name: dsen2cr, hparams: {features: 64, blocks: 8}}
    data: {source: synthetic, size: 160, mask: dsen2cr}        # or sen12mscr (root, split, seasons, curate) or
                                                                # geotiff (files)
    loss: {name: carl}                                          # default: the method's loss
    optimizer: {name: nadam, lr: 7.0e-5}                        # default: the method's optimiser
    schedule: {name: constant}                                  # constant, linear (decay), step
                                                                # step: {step_size: 5, unit: epochs, gamma: 0.5}
    steps: 2000
    batch_size: 8
    crop: 128
    output: runs/dsen2cr

Every section and key is checked: an unknown key, a wrong type or a value out of range raises ``ValueError``
naming ``config.<section>.<key>``, what was expected and what was found. Schedules count optimiser steps, or
epochs with ``schedule.unit: epochs`` (``len(data set) // batch_size`` steps each, at least one, fixed when the
trainer is built); a ``step_size`` given without a ``unit`` counts steps. The linear schedule's ``start`` is a
fraction of the run in either unit (cyclecr's 50 + 25 epochs: 2/3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import check_device, check_int, check_number, check_positive_int

__all__ = ["TrainConfig", "load_config", "METHOD_DEFAULTS", "TRAINER_OF", "config_changes"]

#: Which trainer each generator uses.
TRAINER_OF = {
    "dsen2cr": "supervised",
    "carf": "supervised",
    "pix2pix": "adversarial",
    "acgan": "adversarial",
    "cyclecr": "cycle",
}

#: Paper defaults per method (REFERENCE §4): loss, optimiser, schedule, masking and data conventions.
METHOD_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "dsen2cr": {
        "loss": {"name": "carl"},
        "optimizer": {"name": "nadam", "lr": 7e-5},
        "schedule": {"name": "constant"},
        "data": {"mask": "dsen2cr"},
    },
    "carf": {
        "loss": {"name": "carf"},
        "optimizer": {"name": "adam", "lr": 1e-4},
        "schedule": {"name": "step", "step_size": 5, "unit": "epochs", "gamma": 0.5},  # StepLR(5 epochs, 0.5)
        "data": {"mask": "carf"},
    },
    "pix2pix": {
        "loss": {"name": "pix2pix", "lam": 100.0},
        "optimizer": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        "schedule": {"name": "linear", "start": 0.5},
        "data": {"mask": "dsen2cr", "curate": True},
    },
    "acgan": {
        "loss": {"name": "pix2pix", "lam": 100.0},
        "optimizer": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        "schedule": {"name": "constant"},
        "data": {"mask": "dsen2cr"},
    },
    "cyclecr": {
        "loss": {"name": "cyclecr"},
        "optimizer": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        "schedule": {"name": "linear", "start": 2 / 3},
        "data": {"mask": "cyclecr"},
    },
}
_LOSSES = ("l1", "carl", "carf", "pix2pix", "cyclecr")
_SOURCES = ("synthetic", "sen12mscr", "geotiff")


@dataclass
class ModelSection:
    name: str = "dsen2cr"
    hparams: dict = field(default_factory=dict)


@dataclass
class DataSection:
    source: str = "synthetic"
    root: str | None = None
    split: str | None = "train"
    seasons: list | None = None
    files: list | None = None
    size: int = 160
    crops_per_scene: int = 1
    mask: str | None = None
    synthetic_clouds: str | None = None
    cloud_cover: list = field(default_factory=lambda: [0.1, 0.8])
    val_samples: int = 4
    cache: bool = True
    curate: bool | None = None


@dataclass
class LossSection:
    name: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class OptimizerSection:
    name: str | None = None
    lr: float | None = None
    betas: list | None = None
    weight_decay: float = 0.0


@dataclass
class ScheduleSection:
    name: str | None = None
    start: float = 0.5
    step_size: int = 1000
    gamma: float = 0.5
    unit: str = "steps"


@dataclass
class TrainConfig:
    """A validated training configuration (see the module docstring)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    steps: int = 1000
    batch_size: int = 8
    crop: int | None = 128
    device: str = "auto"
    amp: bool = True
    grad_clip: float | None = None
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 1000
    paired_fraction: float = 1.0
    pool_size: int = 0
    output: str = "runs/train"

    @property
    def trainer(self) -> str:
        return TRAINER_OF[self.model.name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "loss": LossSection,
    "optimizer": OptimizerSection,
    "schedule": ScheduleSection,
}


def _check_type(where: str, value: Any, annotation: str) -> Any:
    kinds = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": (list, tuple), "dict": dict}
    allowed = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in allowed:
        return value
    for a in allowed:
        expected = kinds.get(a)
        if expected is None:
            continue
        if isinstance(value, bool) and a in ("int", "float"):
            continue
        if isinstance(value, expected):
            return float(value) if a == "float" else (list(value) if a == "list" else value)
    raise ValueError(f"config.{where}: expected {annotation.replace('|', 'or')}, found {value!r}")


def _build(cls: type, data: dict, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config.{where}: expected a mapping, found {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ValueError(f"config.{key}: unknown key; expected one of {sorted(known)}")
    values = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if name in _SECTIONS and not where:
            values[name] = _build(_SECTIONS[name], value, name)
        else:
            values[name] = _check_type(key, value, str(known[name].type))
    return cls(**values)


def load_config(config: str | Path | dict | TrainConfig) -> TrainConfig:
    """Read and validate a configuration (a YAML/JSON path, a dict or a TrainConfig); fill in the method defaults."""
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, str | Path):
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"config: expected a YAML or JSON file, found no file at {str(path)!r}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(
                f"config: expected a readable YAML or JSON text file, found {str(path)!r} ({err})"
            ) from None
        raw = _parse(text, path)
    else:
        raw = config
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"config: expected a mapping of sections (model:, data:, steps: ...), found a {type(raw).__name__}"
        )
    cfg = _build(TrainConfig, dict(raw), "")
    return _validate(_with_defaults(cfg, raw or {}))


#: Keys a resumed run may change silently (cadence, paths, processes) and with a warning (the rest of the run
#: differs from an uninterrupted one, legitimately: more steps, another device). Any other change is refused.
RESUME_SILENT = ("log_every", "val_every", "checkpoint_every", "workers", "output", "data.root")
RESUME_WARN = ("steps", "device", "amp")


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (saved, current)}`` for every setting that differs between two ``TrainConfig.to_dict()``."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    missing = object()
    return {
        key: (flat_saved.get(key), flat_current.get(key))
        for key in sorted(set(flat_saved) | set(flat_current))
        if flat_saved.get(key, missing) != flat_current.get(key, missing)
    }


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        # Sections are flattened; hparams and loss params compare as whole values within their key.
        if isinstance(value, dict) and not prefix:
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def _parse(text: str, path: Path) -> Any:
    """YAML (or JSON, a subset) text as Python data; syntax errors name the file and the line."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config: expected valid JSON in {str(path)!r}, found an error: {err}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"config: expected valid YAML in {str(path)!r}, found {problem}{where}") from None


def _with_defaults(cfg: TrainConfig, raw: dict) -> TrainConfig:
    name = cfg.model.name
    if name not in METHOD_DEFAULTS:
        raise ValueError(f"config.model.name: expected one of {sorted(METHOD_DEFAULTS)}, found {name!r}")
    for section, defaults in METHOD_DEFAULTS[name].items():
        given = raw.get(section) or {}
        target = getattr(cfg, section)
        own_loss = section == "loss" and given.get("name", defaults["name"]) != defaults["name"]
        for key, value in defaults.items():
            if key in given or (section == "schedule" and key == "unit" and "step_size" in given):
                continue  # (a step_size given without a unit counts steps, not the method's default unit)
            if section == "loss" and key != "name":
                if not own_loss:  # the paper's loss weights belong to the paper's loss only
                    target.params.setdefault(key, value)
            else:
                setattr(target, key, value)
    return cfg


def _validate(cfg: TrainConfig) -> TrainConfig:
    def positive(where: str, value: float | int | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if value is None or value <= 0:
            raise ValueError(f"config.{where}: expected a positive number, found {value!r}")

    for key in ("steps", "batch_size", "log_every", "val_every", "checkpoint_every"):
        positive(key, getattr(cfg, key))
    for key in ("data.size", "data.crops_per_scene", "data.val_samples", "schedule.step_size"):
        section, name = key.split(".")
        check_positive_int(f"config.{key}", getattr(getattr(cfg, section), name))
    for key in ("workers", "pool_size"):
        check_int(f"config.{key}", getattr(cfg, key), minimum=0)
    check_number("config.optimizer.weight_decay", cfg.optimizer.weight_decay, minimum=0.0)
    check_number("config.schedule.gamma", cfg.schedule.gamma, minimum=0.0, maximum=1.0)
    cover = cfg.data.cloud_cover
    if (
        len(cover) != 2
        or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in cover)
        or not (0.0 <= cover[0] <= cover[1] <= 1.0)
    ):
        raise ValueError(
            f"config.data.cloud_cover: expected [min, max] fractions with 0 ≤ min ≤ max ≤ 1, found {cover}"
        )
    if cfg.optimizer.betas is not None and (
        len(cfg.optimizer.betas) != 2
        or not all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in cfg.optimizer.betas)
    ):
        raise ValueError(f"config.optimizer.betas: expected two numbers in [0, 1), found {cfg.optimizer.betas}")
    positive("crop", cfg.crop, allow_none=True)
    positive("grad_clip", cfg.grad_clip, allow_none=True)
    positive("optimizer.lr", cfg.optimizer.lr)
    if cfg.loss.name not in _LOSSES:
        raise ValueError(f"config.loss.name: expected one of {list(_LOSSES)}, found {cfg.loss.name!r}")
    if cfg.optimizer.name not in ("adam", "nadam", "adamw"):
        raise ValueError(f"config.optimizer.name: expected 'adam', 'nadam' or 'adamw', found {cfg.optimizer.name!r}")
    if cfg.schedule.name not in ("constant", "linear", "step"):
        raise ValueError(f"config.schedule.name: expected 'constant', 'linear' or 'step', found {cfg.schedule.name!r}")
    if cfg.schedule.unit not in ("steps", "epochs"):
        raise ValueError(f"config.schedule.unit: expected 'steps' or 'epochs', found {cfg.schedule.unit!r}")
    if not 0.0 <= cfg.schedule.start <= 1.0:
        raise ValueError(
            f"config.schedule.start: expected a fraction of the steps in [0, 1], found {cfg.schedule.start}"
        )
    if cfg.data.source not in _SOURCES:
        raise ValueError(f"config.data.source: expected one of {list(_SOURCES)}, found {cfg.data.source!r}")
    if cfg.data.source == "sen12mscr" and not cfg.data.root:
        raise ValueError("config.data.root: expected the SEN12MS-CR folder for source 'sen12mscr', found none")
    if cfg.data.source == "geotiff" and not cfg.data.files:
        raise ValueError(
            "config.data.files: expected a list of {s2, s2_clear, s1} paths for source 'geotiff', found none"
        )
    if cfg.crop is not None and cfg.data.source == "synthetic" and cfg.crop > cfg.data.size:
        raise ValueError(f"config.crop: expected at most data.size ({cfg.data.size}), found {cfg.crop}")
    if not 0.0 <= cfg.paired_fraction <= 1.0:
        raise ValueError(f"config.paired_fraction: expected a fraction in [0, 1], found {cfg.paired_fraction}")
    check_device("config.device", cfg.device)
    return cfg
