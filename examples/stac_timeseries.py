"""Fill the cloudy dates of a Sentinel-2 time series found through a STAC API.

Task: you have a place and a date range, and want every date of the series cloud-free, as a Zarr cube, plus a
picture of what was filled and from where.

Offline, so it runs anywhere: it builds a small STAC catalogue of the real 15-date Rome L1C series of
``../shared/data`` (one COG per band and date, items shaped like earth-search ``sentinel-2-l1c`` items) and serves
it with a real STAC API server (``rustac serve``, from the ``dev`` extra) on 127.0.0.1, using the helper the tests
use (``tests/stac_server.py``). Then the same three calls as against any STAC API: search, load, fill. Against a
public API only the URL changes, e.g. ``https://earth-search.aws.element84.com/v1``. Run it from anywhere::

    python examples/stac_timeseries.py [--out DIR] [--method linear] [--mask dsen2cr]

Writes ``cube.zarr`` (the series with ``s2_filled``, ``mask``, ``fill_source``, ``fill_gap_days``) and
``stac_timeseries.png`` (one column per date: cloudy | filled | fill_source).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

import xcloudfree as xcf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BBOX = [12.715, 42.055, 12.725, 42.065]  # lon/lat, a 1 km² part of the Rome patch


def _catalogue_helper():
    """``tests/stac_server.py``, imported by path: examples are not a package."""
    spec = importlib.util.spec_from_file_location("stac_server", REPO / "tests" / "stac_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/stac_timeseries"), help="output folder")
    parser.add_argument("--method", default="linear", help="fill method(s), comma list (xcloudfree.timeseries)")
    parser.add_argument("--mask", default="dsen2cr", help="masking method run on every date")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared real data folder")
    args = parser.parse_args(argv)
    helper = _catalogue_helper()

    with tempfile.TemporaryDirectory() as folder:
        items = helper.rome_items(Path(folder), args.data)
        collection = helper.write_item_collection(items, Path(folder) / "rome.json")
        with helper.serve(collection) as url:
            found = xcf.io.stac.search(url, collections="sentinel-2-l1c", bbox=BBOX, datetime="2018-01-01/2018-12-31")
            # Lazy: nothing is read until the cube is written. 10 m on the items' own EPSG:4326 grid.
            ts = xcf.io.stac.load(found, bbox=BBOX, resolution=10, chunks={"x": 256, "y": 256})
            filled = xcf.timeseries.fill(ts, method=args.method.split(","), mask=args.mask)
            cube = xcf.io.write_zarr(filled, args.out / "cube.zarr")

    result = xr.open_zarr(cube)
    source = result["fill_source"].values
    shares = {name: float(np.mean(source == code)) for code, name in xcf.timeseries.FILL_SOURCES.items()}
    summary = {
        "items": [item.id for item in found],
        "shape": dict(result.sizes),
        "method": args.method,
        "mask": args.mask,
        "cloudy_share_per_date": [round(float(v), 3) for v in result["mask"].mean(("y", "x")).values],
        "fill_source_shares": shares,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    figure = xcf.plot.timeseries_strip(result, args.out / "stac_timeseries.png", dpi=72)
    written = {"cube": cube, "summary": args.out / "summary.json", "figure": figure}
    for name, path in written.items():
        print(f"{name:>8}: {path}")
    print(f"{len(found)} dates; " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    return written


if __name__ == "__main__":
    main()
