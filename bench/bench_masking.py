"""Cloud-mask benchmarks and figures (run by hand; prints, asserts nothing).

    python bench/bench_masking.py                 # every section, each in a fresh process
    python bench/bench_masking.py scene --size 10980 --chunk 2048
    python bench/bench_masking.py s2cloudless     # 10 m vs 60 m on 1024²
    python bench/bench_masking.py iou             # cloud IoU against the synthetic truth
    python bench/bench_masking.py parity          # against ../shared/data/reference/masks, every real image

``scene``: ``dsen2cr`` on a size² × 13-band uint16 Dask array generated chunk by chunk (nothing is held in
memory but the chunks in flight), reduced to cloud and shadow fractions; wall time and the process's peak RSS
(targets on 2 cores for 10980²: ≤ 120 s, ≤ 3 GB).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SECTIONS = ("scene", "s2cloudless", "iou", "parity")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def _lazy_scene(size: int, chunk: int, seed: int = 0):
    """A lazy (13, size, size) uint16 DN array made chunk by chunk: noisy forest and soil, bands of cloud."""
    import dask.array as da
    import xarray as xr

    from xcloudfree.datasets.synthetic import SPECTRA
    from xcloudfree.sensors import S2_BAND_NAMES

    forest, soil = (np.asarray(SPECTRA[k], np.float32) for k in ("forest", "soil"))

    def make(block_id=None, block_info=None):
        (_, (y0, y1), (x0, x1)) = block_info[None]["array-location"]
        rng = np.random.default_rng([seed, *block_id])
        yy, xx = np.ogrid[y0:y1, x0:x1]
        cloud = np.clip(3 * (np.sin(yy / 300.0) * np.cos(xx / 420.0) - 0.4), 0, 1).astype(np.float32)
        is_forest = np.sin(yy / 37.0) + np.cos(xx / 53.0) > 0
        out = np.empty((13, y1 - y0, x1 - x0), np.uint16)
        for b in range(13):  # band by band: a chunk costs little more than its own uint16 bytes
            land = np.where(is_forest, forest[b], soil[b]).astype(np.float32)
            dn = land * (1 - cloud) + 7000 * cloud + rng.standard_normal(cloud.shape, dtype=np.float32) * 50
            out[b] = np.clip(dn, 0, 65535)
        return out

    chunks = ((13,), *(2 * (tuple(min(chunk, size - s) for s in range(0, size, chunk)),)))
    data = da.map_blocks(make, chunks=chunks, dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16))
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": list(S2_BAND_NAMES)})


def bench_scene(size: int, chunk: int) -> None:
    import dask

    from xcloudfree import masking

    s2 = _lazy_scene(size, chunk)
    masks = masking.detect(s2, "dsen2cr")
    start = time.perf_counter()
    cloud, shadow, prob = dask.compute(masks.cloud.mean(), masks.shadow.mean(), masks.cloud_probability.mean())
    wall = time.perf_counter() - start
    print(
        f"scene dsen2cr {size}x{size}x13 uint16, chunks {chunk}: wall {wall:.1f} s, peak RSS {_peak_rss_gb():.2f} GB "
        f"(input {13 * size * size * 2 / 1e9:.1f} GB; cloud {float(cloud):.3f}, shadow {float(shadow):.3f}, "
        f"mean score {float(prob):.3f})"
    )


def bench_s2cloudless(size: int) -> None:
    import xcloudfree as xcf
    from xcloudfree import masking

    s2 = xcf.datasets.synthetic_scene(size=size, seed=3, cloud_cover=0.5).s2.chunk({"y": 512, "x": 512})
    masking.detect(s2.isel(y=slice(0, 64), x=slice(0, 64)), "s2cloudless").compute()  # imports, model load
    times = {}
    for resolution in (None, 60):
        start = time.perf_counter()
        masks = masking.detect(s2, "s2cloudless", resolution=resolution).compute()
        times[resolution] = time.perf_counter() - start
        print(
            f"s2cloudless {size}² at {resolution or 10} m: {times[resolution]:.2f} s, "
            f"cloud {float(masks.cloud.mean()):.3f}"
        )
    print(f"s2cloudless speed ratio 10 m / 60 m: {times[None] / times[60]:.1f}×")


def bench_iou(size: int) -> None:
    import xcloudfree as xcf
    from xcloudfree import masking

    runs = {"dsen2cr": {}, "s2cloudless 10 m": {"resolution": None}, "s2cloudless 60 m": {"resolution": 60}}
    scores: dict[str, list[float]] = {name: [] for name in runs}
    for seed in range(3):
        for cover in (0.2, 0.5, 0.8):
            scene = xcf.datasets.synthetic_scene(size=size, seed=seed, cloud_cover=cover)
            truth = scene.cloud_truth.values
            row = []
            for name, params in runs.items():
                cloud = masking.detect(scene.s2, name.split()[0], **params).cloud.values
                scores[name].append(float((cloud & truth).sum() / (cloud | truth).sum()))
                row.append(f"{name} {scores[name][-1]:.3f}")
            print(f"seed {seed} cover {cover:.1f}: " + ", ".join(row))
    for name, values in scores.items():
        print(f"IoU {name}: mean {np.mean(values):.3f}, min {np.min(values):.3f} over {len(values)} scenes {size}²")


def bench_parity() -> None:
    import rioxarray

    from xcloudfree import masking

    refs = sorted((SHARED / "reference" / "masks").glob("*.npz"))
    tifs = {p.stem: p for p in (SHARED / "sen12mscr").rglob("*.tif")}
    worst = {"score": 0.0, "uncrtaints": 0.0, "prob": 0.0}
    agree, combined_diff, s2c_diff, pixels = [], 0, 0, 0
    for ref in refs:
        z, s2 = np.load(ref), rioxarray.open_rasterio(tifs[ref.stem])
        rules = masking.detect(s2, "dsen2cr")
        unc = masking.detect(s2, "uncrtaints")
        s2c = masking.detect(s2, "s2cloudless", threshold=0.4, average_over=4, dilation_size=2)
        combined = np.where(rules.cloud, 1, np.where(rules.shadow, -1, 0))
        agree.append(float((combined == z["dsen2cr_cloud_shadow_mask"]).mean()))
        combined_diff += int((combined != z["dsen2cr_cloud_shadow_mask"]).sum())
        worst["score"] = max(worst["score"], float(np.abs(rules.cloud_probability - z["dsen2cr_cloud_score"]).max()))
        worst["uncrtaints"] = max(
            worst["uncrtaints"], float(np.abs(unc.cloud_probability - z["uncrtaints_cloud_score"]).max())
        )
        worst["prob"] = max(worst["prob"], float(np.abs(s2c.cloud_probability - z["s2cloudless_prob"]).max()))
        s2c_diff += int((s2c.cloud.values != z["s2cloudless_mask_t04_a4_d2"].astype(bool)).sum())
        pixels += combined.size
    print(f"parity over {len(refs)} real images ({pixels} pixels):")
    print(
        f"  dsen2cr cloud score max |diff| {worst['score']:.3g}; uncrtaints score max |diff| {worst['uncrtaints']:.3g}"
    )
    print(
        f"  combined mask (1/-1/0) identical on {100 * min(agree):.4f} % of pixels (worst image), "
        f"{combined_diff} pixels differ in all"
    )
    print(f"  s2cloudless probability max |diff| {worst['prob']:.3g}; (0.4, 4, 2) mask differs on {s2c_diff} pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", nargs="?", choices=SECTIONS)
    parser.add_argument("--size", type=int, default=10980, help="scene side for 'scene'")
    parser.add_argument("--chunk", type=int, default=2048, help="chunk side for 'scene'")
    parser.add_argument("--tile", type=int, default=1024, help="image side for 's2cloudless'")
    parser.add_argument("--iou-size", type=int, default=512)
    args = parser.parse_args()
    if args.section is None:  # each section in its own process, so the peak RSS belongs to it alone
        for section in SECTIONS:
            subprocess.run([sys.executable, __file__, section, *sys.argv[1:]], check=True)
        return
    sys.path.insert(0, str(ROOT))
    {
        "scene": lambda: bench_scene(args.size, args.chunk),
        "s2cloudless": lambda: bench_s2cloudless(args.tile),
        "iou": lambda: bench_iou(args.iou_size),
        "parity": bench_parity,
    }[args.section]()


if __name__ == "__main__":
    main()
