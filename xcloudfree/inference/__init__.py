"""Tiled inference: a global tile grid, smooth blending, lazy over Dask, on the GPU when there is one.

``engine`` builds the tile graph and :func:`predict`; ``runtime`` settles device and precision and loads each
network once per process; ``tiling`` holds the grid and blend windows, ``inputs`` the scaling, ``composite`` the
merge with the observed pixels.
"""

from .engine import predict
from .runtime import ModelRef, load_count, resolve_model
from .tiling import BLENDS, TileGrid, blend_window

__all__ = ["BLENDS", "ModelRef", "TileGrid", "blend_window", "load_count", "predict", "resolve_model"]
