"""Benchmark of tiled inference (run by hand; prints figures).

    python bench/bench_inference.py overhead        # (a) engine vs plain torch over the same tiles, and (b) MONAI
    python bench/bench_inference.py rss --size 4096 # (c) peak RSS, Zarr → Zarr (--to cog: COG), one size per process
                                                    #     (--raw: without the mask and the composite;
                                                    #     --glibc-default: glibc's dynamic mmap threshold)
    python bench/bench_inference.py sweep           # (c) at 2048, 4096 and 10980, with the ratios and the figures
                                                    #     of the previous engine (BEFORE)
    python bench/bench_inference.py gpu             # (d) full 10980² with dsen2cr F=256 B=16, bf16, on CUDA:
                                                    #     copies overlapped with compute vs not, TFLOP/s

(a) 2048² synthetic scene as Dask, tile 256, overlap 32, dsen2cr F=32 B=4, batch 8; the plain loop runs the same
tiles of the same padded input at the same batch size with no blending. (b) needs ``pip install monai`` (bench only).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import xcloudfree as xcf
from xcloudfree.inference import TileGrid, predict
from xcloudfree.inference.inputs import model_input
from xcloudfree.inference.tiling import reflect_index
from xcloudfree.parallel import release_freed_memory


def small_model(features: int = 32, blocks: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return xcf.models.create("dsen2cr", features=features, blocks=blocks).eval()


def best_of(fn, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def overhead(size: int = 2048, tile: int = 256, overlap: int = 32, batch: int = 8) -> dict:
    model = small_model()
    scene = xcf.datasets.synthetic_scene(size, seed=0).chunk({"x": 1024, "y": 1024})
    margin = min(model.spec.halo, overlap // 2)
    grid = TileGrid(size, size, tile, overlap, margin)
    x = model_input(scene, model.spec).values
    ys, xs = grid.starts(0), grid.starts(1)
    rows = reflect_index(np.arange(ys[0], ys[-1] + tile), size)
    cols = reflect_index(np.arange(xs[0], xs[-1] + tile), size)
    padded = x[:, rows][:, :, cols]
    origins = [(a - ys[0], b - xs[0]) for a in ys for b in xs]

    def plain() -> None:
        with torch.inference_mode():
            for i in range(0, len(origins), batch):
                chunk = [padded[:, a : a + tile, b : b + tile] for a, b in origins[i : i + batch]]
                model(torch.from_numpy(np.stack(chunk)))

    def engine() -> np.ndarray:
        return predict(scene, model, tile=tile, overlap=overlap, batch_size=batch)["s2_cloudfree"].values

    engine()  # warm the model cache and torch
    t_plain, t_engine = best_of(plain), best_of(engine)
    result = {
        "tiles": len(origins),
        "plain_s": round(t_plain, 2),
        "engine_s": round(t_engine, 2),
        "overhead_ratio": round(t_engine / t_plain, 3),
    }
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        result["monai"] = "not installed (pip install monai)"
        return result
    ours = predict(scene, model, tile=tile, overlap=overlap, batch_size=batch, blend="gaussian")["s2_cloudfree"]
    ours = ours.values / 2000.0  # back to the network's scale for the comparison

    def monai() -> np.ndarray:
        with torch.inference_mode():
            return sliding_window_inference(
                torch.from_numpy(x)[None],
                (tile, tile),
                batch,
                model,
                overlap=overlap / tile,
                mode="gaussian",
                sigma_scale=0.125,
            )[0].numpy()

    t_monai = best_of(monai)
    theirs = monai()
    inner = (slice(None), slice(tile, -tile), slice(tile, -tile))
    with torch.inference_mode():
        whole = model(torch.from_numpy(x)[None])[0].numpy()  # the reference a seamless tiling must reproduce
    result.update(
        monai_s=round(t_monai, 2),
        engine_over_monai=round(t_engine / t_monai, 3),
        max_abs_diff=float(np.abs(ours - theirs).max()),
        max_abs_diff_interior=float(np.abs(ours[inner] - theirs[inner]).max()),
        engine_vs_whole_image_interior=float(np.abs(ours[inner] - whole[inner]).max()),
        monai_vs_whole_image_interior=float(np.abs(theirs[inner] - whole[inner]).max()),
        value_range=float(np.abs(whole).max()),
    )
    return result


def _make_input(size: int, path: str, chunk: int = 2048) -> None:
    """A size² scene Zarr whose chunks repeat one 2048² synthetic scene (written in its own process)."""
    xcf.io.write_zarr(_tiled_scene(size, chunk), path)


class PeakRSS:
    """The highest resident set size (MiB) of this process while in the ``with`` block, sampled every 20 ms.

    ``ru_maxrss`` only grows, so it cannot tell the peak of a later phase from an earlier one.
    """

    def __enter__(self) -> PeakRSS:
        import threading

        self.peak, self._running = 0.0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        page = resource.getpagesize() / 2**20
        while self._running:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()


def rss(
    size: int, to: str = "zarr", tile: int = 256, overlap: int = 32, raw: bool = False, glibc_default: bool = False
) -> dict:
    """(c) Zarr → Zarr (or COG) on CPU with the small model; peak RSS of this process, which only runs the inference.

    The input (13 + 2 bands, Zarr chunks of 2048², read in chunks of 1024²) is written by another process. For a
    COG the stages of :func:`xcloudfree.io.write_cog` are reported apart: the blocks streamed into the staging
    GeoTIFF (the inference) and its overviews, then GDAL's copy into the COG layout. As the CLI, the process first
    fixes glibc's mmap threshold (:func:`xcloudfree.parallel.release_freed_memory`) unless ``glibc_default``.
    """
    import multiprocessing

    import rasterio.shutil

    copy, stages = rasterio.shutil.copy, {}

    def timed_copy(*args: object, **kwargs: object) -> object:
        stages["staging_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        with PeakRSS() as peak:
            start = time.perf_counter()
            out = copy(*args, **kwargs)
        stages.update(cog_copy_peak_rss_mb=round(peak.peak), cog_copy_s=round(time.perf_counter() - start, 1))
        return out

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        src = str(Path(tmp) / "in.zarr")
        maker = multiprocessing.get_context("spawn").Process(target=_make_input, args=(size, src))
        maker.start()
        maker.join()
        model = small_model(features=8, blocks=1)  # memory, not compute, is measured here
        if not glibc_default:
            release_freed_memory()
        start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        lazy = xcf.scene.xr.open_zarr(src, chunks={"x": 1024, "y": 1024})
        with PeakRSS() as graph_peak:  # the graph, and the mask's scene statistics (a first pass over the input)
            out = predict(lazy, model, tile=tile, overlap=overlap, device="cpu", keep_clear=not raw)
        stages["graph_and_statistics_peak_rss_mb"] = round(graph_peak.peak)
        if to == "cog":
            rasterio.shutil.copy = timed_copy  # to tell the two stages apart
            try:
                xcf.io.write_cog(out["s2_cloudfree"], Path(tmp) / "out.tif")
            finally:
                rasterio.shutil.copy = copy
        else:
            xcf.io.write_zarr(out[["s2_cloudfree"]], Path(tmp) / "out.zarr")
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - start_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "size": size,
        "to": to,
        "keep_clear": not raw,
        "glibc_mmap_threshold": "dynamic (default)" if glibc_default else "1 MiB",
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(start_rss),
        "megapixels_per_s": round(size * size / seconds / 1e6, 3),
        "load_average": round(os.getloadavg()[0], 1),
        **stages,
    }


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process: the compute, less disturbed than wall time by a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: ``rss`` on the previous engine (commit f3960e2: tile tasks per processing chunk, then blend tasks), measured
#: on the same 2-core machine with the same small model, Zarr → Zarr, one size per process; load ≈ 3–8.
BEFORE = {
    2048: {"seconds": 14.3, "peak_rss_mb": 1675},
    4096: {"seconds": 59.9, "peak_rss_mb": 3004},
    10980: {"seconds": 448.7, "peak_rss_mb": 7109},
}


def sweep(sizes: tuple[int, ...] = (2048, 4096, 10980), to: str = "zarr") -> dict:
    """``rss`` at each size in its own process, back to back, with the ratios the targets are stated in."""
    import subprocess
    import sys

    runs = {}
    for size in sizes:
        cmd = [sys.executable, __file__, "rss", "--size", str(size), "--to", to]
        runs[size] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    result: dict = {"runs": list(runs.values())}
    if 4096 in runs and 10980 in runs:
        result["rss_10980_over_4096"] = round(runs[10980]["peak_rss_mb"] / runs[4096]["peak_rss_mb"], 3)
    if to == "zarr":
        result["before"] = {size: BEFORE[size] for size in sizes if size in BEFORE}
        result["rss_after_over_before"] = {
            size: round(runs[size]["peak_rss_mb"] / BEFORE[size]["peak_rss_mb"], 3) for size in runs if size in BEFORE
        }
    return result


def _tiled_scene(size: int, base: int = 2048):
    """A ``size``² Dask scene (s2 DN, s1 dB, UTM grid) tiled from one ``base``² synthetic scene, in ``base`` chunks."""
    import dask.array as da
    import xarray as xr

    scene = xcf.datasets.synthetic_scene(base, seed=0)
    reps = -(-size // base)

    def tiled(name: str):
        block = da.from_array(scene[name].values, chunks=(-1, base, base))
        return da.block([[block] * reps] * reps)[:, :size, :size]

    yx = {"y": 5100000.0 - 10.0 * (np.arange(size) + 0.5), "x": 500000.0 + 10.0 * (np.arange(size) + 0.5)}
    return xcf.make_scene(
        s2=xr.DataArray(tiled("s2"), dims=("band", "y", "x"), coords={"band": list(scene["band"].values), **yx}),
        s1=xr.DataArray(tiled("s1"), dims=("polarization", "y", "x"), coords={"polarization": ["VV", "VH"], **yx}),
    ).rio.write_crs("EPSG:32633")


def _matmul_tflops(n: int = 8192, repeat: int = 10) -> float:
    """Measured bf16 matrix-product rate of this GPU (the peak the network's rate is compared with)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - start) / 1e12


def _resident_rate(model: torch.nn.Module, tile: int, batch: int, repeat: int = 6) -> float:
    """Tiles per second of bf16 forwards on data already on the GPU (no copies, no host work): the ceiling."""
    from xcloudfree.inference.runtime import autocast

    x = torch.randn(batch, model.spec.in_channels, tile, tile, device="cuda").contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode(), autocast("cuda", torch.bfloat16):
        for _ in range(2):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            model(x)
        torch.cuda.synchronize()
    return batch * repeat / (time.perf_counter() - start)


def gpu(
    size: int = 10980,
    tile: int = 512,
    batch: int = 16,
    configs: tuple[tuple[int, int], ...] = ((2, 4096), (1, 4096), (2, 2048)),
) -> dict:
    """(d) The full scene on CUDA, dsen2cr F=256 B=16, bf16 autocast: seconds and TFLOP/s, copies overlapped or not.

    The raw network output (``keep_clear=False``: the mask is CPU work, benchmarked in bench_masking.py), summed
    block by block as it completes. TFLOP/s counts the tiles the engine really runs (border tiles run once per
    block they reach) at the FLOPs torch's counter gives one tile. ``configs``: (batches in flight, least block
    side on CUDA) per run; in flight 1 is no overlap of copies and compute.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from xcloudfree.inference import engine
    from xcloudfree.inference.runtime import _Runner, get_runner, resolve_model

    if not torch.cuda.is_available():
        return {"gpu": "skipped: no CUDA device"}
    torch.manual_seed(0)
    model = xcf.models.create("dsen2cr").eval()  # F=256, B=16
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, model.spec.in_channels, tile, tile))
    tile_flops = counter.get_total_flops()
    default_block = engine._CUDA_BLOCK
    peak = _matmul_tflops()
    result: dict = {"device": torch.cuda.get_device_name(), "tile": tile, "batch": batch, "size": size}
    result["matmul_bf16_tflops"] = round(peak, 1)
    result["mflop_per_px"] = round(tile_flops / tile**2 / 1e6, 2)

    resident_model = copy.deepcopy(model).cuda().to(memory_format=torch.channels_last)
    for bench_cudnn in (False, True):
        torch.backends.cudnn.benchmark = bench_cudnn
        rate = _resident_rate(resident_model, tile, batch)
        key = "resident" + ("_cudnn_benchmark" if bench_cudnn else "")
        result[key] = {"mpx_s": round(rate * tile**2 / 1e6, 2), "tflops": round(rate * tile_flops / 1e12, 1)}
    torch.backends.cudnn.benchmark = False
    del resident_model
    torch.cuda.empty_cache()

    scene = _tiled_scene(size)
    ref, _ = resolve_model(model, device="cuda", precision="auto")
    runner = get_runner(ref)
    # Per run: tiles the engine ran, and when the GPU was held (a stream of batches) and idle.
    log: dict = {"tiles": 0, "held": []}
    plain_map = _Runner.map

    def logging_map(self, batches):
        start = None
        for y in plain_map(self, batches):
            start = start or time.perf_counter()
            log["tiles"] += len(y)
            yield y
        log["held"].append((start, time.perf_counter()))

    _Runner.map = logging_map
    try:
        warm = scene.isel(x=slice(0, 2 * tile), y=slice(0, 2 * tile))
        predict(warm, model, tile=tile, batch_size=batch, device="cuda", keep_clear=False)["s2_cloudfree"].load()
        for in_flight, block in configs:
            runner.in_flight, engine._CUDA_BLOCK = in_flight, block
            out = predict(scene, model, tile=tile, batch_size=batch, device="cuda", keep_clear=False)
            log.update(tiles=0, held=[])
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            total = float(out["s2_cloudfree"].data.sum(dtype="float64").compute())
            seconds = time.perf_counter() - start
            tflops = log["tiles"] * tile_flops / seconds / 1e12
            held = sorted(log["held"])
            result[f"in_flight{in_flight}_block{block}"] = {
                "seconds": round(seconds, 1),
                "tiles_run": log["tiles"],
                "mpx_s_scene": round(size * size / seconds / 1e6, 2),
                "tflops": round(tflops, 1),
                "of_matmul_peak": round(tflops / peak, 3),
                "first_output_s": round(held[0][0] - start, 1),
                "after_last_stream_s": round(start + seconds - held[-1][1], 1),
                "streams": len(held),
                "gpu_held_s": round(sum(b - a for a, b in held), 1),
                "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
                "checksum": total,
            }
    finally:
        _Runner.map = plain_map
        runner.in_flight, engine._CUDA_BLOCK = 2, default_block
    grid = TileGrid(size, size, tile, out["s2_cloudfree"].attrs["overlap"], out["s2_cloudfree"].attrs["margin"])
    result["grid_tiles"] = int(np.prod(grid.shape))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "rss", "sweep", "gpu"])
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--to", choices=["zarr", "cog"], default="zarr")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="rss: the network output alone (no mask, no composite)")
    parser.add_argument("--glibc-default", action="store_true", help="rss: leave glibc's mmap threshold dynamic")
    args = parser.parse_args()
    if args.what == "overhead":
        result = overhead()
    elif args.what == "gpu":
        result = gpu(args.size or 10980, tile=args.tile, batch=args.batch)
    elif args.what == "sweep":
        result = sweep((args.size,) if args.size else (2048, 4096, 10980), to=args.to)
    else:
        result = rss(args.size or 4096, to=args.to, raw=args.raw, glibc_default=args.glibc_default)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
