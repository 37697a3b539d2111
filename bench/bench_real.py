"""Every model with weights, and two baselines, scored on every real cloudy/clear image in ../shared/data.

Models: the bundled weights (``xcloudfree/weights/*.safetensors``), a model trained with
``examples/fit_real_sen12mscr.yaml`` (``runs/fit_real_sen12mscr/model.safetensors``, when present) and any
checkpoint given with ``--weights`` (e.g. converted published weights). Each runs on the SEN12MS-CR images that
have what it needs (S1 where the triplet has it; optical-only models on every pair), with ``keep_clear=False``
(raw) and composited (``keep_clear=True``, the default of ``remove``), both from one forward pass.

Baselines: *identity* (the cloudy input as the prediction) and *composite fill* (the cloudy input with the
dsen2cr mask filled by each band's median over the clear pixels of the same image: no learning at all).

Scores on reflectance (UnCRtainTS definitions): overall, and inside the dsen2cr mask of the cloudy image vs the
clear target ("reconstruction"). The real-data PSNR gain of a model is the mean over its images (those with a
non-empty mask) of PSNR inside the mask minus the identity's: negative means the model makes real clouds worse.

    python bench/bench_real.py                      # score, rewrite docs/real-data.md and the package JSON
    python bench/bench_real.py --weights dsen2cr_carl.safetensors --no-write
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import xcloudfree as xcf
from xcloudfree.inference.composite import composite
from xcloudfree.sensors import harmonize_s2

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "real-data.md"
SCORES = ROOT / "xcloudfree" / "weights" / "real_data_scores.json"
START, END = "<!-- bench_real:start -->", "<!-- bench_real:end -->"


def _candidates(extra: list[str]) -> dict[str, tuple[Path, str]]:
    """name → (checkpoint, kind) of every model with weights."""
    found = {p.name: (p, "bundled") for p in sorted((ROOT / "xcloudfree" / "weights").glob("*.safetensors"))}
    trained = ROOT / "runs" / "fit_real_sen12mscr" / "model.safetensors"
    if trained.is_file():
        found["fit_real_sen12mscr"] = (trained, "trained on the 2 real triplets (examples/fit_real_sen12mscr.yaml)")
    for item in extra:
        path = Path(item)
        info = xcf.models.read_metadata(path).get("metadata", {})
        kind = "imported" if "imported_from" in info else "checkpoint"
        found[path.name] = (path, kind)
    return found


def _scores(ds: xr.Dataset, var: str, inside: xr.DataArray | None) -> dict[str, float]:
    overall = xcf.metrics.evaluate_scene(ds, prediction=var)
    out = {k: float(overall[k]) for k in ("psnr", "ssim", "mae")}
    if inside is not None:
        masked = xcf.metrics.evaluate_scene(ds, prediction=var, mask=inside)
        out.update(psnr_mask=float(masked["psnr_reconstruction"]), mae_mask=float(masked["mae_reconstruction"]))
    return out


def _fill_baseline(scene: xr.Dataset, inside: xr.DataArray) -> xr.DataArray:
    observed = harmonize_s2(scene["s2"]).astype("float32")
    clear = observed.where(~inside)
    fill = clear.median(("y", "x")).fillna(observed.median(("y", "x")))
    return composite(observed, xr.ones_like(observed) * fill, inside.astype("float32"), feather=3)


def run(data: Path, extra: list[str]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the index reports incomplete triplets: expected here
        index = xcf.io.SEN12MSCR(data / "sen12mscr", require=("s2", "s2_cloudy"))
    models = _candidates(extra)
    specs = {name: xcf.models.read_metadata(path) for name, (path, _) in models.items()}
    rows: dict[str, list[dict]] = {name: [] for name in ["identity", "composite fill", *models]}
    for i, triplet in enumerate(index.samples):
        scene = index[i].load()
        mask = xcf.masking.detect(scene["s2"], method="dsen2cr")["mask"]
        inside = (mask >= 0.5).compute()
        cover = float(inside.mean())
        use = inside if inside.any() else None
        base = {"image": triplet.name, "s1": "s1" in scene, "cloud_cover": cover}
        rows["identity"].append({**base, "raw": _scores(scene, "s2", use)})
        filled = scene.assign(fill=_fill_baseline(scene, inside))
        rows["composite fill"].append({**base, "raw": _scores(filled, "fill", use)})
        for name, (path, _) in models.items():
            spec = specs[name]["spec"]
            if spec["sar"] and "s1" not in scene:
                continue
            start = time.perf_counter()
            out = xcf.inference.predict(scene, path, tile=256, device="cpu", keep_clear=False)
            seconds = time.perf_counter() - start
            bands = list(out["s2_cloudfree"]["band"].values)
            observed = harmonize_s2(scene["s2"]).sel(band=bands).astype("float32")
            out["s2_composite"] = composite(observed, out["s2_cloudfree"], mask)
            rows[name].append(
                {
                    **base,
                    "seconds": seconds,
                    "raw": _scores(out, "s2_cloudfree", use),
                    "keep_clear": _scores(out, "s2_composite", use),
                }
            )
        print(f"{triplet.name}: cloud cover {cover:.0%}, S1 {'yes' if 's1' in scene else 'no'}", flush=True)
    identity = {r["image"]: r["raw"] for r in rows["identity"]}
    fill = {r["image"]: r["raw"] for r in rows["composite fill"]}
    summary = {}
    for name, items in rows.items():
        if not items:
            summary[name] = {"images": 0}
            continue
        masked = [r for r in items if "psnr_mask" in r["raw"]]
        entry = {
            "images": len(items),
            "images_with_clouds": len(masked),
            "with_s1": sum(r["s1"] for r in items),
            "psnr_raw": float(np.mean([r["raw"]["psnr"] for r in items])),
            "ssim_raw": float(np.mean([r["raw"]["ssim"] for r in items])),
            "psnr_mask": float(np.mean([r["raw"]["psnr_mask"] for r in masked])) if masked else None,
            "mae_mask": float(np.mean([r["raw"]["mae_mask"] for r in masked])) if masked else None,
            "psnr_gain_in_mask_db": float(
                np.mean([r["raw"]["psnr_mask"] - identity[r["image"]]["psnr_mask"] for r in masked])
            )
            if masked
            else None,
        }
        if masked:  # the baselines on the same images, for a like-for-like reading
            entry["images_worse_than_cloudy"] = sum(
                r["raw"]["psnr_mask"] < identity[r["image"]]["psnr_mask"] for r in masked
            )
            entry["identity_psnr_mask_same_images"] = float(
                np.mean([identity[r["image"]]["psnr_mask"] for r in masked])
            )
            entry["fill_psnr_mask_same_images"] = float(np.mean([fill[r["image"]]["psnr_mask"] for r in masked]))
        if "keep_clear" in items[0]:
            entry["psnr_keep_clear"] = float(np.mean([r["keep_clear"]["psnr"] for r in items]))
            entry["ssim_keep_clear"] = float(np.mean([r["keep_clear"]["ssim"] for r in items]))
            entry["seconds_per_image"] = float(np.mean([r["seconds"] for r in items]))
        if name in models:
            path, kind = models[name]
            entry.update(kind=kind, architecture=specs[name]["architecture"], hparams=specs[name]["hparams"])
            entry["sha256"] = xcf.models.importers._sha256(path)
        summary[name] = entry
    return {
        "generated_by": "bench/bench_real.py",
        "date": datetime.date.today().isoformat(),
        "data": "SEN12MS-CR cloudy/clear images in ../shared/data/sen12mscr",
        "mask": "dsen2cr detector on the cloudy image (cloud or shadow)",
        "images": len(index),
        "models": {k: v for k, v in summary.items() if k in models},
        "baselines": {k: v for k, v in summary.items() if k not in models},
        "per_image": rows,
    }


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def table(report: dict) -> str:
    lines = [
        f"Scored {report['date']} on {report['images']} real SEN12MS-CR cloudy/clear images "
        f"(mask: {report['mask']}). PSNR in dB on reflectance; mean over images.",
        "",
        "| model | kind | images (with S1) | PSNR raw | PSNR keep_clear | SSIM keep_clear | PSNR in mask "
        "| cloudy / fill in mask, same images | MAE in mask | real-data PSNR gain | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in {**report["baselines"], **report["models"]}.items():
        if not e["images"]:
            lines.append(f"| {name} | {e.get('kind', 'baseline')} | 0 (needs S1) | | | | | | | | |")
            continue
        gain = e["psnr_gain_in_mask_db"]
        worse = e.get("images_worse_than_cloudy", 0)
        flag = " **worse than the cloudy input**" if gain is not None and gain < 0 else ""
        flag += f" (worse on {worse} of {e['images_with_clouds']} images)" if worse and name in report["models"] else ""
        lines.append(
            f"| {name} | {e.get('kind', 'baseline')} | {e['images']} ({e['with_s1']}) | {_f(e['psnr_raw'])} "
            f"| {_f(e.get('psnr_keep_clear'))} | {_f(e.get('ssim_keep_clear'), '{:.3f}')} | {_f(e['psnr_mask'])} "
            f"| {_f(e.get('identity_psnr_mask_same_images'))} / {_f(e.get('fill_psnr_mask_same_images'))} "
            f"| {_f(e['mae_mask'], '{:.4f}')} | {_f(gain, '{:+.2f} dB')}{flag} "
            f"| {_f(e.get('seconds_per_image'), '{:.1f}')} |"
        )
    lines += [
        "",
        "*PSNR raw*: the network output everywhere (for baselines: the baseline image). *keep_clear*: the observed "
        "pixels outside the mask, the prediction inside, feathered over 3 px. *in mask*: pixels of the dsen2cr mask "
        "against the clear target (the same for raw and keep_clear). *cloudy / fill*: PSNR in mask of the identity and "
        "composite-fill baselines on the images the model ran on. *real-data PSNR gain*: PSNR in mask minus the "
        "identity's on the same images, mean over images with clouds. *s / image*: CPU, float32, on a shared "
        "2-core machine.",
    ]
    return "\n".join(lines)


def write(report: dict) -> None:
    text = DOC.read_text() if DOC.is_file() else f"# Real data\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    DOC.write_text(f"{head}{START}\n{table(report)}\n{END}{rest.split(END, 1)[1]}")
    compact = {k: v for k, v in report.items() if k != "per_image"}
    tmp = SCORES.with_name(f".{SCORES.name}.tmp")
    tmp.write_text(json.dumps(compact, indent=1) + "\n")
    tmp.replace(SCORES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--weights", nargs="*", default=[], help="extra checkpoints (.safetensors) to score")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the docs and the JSON alone")
    parser.add_argument("--json", type=Path, help="also write the full report (per image) here")
    args = parser.parse_args()
    start = time.perf_counter()
    report = run(args.data, args.weights)
    print(table(report))
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if not args.no_write:
        write(report)
        print(f"wrote {DOC.relative_to(ROOT)} and {SCORES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
