"""Mask clouds and shadows in a Sentinel-2 GeoTIFF.

Task: you have a Sentinel-2 L1C GeoTIFF (13 bands, DN) and want a cloud/shadow mask beside it, as a
Cloud-Optimized GeoTIFF GIS tools open, plus a picture to check it by eye.

This reads a real cloudy SEN12MS-CR patch from ``../shared/data`` lazily (Dask), runs the DSen2-CR rule-based
detector, writes the class raster (0 clear, 1 cloud, 2 shadow, 255 nodata) and the cloud probability as COGs,
and draws RGB | probability | classes into ``mask_geotiff.png``. Run it from anywhere::

    python examples/mask_geotiff.py [--image FILE.tif] [--method dsen2cr] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import xcloudfree as xcf
from xcloudfree.masking import CLASSES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE = "sen12mscr/ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif"


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED_DATA / IMAGE, help="Sentinel-2 L1C GeoTIFF (DN)")
    parser.add_argument("--method", default="dsen2cr", help="masking method (see xcloudfree.masking.METHODS)")
    parser.add_argument("--out", type=Path, default=Path("examples_output/mask_geotiff"), help="output folder")
    args = parser.parse_args(argv)

    # Chunks make the read lazy: the same code masks a 10980² tile in bounded memory.
    s2 = xcf.io.read_s2(args.image, chunks={"x": 128, "y": 128})
    masks = xcf.masking.detect(s2, method=args.method)
    classes = xcf.masking.to_classes(masks)
    written = {
        "classes": xcf.io.write_cog(classes, args.out / "mask_classes.tif"),
        "probability": xcf.io.write_cog(masks["cloud_probability"], args.out / "cloud_probability.tif"),
    }

    codes = classes.values
    shares = {name: float(np.mean(codes == code)) for code, name in CLASSES.items()}
    summary = {"image": str(args.image), "method": args.method, "shape": list(codes.shape), "shares": shares}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    written["summary"] = args.out / "summary.json"

    palette = np.array([(0.1, 0.1, 0.1), (1.0, 1.0, 1.0), (0.2, 0.4, 1.0)], np.float32)  # clear, cloud, shadow
    written["figure"] = xcf.plot.quicklook(
        {
            "Sentinel-2 RGB": xcf.plot.rgb(s2),
            "cloud probability": masks["cloud_probability"].values,
            "classes (cloud white, shadow blue)": palette[np.minimum(codes, 2)],
        },
        args.out / "mask_geotiff.png",
        panel_size=3.0,
    )
    for name, path in written.items():
        print(f"{name:>12}: {path}")
    print("shares: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    return written


if __name__ == "__main__":
    main()
