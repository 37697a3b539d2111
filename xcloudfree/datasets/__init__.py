"""Data made by the project itself: synthetic scenes with known truth and procedural clouds."""

from .clouds import blend_clouds, cast_shadows, copy_paste_clouds, perlin_clouds, perlin_noise
from .synthetic import LAND_COVER, synthetic_scene

__all__ = [
    "LAND_COVER",
    "blend_clouds",
    "cast_shadows",
    "copy_paste_clouds",
    "perlin_clouds",
    "perlin_noise",
    "synthetic_scene",
]
