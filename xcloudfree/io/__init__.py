"""Input and output: GeoTIFF/COG and Zarr scenes, the SEN12MS-CR index, STAC time series (``io.stac``, lazy)."""

from typing import Any

from .geotiff import open_scene, read_dem, read_s1, read_s2, write_cog, write_zarr
from .sen12mscr import SEN12MSCR, official_split

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
    # ``xcf.io.stac`` on first use: odc-stac and pystac-client stay unimported until then.
    if name == "stac":
        import importlib

        return importlib.import_module(".stac", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
