"""Forward-pass speed of every network of the zoo at its defaults.

CPU: seconds per 256×256 patch (batch 1, float32, ``torch.no_grad``). GPU, when one is present: bf16 autocast
throughput in megapixels per second and peak allocated memory at batch 16 (inference mode).

    python bench/bench_models.py                        # all models, CPU and (if present) GPU
    python bench/bench_models.py --models carf dsen2cr --device cuda --json out.json
    python bench/bench_models.py --device cuda --compile          # what torch.compile gains
    python bench/bench_models.py --device cuda --channels-last    # NHWC memory format
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from xcloudfree.models import available, count_parameters, create


def _timed(fn, repeats: int, sync) -> float:
    """Median wall time (s) of ``fn()`` after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_cpu(name: str, size: int, repeats: int) -> dict:
    model = create(name).eval()
    x = torch.rand(1, model.spec.in_channels, size, size) * 2 - 1
    with torch.inference_mode():
        seconds = _timed(lambda: model(x), repeats, lambda: None)
    return {
        "model": name,
        "parameters": count_parameters(model),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "seconds_per_patch": seconds,
    }


def bench_gpu(name: str, size: int, batch: int, repeats: int, compile: bool, channels_last: bool) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create(name).eval().cuda().to(memory_format=fmt)
    x = (torch.rand(batch, model.spec.in_channels, size, size, device="cuda") * 2 - 1).to(memory_format=fmt)
    if compile:
        model = torch.compile(model)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        seconds = _timed(lambda: model(x), repeats, torch.cuda.synchronize)
    return {
        "model": name,
        "device": torch.cuda.get_device_name(),
        "batch": batch,
        "compiled": compile,
        "channels_last": channels_last,
        "seconds_per_batch": seconds,
        "megapixels_per_second": batch * size * size / seconds / 1e6,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available(), choices=available())
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--size", type=int, default=256, help="patch side (px)")
    parser.add_argument("--batch", type=int, default=16, help="GPU batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median reported)")
    parser.add_argument("--compile", action="store_true", help="GPU: torch.compile the networks first")
    parser.add_argument("--channels-last", action="store_true", help="GPU: NHWC weights and inputs")
    parser.add_argument("--json", help="also write the records to this file")
    args = parser.parse_args()

    records = []
    if args.device in ("cpu", "all"):
        print(f"CPU, {torch.get_num_threads()} threads, float32, batch 1, {args.size}² patch")
        for name in args.models:
            r = bench_cpu(name, args.size, args.repeats)
            records.append(r)
            print(f"  {name:24s} {r['parameters']:>12,d} params  {r['seconds_per_patch']:8.3f} s/patch")
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        mode = ", torch.compile" * args.compile + ", channels-last" * args.channels_last
        print(f"{torch.cuda.get_device_name()}, bf16 autocast{mode}, batch {args.batch}, {args.size}² patches")
        for name in args.models:
            r = bench_gpu(name, args.size, args.batch, args.repeats, args.compile, args.channels_last)
            records.append(r)
            print(
                f"  {name:24s} {r['megapixels_per_second']:9.1f} MP/s  {r['seconds_per_batch'] * 1e3:9.1f} ms/batch  "
                f"peak {r['peak_memory_gib']:6.2f} GiB"
            )
    elif args.device == "cuda":
        raise SystemExit("--device cuda: no CUDA device available")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
