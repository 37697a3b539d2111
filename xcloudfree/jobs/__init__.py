"""Jobs: the work behind each ``xcloudfree`` command, from files to files.

The layer above the algorithms: a job takes paths and options, reads the files, calls the library (``io``,
``masking``, ``inference``, ``timeseries``, ``metrics``, ``plot``) and writes its results; the command line only
parses arguments, prints and maps errors to exit codes. The algorithms never import this layer.

- :mod:`.demo`: :func:`run_demo`, the main job end to end on a synthetic scene.
- :mod:`.inspect`: :func:`describe_file`, what a GeoTIFF is read as.
- :mod:`.mask`: :func:`mask_file`, the cloud and shadow mask of an S2 GeoTIFF as a COG.
- :mod:`.remove`: :func:`remove_clouds`, cloud removal of GeoTIFFs into a COG.
- :mod:`.fill`: :func:`fill_from_stac`, a STAC time series filled into a Zarr cube.
- :mod:`.evaluate`: :func:`evaluate_files`, scores of a prediction GeoTIFF, report JSON and figure.
- :mod:`.weights`: :func:`convert_weights` (published weights → checkpoint), :func:`list_models`,
  :func:`real_data_gain`.

Each job module is imported on first use, so ``import xcloudfree.jobs`` loads none of their libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each job function → its module.
_JOBS = {
    "convert_weights": "weights",
    "describe_file": "inspect",
    "evaluate_files": "evaluate",
    "fill_from_stac": "fill",
    "list_models": "weights",
    "mask_file": "mask",
    "real_data_gain": "weights",
    "remove_clouds": "remove",
    "run_demo": "demo",
}
__all__ = sorted(_JOBS)


def __getattr__(name: str) -> Any:
    if name in _JOBS:
        return getattr(importlib.import_module(f".{_JOBS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
