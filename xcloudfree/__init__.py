"""xcloudfree: remove clouds from Sentinel-2 with Sentinel-1 SAR, the xarray way.

``import xcloudfree`` registers the ``.cloudfree`` accessor on xarray objects and loads nothing heavier than xarray:
the subpackages (and rioxarray, torch, distributed, odc-stac, matplotlib with them) are imported on first use:
``xcf.io``, ``xcf.models``, ``xcf.inference``, ...
"""

from __future__ import annotations

import importlib
from typing import Any

from . import accessor as _accessor  # noqa: F401  (registers ds.cloudfree / da.cloudfree)
from . import sensors
from .scene import make_scene, validate_scene

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "datasets",
    "inference",
    "io",
    "jobs",
    "make_scene",
    "masking",
    "metrics",
    "models",
    "plot",
    "sensors",
    "timeseries",
    "training",
    "validate_scene",
]

_LAZY = {"datasets", "inference", "io", "jobs", "masking", "metrics", "models", "plot", "timeseries", "training"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'xcloudfree' has no attribute {name!r}")
