"""The ``xcloudfree`` command: thin wrappers over the library, one sub-command per job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="xcloudfree",
    help="Remove clouds from Sentinel-2 images with Sentinel-1 SAR.",
    no_args_is_help=True,
    add_completion=False,
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


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="A GeoTIFF / COG.")],
    as_: Annotated[str, typer.Option("--as", help="Read as s2, s1, dem or auto (by band count).")] = "auto",
) -> None:
    """Say what a GeoTIFF is, read as a scene variable."""
    from .io.inspect import describe_file

    try:
        typer.echo(describe_file(file, as_=as_))
    except ValueError as err:
        _fail(err)


@app.command()
def models() -> None:
    """List the networks with their parameter counts and specs."""
    from .models import summary

    for row in summary():
        spec = row["spec"]
        inputs = ", ".join(spec["input_order"]) or "(any)"
        outputs = ", ".join(spec["output_bands"])
        typer.echo(
            f"{row['name']:<22} {row['parameters']:>12,} params  {spec['role']:<13} {spec['normalization']:<7} "
            f"multiple {spec['size_multiple']:<3} halo {spec['halo']:<3} in [{inputs}] → out [{outputs}]"
        )


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
    from .io import read_s2, write_cog
    from .masking import detect, to_classes

    try:
        image = read_s2(s2, product=product, chunks={"x": chunk, "y": chunk})
        masks = detect(image, method=method)
        layer = masks["cloud_probability"] if probability else to_classes(masks)
        path = write_cog(layer, out, progress=True)
    except ValueError as err:
        _fail(err)
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
    mask_method: Annotated[str | None, typer.Option("--mask", help="Masking method for --keep-clear.")] = None,
    keep_clear: Annotated[bool, typer.Option(help="Keep observed values outside the mask.")] = False,
    product: Annotated[str | None, typer.Option(help="L1C or L2A (12 bands).")] = None,
    chunk: Annotated[int, typer.Option(help="Dask chunk side in pixels.")] = 2048,
    workers: Annotated[int, typer.Option(help="Start a local Dask cluster of N worker processes (0: threads).")] = 0,
) -> None:
    """Remove clouds from a Sentinel-2 GeoTIFF with a network, tile by tile, streaming to a COG."""
    import contextlib

    from .inference import predict
    from .io import open_scene, write_cog

    with contextlib.ExitStack() as stack:
        if workers > 0:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None))
            stack.enter_context(Client(cluster))
        try:
            scene = open_scene(
                s2=s2, s1=s1, dem=dem, product=product, chunks={"x": chunk, "y": chunk}, max_nan_fraction=1.0
            )
            result = predict(
                scene,
                model,
                tile=tile,
                overlap=overlap,
                blend=blend,
                batch_size=batch_size,
                device=device,
                mask=mask_method,
                keep_clear=keep_clear,
            )
            path = write_cog(result["s2_cloudfree"], out, progress=True)
        except ValueError as err:
            _fail(err)
    typer.echo(f"cloud-free: {path}")


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
    from .metrics.report import evaluate_files

    try:
        report = evaluate_files(pred, target, cloudy=cloudy, mask=mask_method, json_path=json_out, plot_path=plot)
    except ValueError as err:
        _fail(err)
    for key in ("mae", "rmse", "psnr", "ssim", "sam"):
        typer.echo(f"{key:>5}: {report[key]:.6g}")
    typer.echo(f"report: {json_out}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training configuration, YAML or JSON.")],
    resume: Annotated[bool, typer.Option(help="Continue from <output>/state.safetensors.")] = False,
) -> None:
    """Train a network from a configuration; writes checkpoints, CSV logs and the final model."""
    from .training import train as run

    try:
        path = run(config, resume=resume)
    except ValueError as err:
        _fail(err)
    typer.echo(f"model: {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo_output"),
    size: Annotated[int, typer.Option(help="Scene side in pixels.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic scene.")] = 0,
    cloud_cover: Annotated[float, typer.Option(help="Cloud cover fraction, 0–1.")] = 0.4,
) -> None:
    """Run the main job on a synthetic scene: write COGs and a quicklook PNG."""
    from .demo import run_demo

    try:
        written = run_demo(out, size=size, seed=seed, cloud_cover=cloud_cover)
    except ValueError as err:
        _fail(err)
    for name, path in written.items():
        typer.echo(f"{name:>10}: {path}")
