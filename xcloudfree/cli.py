"""The ``xcloudfree`` command: one sub-command per job of :mod:`xcloudfree.jobs`.

Commands parse arguments, call the job and print; expected errors become one line and exit code 2 (``_Commands``).
Jobs are imported inside the commands, so that ``xcloudfree --help`` loads none of their libraries.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input raises: our ValueErrors, file system errors, and the errors of the readers we loaded."""
    found: list[type[BaseException]] = [ValueError, OSError, FloatingPointError]
    if "rasterio" in sys.modules:
        from rasterio.errors import RasterioError

        found.append(RasterioError)
    if "yaml" in sys.modules:
        from yaml import YAMLError

        found.append(YAMLError)
    return tuple(found)


class _Commands(TyperGroup):
    """Every command, present and future, turns an expected error into one line and exit code 2.

    Anything else (a bug) keeps its traceback.
    """

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except _expected_errors() as err:
            message = " ".join(str(err).split()) or type(err).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code=2) from None


# The cluster options of the commands that compute on Dask (remove, fill): docs/scaling.md.
_Workers = Annotated[
    int, typer.Option(help="Start a local Dask cluster of N worker processes and print its dashboard (0: threads).")
]
_Scheduler = Annotated[
    str | None, typer.Option(help="Run on the Dask cluster whose scheduler listens here (e.g. tcp://host:8786).")
]

app = typer.Typer(
    name="xcloudfree",
    help="Remove clouds from Sentinel-2 images with Sentinel-1 SAR.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Commands,
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"xcloudfree {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Remove clouds from Sentinel-2 images with Sentinel-1 SAR."""
    from .parallel import release_freed_memory

    release_freed_memory()  # resident memory then follows the chunks in flight over a long job


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="A GeoTIFF / COG.")],
    as_: Annotated[str, typer.Option("--as", help="Read as s2, s1, dem or auto (by band count).")] = "auto",
) -> None:
    """Say what a GeoTIFF is, read as a scene variable."""
    from .jobs.inspect import describe_file

    typer.echo(describe_file(file, as_=as_))


@app.command()
def models() -> None:
    """List the networks with their parameter counts, specs and the real-data PSNR gain of their bundled weights."""
    from .jobs.weights import list_models

    for row in list_models():
        spec = row["spec"]
        inputs = ", ".join(spec["input_order"]) or "(any)"
        outputs = ", ".join(spec["output_bands"])
        typer.echo(
            f"{row['name']:<22} {row['parameters']:>12,} params  {spec['role']:<13} {spec['normalization']:<7} "
            f"multiple {spec['size_multiple']:<3} halo {spec['halo']:<3} in [{inputs}] → out [{outputs}]  "
            f"real-data PSNR gain: {row['real_data_gain']}"
        )
    typer.echo(
        "real-data PSNR gain: PSNR inside the cloud mask minus the cloudy input's, on real SEN12MS-CR images, of the "
        "bundled weights (bench/bench_real.py, docs/real-data.md); n/a: no bundled weights."
    )


@app.command("import-weights")
def import_weights(
    file: Annotated[Path, typer.Argument(help="Published weights: Keras .hdf5 (dsen2cr) or PyTorch .pth.")],
    arch: Annotated[str, typer.Option(help="dsen2cr, carf, pix2pix or patchgan.")],
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    hparam: Annotated[
        list[str] | None, typer.Option("--hparam", "-p", help="KEY=VALUE hyperparameter (JSON value); repeatable.")
    ] = None,
) -> None:
    """Convert published weights into an xcloudfree checkpoint, without unpickling anything."""
    import json

    from .jobs.weights import convert_weights

    hparams = {}
    for item in hparam or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--hparam: expected KEY=VALUE, found {item!r}")
        try:
            hparams[key] = json.loads(value)
        except json.JSONDecodeError:
            hparams[key] = value
    path, info = convert_weights(file, out, arch, **hparams)
    imported = info["metadata"]["imported_from"]
    hp = ", ".join(f"{k}={v}" for k, v in info["hparams"].items())
    typer.echo(f"{info['architecture']}({hp}) from {imported['source']} (sha256 {imported['sha256'][:12]}…)")
    reasons = sorted(set(imported["ignored"].values()))
    typer.echo(f"{len(imported['ignored'])} ignored file entries" + "".join(f"\n  - {r}" for r in reasons))
    typer.echo(f"checkpoint: {path}")


