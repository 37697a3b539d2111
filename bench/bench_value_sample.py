"""Cost of the value checks on lazy input (run by hand; prints figures).

    python bench/bench_value_sample.py --size 8192     # a 13-band uint16 8192² tiled GeoTIFF (1.7 GB raw)

Writes one synthetic S2 GeoTIFF (tiled 512 px, deflate, low-entropy noise so that decompression costs what real
data costs) to a temporary folder, then times: opening it lazily with ``read_s2`` (which reads a value sample of 16
blocks), ``value_sample`` alone, ``open_scene(chunks=...)`` (sample + scene validation), a full read of the whole
array (``.max().compute()``) that the check avoids, the same file as a COG (the sample reads one overview), and a
sliced lazy array (not a whole file: the first and last chunks are computed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

import xcloudfree as xcf


def write(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "count": 13,
        "height": size,
        "width": size,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(500000, 4600000, 10, 10),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 1024):
            h = min(1024, size - row)
            block = (1000 + rng.integers(0, 256, (13, h, size))).astype(np.uint16)
            dst.write(block, window=Window(0, row, size, h))


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.3f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s2.tif"
        timed(f"write {args.size}² × 13 uint16", lambda: write(path, args.size))
        print(f"file size {path.stat().st_size / 1e9:.2f} GB, chunks {args.chunk}")
        chunks = {"x": args.chunk, "y": args.chunk}
        timed("read_s2(chunks) incl. value sample", lambda: xcf.io.read_s2(path, chunks=chunks))
        da = xcf.io.read_s2(path, chunks=chunks)
        timed("value_sample alone", lambda: xcf.scene.value_sample(da))
        timed("open_scene(chunks) (sample twice: read + validate)", lambda: xcf.io.open_scene(s2=path, chunks=chunks))
        timed("full read of the array (.max().compute())", lambda: da.max().compute())
        cog = Path(folder) / "s2_cog.tif"
        import rasterio.shutil

        timed("copy to a COG (overviews)", lambda: rasterio.shutil.copy(path, cog, driver="COG", compress="DEFLATE"))
        timed("read_s2(COG, chunks) incl. sample (overview)", lambda: xcf.io.read_s2(cog, chunks=chunks))
        sliced = da.isel(x=slice(0, args.size - 1))  # not the whole file: two chunks computed instead
        timed("value_sample of a sliced lazy array", lambda: xcf.scene.value_sample(sliced))


if __name__ == "__main__":
    main()
