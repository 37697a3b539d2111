"""Cloud-mask benchmarks and figures (run by hand; prints, asserts nothing).

    python bench/bench_masking.py                 # every section, each in a fresh process
    python bench/bench_masking.py tile --size 10980 --chunk 2048 --shadow-stats scene
    python bench/bench_masking.py s2cloudless     # 10 m vs 60 m on 1024²
    python bench/bench_masking.py iou             # cloud IoU against the synthetic truth
    python bench/bench_masking.py parity          # against ../shared/data/reference/masks, every real image
    python bench/bench_masking.py shadow-stats --size 10980   # tile, once with "scene" and once with "window"
    python bench/bench_masking.py mosaic          # window vs whole-array shadow thresholds on a real 512² mosaic
    python bench/bench_masking.py saturated       # s2cloudless on real saturated pixels vs the package

``tile``: ``dsen2cr`` on a size² × 13-band uint16 scene read lazily from a Zarr store (``--input zarr``, written
once to the temporary directory from the synthetic scene) or generated chunk by chunk (``--input synthetic``),
reduced to cloud and shadow fractions; wall time, CPU time (user + system, steadier than wall time on a shared
machine), the same for one read pass alone, and the process's peak RSS (target for 10980² on 2 cores: ≤ 60 s,
≤ 1.5 GB). ``--shadow-stats`` picks the shadow statistics; ``shadow-stats`` runs ``tile`` once with each, in
fresh processes, so each peak RSS is its own.

``mosaic``: 2×2 real SEN12MS-CR images (256² each, cloudy with shadows) side by side as one 512² array; the
reference detector's shadow rule with whole-array statistics against ``shadow_stats="window"`` (256 px) and
``"scene"``. ``saturated``: the real images with DN > 10000 in ``../shared/data``, our s2cloudless probability
against the package run on clip(DN, 0, 10000) / 10000 and on DN / 10000.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SECTIONS = ("tile", "shadow-stats", "s2cloudless", "iou", "parity", "mosaic", "saturated")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def _cpu_s() -> float:
    """CPU seconds of this process so far (user + system): on a shared machine, steadier than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_NOISE_SIDE = 1031  # a prime: the noise field repeats with no relation to the chunk grid
_NOISE: dict[int, np.ndarray] = {}


def _noise(seed: int) -> np.ndarray:
    """One standard-normal float32 field per process, sampled by every chunk (drawing per chunk costs seconds)."""
    if seed not in _NOISE:
        _NOISE[seed] = np.random.default_rng(seed).standard_normal((_NOISE_SIDE, _NOISE_SIDE), dtype=np.float32)
    return _NOISE[seed]


def _lazy_scene(size: int, chunk: int, seed: int = 0):
    """A lazy (13, size, size) uint16 DN array made chunk by chunk: noisy forest and soil, bands of cloud.

    Each chunk is a pure function of its location (the pixels do not depend on the chunking) and costs about
    as much as reading it from a compressed Zarr store. ``seed`` sets the noise and the position of the clouds.
    """
    import dask.array as da
    import xarray as xr

    from xcloudfree.datasets.synthetic import SPECTRA
    from xcloudfree.sensors import S2_BAND_NAMES

    forest, soil = (np.asarray(SPECTRA[k], np.float32) for k in ("forest", "soil"))

    def make(block_info=None):
        (_, (y0, y1), (x0, x1)) = block_info[None]["array-location"]
        yy, xx = np.ogrid[y0:y1, x0:x1]
        # Each seed moves the clouds (a time series of the same ground under other clouds).
        cy, cx = yy + 997 * seed, xx + 577 * seed
        cloud = np.clip(3 * (np.sin(cy / 300.0) * np.cos(cx / 420.0) - 0.4), 0, 1).astype(np.float32)
        is_forest = np.sin(yy / 37.0) + np.cos(xx / 53.0) > 0
        clear, bright = 1 - cloud, 7000 * cloud
        field = _noise(seed)
        out = np.empty((13, y1 - y0, x1 - x0), np.uint16)
        for b in range(13):  # band by band: a chunk costs little more than its own uint16 bytes
            rows, cols = (yy[:, 0] + 101 * b) % _NOISE_SIDE, (xx[0] + 211 * b) % _NOISE_SIDE
            noise = field[rows[:, None], cols[None, :]]
            dn = np.where(is_forest, forest[b], soil[b]) * clear + bright + 50 * noise
            out[b] = np.clip(dn, 0, 65535)
        return out

    chunks = ((13,), *(2 * (tuple(min(chunk, size - s) for s in range(0, size, chunk)),)))
    data = da.map_blocks(make, chunks=chunks, dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16))
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": list(S2_BAND_NAMES)})


