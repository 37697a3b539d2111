"""Input and output: GeoTIFF/COG and Zarr scenes, the SEN12MS-CR index."""

from .geotiff import open_scene, read_dem, read_s1, read_s2, write_cog, write_zarr
from .sen12mscr import SEN12MSCR, official_split

__all__ = ["SEN12MSCR", "official_split", "open_scene", "read_dem", "read_s1", "read_s2", "write_cog", "write_zarr"]
