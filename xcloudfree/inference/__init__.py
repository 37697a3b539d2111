"""Tiled inference: a global tile grid, smooth blending, lazy over Dask, on the GPU when there is one."""

from .engine import ModelRef, load_count, predict, resolve_model
from .tiling import BLENDS, TileGrid, blend_window

__all__ = ["BLENDS", "ModelRef", "TileGrid", "blend_window", "load_count", "predict", "resolve_model"]
