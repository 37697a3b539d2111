"""Evaluate a cloud-free prediction against a clear target.

Task: you have a prediction GeoTIFF (from ``xcloudfree remove`` or any other tool), the cloud-free image of the
same area and the cloudy input, and want the literature's scores (MAE, RMSE, PSNR, SSIM, SAM) overall and inside
the clouds, as JSON, with a figure of where the errors are.

Without ``--pred`` the example first makes a prediction: the bundled dsen2cr weights run on the real SEN12MS-CR
test triplet ROIs1970_fall_139_p839 from ``../shared/data``. Those weights were trained on synthetic scenes only,
so the scores show the tooling, not what a network trained on real data reaches. The cloudy input is scored the
same way (the identity baseline) so the two can be read side by side. Run it from anywhere::

    python examples/evaluate_prediction.py [--pred PRED.tif --target CLEAR.tif --cloudy CLOUDY.tif] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import xcloudfree as xcf
from xcloudfree.jobs import evaluate_files

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sen12mscr"
TRIPLET = {
    "cloudy": "ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif",
    "target": "ROIs1970_fall_s2/s2_139/ROIs1970_fall_s2_139_p839.tif",
    "s1": "ROIs1970_fall_s1/s1_139/ROIs1970_fall_s1_139_p839.tif",
}
KEYS = ("mae", "rmse", "psnr", "ssim", "sam")


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, help="prediction GeoTIFF (S2 DN); default: make one with dsen2cr")
    parser.add_argument("--target", type=Path, default=SHARED_DATA / TRIPLET["target"], help="clear S2 GeoTIFF")
    parser.add_argument("--cloudy", type=Path, default=SHARED_DATA / TRIPLET["cloudy"], help="cloudy S2 GeoTIFF")
    parser.add_argument("--s1", type=Path, default=SHARED_DATA / TRIPLET["s1"], help="S1 GeoTIFF, for --pred only")
    parser.add_argument("--mask", default="dsen2cr", help="masking method run on the cloudy image")
    parser.add_argument("--out", type=Path, default=Path("examples_output/evaluate_prediction"), help="output folder")
    args = parser.parse_args(argv)

    written: dict[str, Path] = {}
    if args.pred is None:
        scene = xcf.io.open_scene(s2=args.cloudy, s1=args.s1, chunks={"x": 256, "y": 256})
        # One tile covers the 256² patch plus the model's halo on every side: each pixel is computed once.
        result = xcf.inference.predict(scene, "dsen2cr", tile=320, device="cpu")
        args.pred = written["prediction"] = xcf.io.write_cog(result["s2_cloudfree"], args.out / "prediction.tif")

    report = evaluate_files(
        args.pred,
        args.target,
        cloudy=args.cloudy,
        mask=args.mask,
        json_path=args.out / "report.json",
        plot_path=args.out / "evaluate_prediction.png",
    )
    # The identity baseline: the cloudy input scored as if it were the answer.
    identity = evaluate_files(args.cloudy, args.target, cloudy=args.cloudy, mask=args.mask)
    comparison = {
        name: {k: float(scores[k]) for k in KEYS} for name, scores in (("prediction", report), ("identity", identity))
    }
    inside = {
        name: {k: float(scores[f"{k}_reconstruction"]) for k in KEYS}
        for name, scores in (("prediction", report), ("identity", identity))
    }
    summary = {"overall": comparison, "inside_mask": inside, "mask_method": args.mask, "files": report["files"]}
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=1))
    written.update(
        report=args.out / "report.json",
        comparison=args.out / "comparison.json",
        figure=args.out / "evaluate_prediction.png",
    )
    for name, path in written.items():
        print(f"{name:>11}: {path}")
    for where, table in (("overall", comparison), ("inside mask", inside)):
        for name, s in table.items():
            print(f"{where:>11} {name:<10} " + "  ".join(f"{k} {s[k]:.4g}" for k in KEYS))
    return written


if __name__ == "__main__":
    main()
