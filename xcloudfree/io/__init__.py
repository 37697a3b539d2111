"""Input and output: GeoTIFF/COG and Zarr scenes, the SEN12MS-CR index, STAC time series (``io.stac``, lazy)."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and the API reference; at run time __getattr__ imports them
    from .geotiff import open_scene, read_dem, read_s1, read_s2, write_cog, write_zarr
    from .sen12mscr import SEN12MSCR, official_split

# Each name loads its module on first use: ``io.jsonfile`` (used by models and reports) must not pull rasterio
# (GeoTIFF), nor odc-stac and pystac-client (STAC) into a process that reads neither.
_HOME = {
    "SEN12MSCR": "sen12mscr",
    "official_split": "sen12mscr",
    "open_scene": "geotiff",
    "read_dem": "geotiff",
    "read_s1": "geotiff",
    "read_s2": "geotiff",
    "write_cog": "geotiff",
    "write_zarr": "geotiff",
}

__all__ = [
    "SEN12MSCR",
    "official_split",
    "open_scene",
    "read_dem",
    "read_s1",
    "read_s2",
    "stac",
    "write_cog",
    "write_zarr",
]


def __getattr__(name: str) -> Any:
    if name == "stac":
        return importlib.import_module(".stac", __name__)
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