@app.command()
def mask(
    s2: Annotated[Path, typer.Option("--s2", help="Sentinel-2 GeoTIFF (DN).")],
    out: Annotated[Path, typer.Option("--out", help="Output COG.")],
    method: Annotated[str, typer.Option(help="dsen2cr, uncrtaints, carf, s2cloudless, cyclecr or scl.")] = "dsen2cr",
    probability: Annotated[bool, typer.Option(help="Write the float cloud probability instead of classes.")] = False,
    product: Annotated[str | None, typer.Option(help="L1C or L2A (12 bands).")] = None,
    chunk: Annotated[int, typer.Option(help="Dask chunk side in pixels.")] = 2048,
) -> None:
    """Cloud and shadow mask of a Sentinel-2 image as a COG (uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata)."""
    from .jobs.mask import mask_file

    path = mask_file(s2, out, method=method, probability=probability, product=product, chunk=chunk, progress=True)
    typer.echo(f"mask: {path}")


@app.command()
def remove(
    s2: Annotated[Path, typer.Option("--s2", help="Cloudy Sentinel-2 GeoTIFF (DN).")],
    out: Annotated[Path, typer.Option("--out", help="Output COG of the cloud-free bands (float32 DN).")],
    s1: Annotated[Path | None, typer.Option("--s1", help="Sentinel-1 VV/VH GeoTIFF (dB) on the S2 grid.")] = None,
    dem: Annotated[Path | None, typer.Option("--dem", help="DEM GeoTIFF (m), any grid.")] = None,
    model: Annotated[str, typer.Option(help="A model name or a .safetensors checkpoint.")] = "dsen2cr",
    tile: Annotated[int, typer.Option(help="Tile side in pixels.")] = 256,
    overlap: Annotated[int | None, typer.Option(help="Pixels shared by neighbouring tiles (default: 2·halo).")] = None,
    blend: Annotated[str, typer.Option(help="cosine, gaussian or mean.")] = "cosine",
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    mask_method: Annotated[
        str, typer.Option("--mask-method", "--mask", help="Masking method deciding what is cloudy (--keep-clear).")
    ] = "dsen2cr",
    keep_clear: Annotated[
        bool,
        typer.Option(
            "--keep-clear/--raw",
            help="Keep the observed pixels where the mask says clear (feathered at its edges), or the raw output.",
        ),
    ] = True,
    feather: Annotated[int, typer.Option(help="Feathering width at mask edges, px (with --keep-clear).")] = 3,
    product: Annotated[str | None, typer.Option(help="L1C or L2A (12 bands).")] = None,
    chunk: Annotated[int, typer.Option(help="Dask chunk side in pixels.")] = 2048,
    workers: _Workers = 0,
    scheduler: _Scheduler = None,
) -> None:
    """Remove clouds from a Sentinel-2 GeoTIFF with a network, tile by tile, streaming to a COG."""
    from .jobs.remove import remove_clouds

    path = remove_clouds(
        s2,
        out,
        s1=s1,
        dem=dem,
        model=model,
        product=product,
        chunk=chunk,
        workers=workers,
        scheduler=scheduler,
        progress=True,
        log=typer.echo,
        tile=tile,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
        mask=mask_method,
        keep_clear=keep_clear,
        feather=feather,
    )
    typer.echo(f"cloud-free: {path}")


