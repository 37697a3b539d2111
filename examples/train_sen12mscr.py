"""Train a small DSen2-CR on real SEN12MS-CR triplets.

Task: you have SEN12MS-CR (or patches in its layout) and want to train a network on it with the public training
API, get a safetensors checkpoint the inference engine loads, and see the loss go down.

This trains a tiny dsen2cr (16 features, 2 residual blocks) for a few steps on the complete real triplets in
``../shared/data/sen12mscr`` (cloudy S2 + S1 in, clear S2 out; plain L1 loss), writes the checkpoint, the CSV logs
and ``train_sen12mscr.png`` (training loss per step). The network is far too small and too short-trained to remove
clouds: the full recipe is ``examples/fit_real_sen12mscr.yaml`` (``xcloudfree train``). Run it from anywhere::

    python examples/train_sen12mscr.py [--steps 15] [--root DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import xcloudfree as xcf

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "sen12mscr", help="SEN12MS-CR root folder")
    parser.add_argument("--steps", type=int, default=15, help="optimiser steps")
    parser.add_argument("--out", type=Path, default=Path("examples_output/train_sen12mscr"), help="output folder")
    args = parser.parse_args(argv)

    # The shared folder also holds incomplete triplets on purpose; the index skips them and says so in its repr.
    warnings.filterwarnings("ignore", message="SEN12MSCR: skipped")
    index = xcf.io.SEN12MSCR(args.root, split=None)  # every complete triplet, whatever its official split
    print(index)
    config = {
        "model": {"name": "dsen2cr", "hparams": {"features": 16, "blocks": 2}},
        "data": {"source": "sen12mscr", "root": str(args.root), "split": None, "val_samples": 2, "mask": "dsen2cr"},
        "loss": {"name": "l1"},
        "optimizer": {"name": "nadam", "lr": 1e-3},
        "steps": args.steps,
        "batch_size": 2,
        "crop": 64,
        "device": "cpu",
        "log_every": 1,
        "val_every": args.steps,
        "checkpoint_every": args.steps,
        "output": str(args.out / "run"),
    }
    checkpoint = xcf.training.train(config)

    # The checkpoint is what inference loads: a name, a spec, weights; nothing pickled.
    model = xcf.models.load(checkpoint)
    print(f"checkpoint: {checkpoint} ({sum(p.numel() for p in model.parameters()):,} parameters)")

    with open(args.out / "run" / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    figure = _plot_loss(steps, loss, args.out / "train_sen12mscr.png")
    print(f"loss: {loss[0]:.4f} at step {steps[0]} → {loss[-1]:.4f} at step {steps[-1]}")
    print(f"figure: {figure}")
    return {"checkpoint": checkpoint, "log": args.out / "run" / "train_log.csv", "figure": figure}


def _plot_loss(steps: list[int], loss: list[float], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(steps, loss, marker=".")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("L1 loss (dsen2cr scale, 0–5)")
    ax.set_title("tiny dsen2cr on real SEN12MS-CR triplets")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