def _tile_input(size: int, chunk: int, source: str):
    """The benchmark tile: the lazy synthetic scene, or the same pixels read from a Zarr store (written once)."""
    import dask.array as da
    import xarray as xr

    s2 = _lazy_scene(size, chunk)
    if source == "synthetic":
        return s2
    path = Path(tempfile.gettempdir()) / f"xcloudfree_bench_tile_{size}_{chunk}.zarr"
    if not (path / "zarr.json").exists():
        start = time.perf_counter()
        s2.data.to_zarr(str(path), overwrite=True)
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return xr.DataArray(da.from_zarr(str(path)), dims=s2.dims, coords=s2.coords)


def bench_tile(size: int, chunk: int, shadow_stats: str, source: str) -> None:
    import dask

    from xcloudfree import masking

    s2 = _tile_input(size, chunk, source)
    start, cpu = time.perf_counter(), _cpu_s()
    s2.data.max().compute()  # one pass over the input: what reading (or generating) it costs alone
    read, read_cpu = time.perf_counter() - start, _cpu_s() - cpu
    start, cpu = time.perf_counter(), _cpu_s()  # "scene" reads the input once inside detect(), for its statistics
    masks = masking.detect(s2, "dsen2cr", shadow_stats=shadow_stats)
    cloud, shadow, prob = dask.compute(masks.cloud.mean(), masks.shadow.mean(), masks.cloud_probability.mean())
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
    print(
        f"tile dsen2cr shadow_stats={shadow_stats} {size}x{size}x13 uint16 {source}, chunks {chunk}: "
        f"wall {wall:.1f} s, CPU {cpu:.1f} s (one read pass alone: wall {read:.1f} s, CPU {read_cpu:.1f} s), "
        f"peak RSS {_peak_rss_gb():.2f} GB "
        f"(input {13 * size * size * 2 / 1e9:.1f} GB; cloud {float(cloud):.3f}, shadow {float(shadow):.3f}, "
        f"mean score {float(prob):.3f}; load {os.getloadavg()[0]:.1f})"
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


def bench_shadow_stats(argv: list[str]) -> None:
    for stats in ("scene", "window"):
        subprocess.run([sys.executable, __file__, "tile", *argv, "--shadow-stats", stats], check=True)


def _mosaic_images() -> list[Path]:
    """Four real cloudy 256² images with shadows, for a 2×2 mosaic."""
    names = ("cloudy_85_p753", "cloudy_85_p492", "cloudy_39_p100", "cloudy_139_p839")
    tifs = sorted((SHARED / "sen12mscr").rglob("*.tif"))
    return [next(p for p in tifs if name in p.name) for name in names]


def _reference_shadow(dn: np.ndarray) -> np.ndarray:
    """The reference shadow rule (REFERENCE §4) on a whole (13, y, x) DN array: float32 statistics of the array."""
    from scipy import signal

    from xcloudfree.sensors import S2_BAND_NAMES

    refl = dn.astype(np.float32) / 10000.0
    band = {name: refl[i] for i, name in enumerate(S2_BAND_NAMES)}
    csi, blue = (band["B08"] + band["B11"]) / 2, band["B02"]
    t3 = csi.min() + 3 / 4 * (csi.mean() - csi.min())
    t4 = blue.min() + 5 / 6 * (blue.mean() - blue.min())
    dark = np.where((csi < t3) & (blue < t4), -1.0, 0.0)
    return signal.medfilt2d(dark, 5) < 0


def bench_mosaic() -> None:
    import rioxarray
    import xarray as xr

    from xcloudfree import masking

    tiles = [rioxarray.open_rasterio(p).values for p in _mosaic_images()]
    dn = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    s2 = xr.DataArray(dn, dims=("band", "y", "x"))
    reference = _reference_shadow(dn)
    print(f"mosaic {dn.shape[1]}x{dn.shape[2]} of {[p.stem for p in _mosaic_images()]}")
    print(f"  reference (whole-array statistics) shadow fraction {reference.mean():.3f}")
    for stats in ("window", "scene"):
        masks = masking.detect(s2, "dsen2cr", shadow_stats=stats)
        # The reference's shadow before "cloud wins": compare where neither side calls the pixel cloud.
        shadow = masks.shadow.values
        clear_of_cloud = ~masks.cloud.values
        ref = reference & clear_of_cloud
        union = shadow | ref
        agree = float((shadow == ref)[union].mean()) if union.any() else 1.0
        print(
            f"  shadow_stats={stats!r}: shadow fraction {shadow.mean():.3f} (reference {ref.mean():.3f}), "
            f"agrees on {100 * agree:.1f} % of the pixels either calls shadow, "
            f"{100 * float((shadow == ref).mean()):.2f} % of all pixels"
        )


def bench_saturated() -> None:
    import rioxarray
    from s2cloudless import S2PixelCloudDetector

    from xcloudfree import masking
    from xcloudfree.masking.s2cloudless import MODEL_BANDS
    from xcloudfree.sensors import S2_BAND_NAMES

    bands = [list(S2_BAND_NAMES).index(b) for b in MODEL_BANDS]
    package = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)
    for path in sorted(SHARED.rglob("*.tif")):
        s2 = rioxarray.open_rasterio(path)
        if s2.dtype != np.uint16 or s2.sizes["band"] != 13 or not (s2.values > 10000).any():
            continue
        x = s2.values[bands].transpose(1, 2, 0)[None].astype(np.float64)
        clipped = package.get_cloud_probability_maps(np.clip(x, 0, 10000) / 10000)[0]
        raw = package.get_cloud_probability_maps(x / 10000)[0]
        ours = masking.detect(s2, "s2cloudless")
        prob = ours.cloud_probability.values
        mask_clipped = package.get_mask_from_prob(clipped[None])[0].astype(bool)
        print(
            f"{path.name}: {int((s2.values > 10000).any(axis=0).sum())} saturated pixels; max |ours - package "
            f"clipped| {np.abs(prob - clipped).max():.3g}, max |ours - package unclipped| "
            f"{np.abs(prob - raw).max():.3g}; (0.4, 4, 2) mask differs from the clipped package's on "
            f"{int((ours.cloud.values != mask_clipped).sum())} pixels"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", nargs="?", choices=SECTIONS)
    parser.add_argument("--size", type=int, default=10980, help="tile side for 'tile'")
    parser.add_argument("--chunk", type=int, default=2048, help="chunk side for 'tile'")
    parser.add_argument("--shadow-stats", choices=("scene", "window"), default="scene", help="for 'tile'")
    parser.add_argument("--input", choices=("synthetic", "zarr"), default="zarr", help="for 'tile'")
    parser.add_argument("--tile", type=int, default=1024, help="image side for 's2cloudless'")
    parser.add_argument("--iou-size", type=int, default=512)
    args = parser.parse_args()
    if args.section is None:  # each section in its own process, so the peak RSS belongs to it alone
        for section in (s for s in SECTIONS if s != "shadow-stats"):
            subprocess.run([sys.executable, __file__, section, *sys.argv[1:]], check=True)
        return
    sys.path.insert(0, str(ROOT))
    {
        "tile": lambda: bench_tile(args.size, args.chunk, args.shadow_stats, args.input),
        "shadow-stats": lambda: bench_shadow_stats(
            [f"--size={args.size}", f"--chunk={args.chunk}", f"--input={args.input}"]
        ),
        "mosaic": bench_mosaic,
        "saturated": bench_saturated,
        "s2cloudless": lambda: bench_s2cloudless(args.tile),
        "iou": lambda: bench_iou(args.iou_size),
        "parity": bench_parity,
    }[args.section]()


if __name__ == "__main__":
    main()