def _names(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma lists: ``--method linear --method model`` = ``--method linear,model``."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


@app.command()
def fill(
    stac_url: Annotated[str, typer.Option("--stac", help="STAC API URL.")],
    collections: Annotated[list[str], typer.Option(help="Sentinel-2 collection(s); repeatable or comma list.")],
    bbox: Annotated[str, typer.Option(help="min_lon,min_lat,max_lon,max_lat (degrees).")],
    datetime: Annotated[str, typer.Option("--datetime", help="Interval, e.g. 2018-01-01/2018-12-31.")],
    out: Annotated[Path, typer.Option("--out", help="Output Zarr store of the filled cube.")],
    s1_collections: Annotated[
        list[str] | None, typer.Option(help="Sentinel-1 collection(s) (RTC or calibrated GRD); repeatable.")
    ] = None,
    s1_window_days: Annotated[float, typer.Option(help="Largest |S1 − S2| time difference, days.")] = 6.0,
    method: Annotated[
        list[str] | None, typer.Option(help="least_cloudy, mosaic, linear, nearest, model; repeatable, in order.")
    ] = None,
    mask_method: Annotated[str, typer.Option("--mask", help="Masking method (dsen2cr, s2cloudless, scl, ...).")] = (
        "dsen2cr"
    ),
    max_gap_days: Annotated[float | None, typer.Option(help="Use clear observations at most this far, days.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or checkpoint for --method model.")] = None,
    resolution: Annotated[float, typer.Option(help="Pixel size in CRS units (metres also for EPSG:4326).")] = 10.0,
    crs: Annotated[str | None, typer.Option(help="Output CRS, e.g. EPSG:32633 (default: the items' own).")] = None,
    dem: Annotated[Path | None, typer.Option("--dem", help="DEM GeoTIFF (m), any grid.")] = None,
    chunk: Annotated[int, typer.Option(help="Dask chunk side in pixels.")] = 1024,
    workers: _Workers = 0,
    scheduler: _Scheduler = None,
) -> None:
    """Search a STAC API, load the S2 (+ S1) time series and fill its cloudy pixels into a Zarr cube."""
    from .jobs.fill import fill_from_stac

    try:
        area = [float(v) for v in bbox.split(",")]
    except ValueError:
        area = []
    if len(area) != 4:
        raise ValueError(f"--bbox: expected min_lon,min_lat,max_lon,max_lat, found {bbox!r}")
    path, sizes = fill_from_stac(
        stac_url,
        out,
        collections=_names(collections),
        bbox=area,
        datetime=datetime,
        s1_collections=_names(s1_collections),
        s1_window_days=s1_window_days,
        methods=_names(method) or ["linear"],
        mask=mask_method,
        max_gap_days=max_gap_days,
        model=model,
        resolution=resolution,
        crs=crs,
        dem=dem,
        chunk=chunk,
        workers=workers,
        scheduler=scheduler,
        progress=True,
        log=typer.echo,
    )
    typer.echo(f"cube: {path} ({', '.join(f'{k} {v}' for k, v in sizes.items())})")


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Prediction GeoTIFF (DN).")],
    target: Annotated[Path, typer.Option("--target", help="Cloud-free target GeoTIFF (DN).")],
    json_out: Annotated[Path, typer.Option("--json", help="Report JSON.")],
    cloudy: Annotated[Path | None, typer.Option("--cloudy", help="Cloudy input GeoTIFF (DN).")] = None,
    mask_method: Annotated[str | None, typer.Option("--mask", help="Masking method run on --cloudy.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Figure PNG: error map and per-band nRMSE.")] = None,
) -> None:
    """Score a prediction against a target: MAE, RMSE, PSNR, SSIM, SAM (+ masked scores with --cloudy --mask)."""
    from .jobs.evaluate import evaluate_files

    report = evaluate_files(pred, target, cloudy=cloudy, mask=mask_method, json_path=json_out, plot_path=plot)
    for key in ("mae", "rmse", "psnr", "ssim", "sam"):
        typer.echo(f"{key:>5}: {report[key]:.6g}")
    typer.echo(f"report: {json_out}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training configuration, YAML or JSON.")],
    resume: Annotated[bool, typer.Option(help="Continue from <output>/state.safetensors.")] = False,
    allow_changes: Annotated[
        bool, typer.Option(help="With --resume: continue although the configuration changed (with a warning).")
    ] = False,
) -> None:
    """Train a network from a configuration; writes checkpoints, CSV logs and the final model."""
    from .training import train as run  # the training job lives with the trainers

    typer.echo(f"model: {run(config, resume=resume, allow_changes=allow_changes)}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo_output"),
    size: Annotated[int, typer.Option(help="Scene side in pixels.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic scene.")] = 0,
    cloud_cover: Annotated[float, typer.Option(help="Cloud cover fraction, 0–1.")] = 0.4,
) -> None:
    """Run the main job on a synthetic scene: write COGs and a quicklook PNG."""
    from .jobs.demo import run_demo

    for name, path in run_demo(out, size=size, seed=seed, cloud_cover=cloud_cover).items():
        typer.echo(f"{name:>10}: {path}")
