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
