"""Benchmark: every metric on a full Sentinel-2 tile, 13 bands × 10980 × 10980, held as Dask arrays.

The prediction, target, cloudy input and mask are generated lazily chunk by chunk (about 6 GB per float32 image,
never in memory at once), so the figures are those of chunk-wise scoring. Prints the wall time of ``evaluate``
with every score (plain, reconstruction and reproduction: two SSIM passes) with the peak resident memory of the
process, then, for scale, the time of a plain pass that only generates and sums the same inputs.

Chunks: the SSIM halo makes Dask hold a few rows of chunks at a time, so memory grows with chunk height × scene
width; the default row strips (512 × 10980) keep that low. Square 1098² chunks needed several times more memory.

Run by hand:  PYTHONPATH=. python bench/bench_metrics.py [--size 10980] [--rows 512] [--cols 0 (whole width)]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import dask
import dask.array as da
import numpy as np

import xcloudfree.metrics as xm


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def scene(size: int, rows: int, cols: int, seed: int = 0) -> dict[str, da.Array]:
    rng = da.random.default_rng(seed)
    shape, chunks = (13, size, size), (13, rows, cols)
    target = rng.random(shape, dtype=np.float32, chunks=chunks) * np.float32(0.5)
    pred = da.clip(target + rng.normal(0.0, 0.03, shape, chunks=chunks).astype(np.float32), 0, 1)
    cloudy = da.clip(target + rng.random(shape, dtype=np.float32, chunks=chunks) * np.float32(0.5), 0, 1)
    mask = rng.random((size, size), chunks=(rows, cols)) > 0.7
    return {"pred": pred, "target": target, "cloudy": cloudy, "mask": mask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--rows", type=int, default=512, help="chunk height (px)")
    parser.add_argument("--cols", type=int, default=0, help="chunk width (px); 0: the whole width")
    args = parser.parse_args()
    cols = args.cols or args.size
    data = scene(args.size, args.rows, cols)
    gb = data["pred"].nbytes / 1e9
    print(
        f"scene 13 × {args.size} × {args.size} float32 ({gb:.1f} GB per image), chunks {args.rows} × {cols}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), dask {dask.__version__}, threaded scheduler"
    )

    start = time.perf_counter()
    scores = xm.evaluate(data["pred"], data["target"], cloudy=data["cloudy"], mask=data["mask"])
    elapsed = time.perf_counter() - start
    print(
        f"evaluate, every score: {elapsed:.1f} s ({data['pred'].size / elapsed / 1e6:.1f} M band-pixels/s), "
        f"peak RSS {peak_rss_gib():.2f} GiB"
    )
    print({k: round(v, 5) for k, v in scores.items() if k != "band_nrmse"})

    # For scale: the same data generated and summed, no metric (its memory is not separated from the above).
    start = time.perf_counter()
    dask.compute(*(data[k].sum() for k in ("pred", "cloudy", "mask")))
    print(f"plain pass (generate and sum the same inputs): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
