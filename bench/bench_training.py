"""Benchmark of training throughput (run by hand; prints figures).

    python bench/bench_training.py cpu   # the bundled small dsen2cr (F=64, B=8), 128² crops, batch 8, CARL, CPU
    python bench/bench_training.py gpu   # paper dsen2cr (F=256, B=16), 128² crops, batch 16, AMP
                                         # (target ≥ 150 samples/s on an H100)

Optimiser steps on fixed batches (data loading excluded: it runs in DataLoader workers, see ``workers``), after
warm-up steps; samples/s = batch × steps / seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from xcloudfree.training import make_trainer


def throughput(device: str, features: int, blocks: int, batch: int, steps: int, warmup: int = 3) -> dict:
    cfg = {
        "model": {"name": "dsen2cr", "hparams": {"features": features, "blocks": blocks}},
        "data": {"source": "synthetic", "size": 128, "val_samples": 1},
        "batch_size": batch,
        "crop": 128,
        "device": device,
        "amp": True,
        "steps": warmup + steps,
        "output": "/tmp/xcloudfree-bench-training",
    }
    trainer = make_trainer(cfg)
    batches = list(trainer.batches(0, 1))
    fixed = batches[0]
    for _ in range(warmup):
        trainer.train_step(fixed)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(fixed)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {
        "model": f"dsen2cr F={features} B={blocks}",
        "device": str(trainer.device),
        "batch": batch,
        "crop": 128,
        "steps": steps,
        "seconds": round(seconds, 2),
        "samples_per_s": round(batch * steps / seconds, 1),
    }
    if trainer.device.type == "cuda":
        out["amp_dtype"] = str(trainer.amp_dtype)
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cpu", "gpu"])
    args = parser.parse_args()
    if args.what == "cpu":
        result = throughput("cpu", 64, 8, batch=8, steps=5)
    elif not torch.cuda.is_available():
        result = {"gpu": "skipped: no CUDA device"}
    else:
        result = throughput("cuda", 256, 16, batch=16, steps=30)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
