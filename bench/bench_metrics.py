"""Benchmark: every metric on a Sentinel-2 tile, 13 bands × size × size, held as Dask arrays.

The prediction, target, cloudy input and mask are generated lazily chunk by chunk (about 6 GB per float32 image at
10980², never in memory at once), so the figures are those of chunk-wise scoring: ``evaluate`` with every score
(plain, reconstruction and reproduction: two SSIM maps per band), its wall time and the peak resident memory of
the process (run one size per process), then a check of the numbers:

- ``--check memory`` (up to ~4096²): the same arrays computed into memory and scored by numpy, the one-block
  case of the kernel; prints the largest absolute difference over every score.
- ``--check rechunk``: the same lazy arrays scored again with other, uneven chunks (1.5 × 1.25 the chunk): every
  chunk boundary and so every seam moves, while the in-memory reference would need ~20 GB at 10980².
- ``--check none``.

Run by hand, one size per process:
    PYTHONPATH=. python bench/bench_metrics.py tile --size 10980 --chunk 1024 --check rechunk
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

BANDS = 13


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU time of the process so far (s): less sensitive than wall time to other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scene(size: int, chunk: int | tuple[int, int], seed: int = 0) -> dict[str, da.Array]:
    """Lazy reflectance-like images (13, size, size) float32 and a bool mask, generated per chunk.

    Uniform float32 draws only (cheap next to the metrics: see the plain pass); the same values whatever the
    chunks only for the same ``chunk``, so ``--check rechunk`` rechunks these arrays rather than redrawing them.
    """
    rng = da.random.default_rng(seed)
    rows, cols = (chunk, chunk) if isinstance(chunk, int) else chunk
    shape, chunks = (BANDS, size, size), (BANDS, rows, cols)
    target = rng.random(shape, dtype=np.float32, chunks=chunks) * np.float32(0.5)
    noise = rng.random(shape, dtype=np.float32, chunks=chunks) - np.float32(0.5)
    pred = da.clip(target + np.float32(0.06) * noise, 0, 1)
    cloudy = da.clip(target + rng.random(shape, dtype=np.float32, chunks=chunks) * np.float32(0.5), 0, 1)
    mask = rng.random((size, size), dtype=np.float32, chunks=(rows, cols)) > 0.7
    return {"pred": pred, "target": target, "cloudy": cloudy, "mask": mask}


def score(data: dict) -> dict:
    return xm.evaluate(data["pred"], data["target"], cloudy=data["cloudy"], mask=data["mask"])


def largest_difference(a: dict, b: dict) -> float:
    """Largest absolute difference over every score (band_nrmse band by band); inf values must agree."""
    worst = 0.0
    for key, value in a.items():
        pairs = zip(value.values(), b[key].values(), strict=True) if key == "band_nrmse" else [(value, b[key])]
        for x, y in pairs:
            worst = max(worst, 0.0 if x == y else abs(x - y))
    return worst


def tile(args: argparse.Namespace) -> None:
    data = scene(args.size, args.chunk)
    gb = data["pred"].nbytes / 1e9
    print(
        f"scene {BANDS} × {args.size}² float32 ({gb:.2f} GB per image, 3 images and a mask), chunks {args.chunk}², "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before, dask {dask.__version__} threaded"
    )
    start, cpu = time.perf_counter(), cpu_seconds()
    scores = score(data)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    print(
        f"evaluate, every score: {elapsed:.1f} s ({data['pred'].size / elapsed / 1e6:.1f} M band-pixels/s), "
        f"{cpu:.1f} CPU s, peak RSS {peak_rss_gib():.2f} GiB, load average {os.getloadavg()[0]:.1f} after"
    )
    print({k: round(v, 6) for k, v in scores.items() if k != "band_nrmse"})
    if args.check == "memory":
        arrays = dict(zip(data, dask.compute(*data.values()), strict=True))
        start = time.perf_counter()
        reference = score(arrays)
        print(
            f"in memory (numpy): {time.perf_counter() - start:.1f} s; "
            f"largest difference {largest_difference(scores, reference):.2e}"
        )
    elif args.check == "rechunk":
        other = (args.chunk * 3 // 2, args.chunk * 5 // 4)
        start = time.perf_counter()
        again = score({k: v.rechunk(other if v.ndim == 2 else (BANDS, *other)) for k, v in data.items()})
        print(
            f"chunks {other[0]} × {other[1]}: {time.perf_counter() - start:.1f} s; "
            f"largest difference {largest_difference(scores, again):.2e}"
        )
    # For scale: the same data generated and summed, no metric.
    start, cpu = time.perf_counter(), cpu_seconds()
    dask.compute(*(data[k].sum() for k in ("pred", "cloudy", "mask")))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    print(f"plain pass (generate and sum the same inputs): {elapsed:.1f} s, {cpu:.1f} CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("tile", help="evaluate on a lazy 13-band tile")
    sub.add_argument("--size", type=int, default=10980)
    sub.add_argument("--chunk", type=int, default=1024, help="square chunks (px)")
    sub.add_argument("--check", choices=("none", "memory", "rechunk"), default="none")
    args = parser.parse_args()
    tile(args)


if __name__ == "__main__":
    main()
