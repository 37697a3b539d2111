"""A STAC time series (S2, optional S1), its cloudy pixels filled, written to Zarr (``xcloudfree fill``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..io import stac, write_zarr
from ..timeseries import fill
from .cluster import dask_cluster

__all__ = ["fill_from_stac"]


def fill_from_stac(
    url: str,
    out: str | os.PathLike,
    *,
    collections: Sequence[str],
    bbox: Sequence[float],
    datetime: str,
    s1_collections: Sequence[str] | None = None,
    s1_window_days: float = 6.0,
    methods: Sequence[str] = ("linear",),
    mask: str = "dsen2cr",
    max_gap_days: float | None = None,
    model: str | None = None,
    resolution: float = 10.0,
    crs: str | None = None,
    dem: str | os.PathLike | None = None,
    chunk: int = 1024,
    workers: int = 0,
    scheduler: str | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Search, load and fill a time series; returns the Zarr store's path and the cube's sizes.

    S2 items of ``collections`` in ``bbox`` (degrees) and ``datetime``; S1 items of ``s1_collections`` up to
    ``s1_window_days`` from the S2 dates. :func:`xcloudfree.timeseries.fill` fills the cloudy pixels with
    ``methods`` in order. ``workers`` > 0 runs on a local Dask cluster of that many processes, ``scheduler`` (an
    address) on a running one (:func:`.cluster.dask_cluster`); ``log`` receives one line per step (the cluster's
    workers and dashboard address, item counts). ``progress`` shows a progress bar while the cube is computed.
    """
    say = log or (lambda line: None)
    with dask_cluster(workers, scheduler=scheduler) as cluster:
        if cluster:
            say(cluster)
        items = stac.search(url, bbox=bbox, datetime=datetime, collections=list(collections))
        say(f"sentinel-2: {len(items)} item(s)")
        items_s1 = None
        if s1_collections:
            wide = stac.widen_datetime(datetime, s1_window_days)
            items_s1 = stac.search(url, bbox=bbox, datetime=wide, collections=list(s1_collections))
            say(f"sentinel-1: {len(items_s1)} item(s)")
        ts = stac.load(
            items,
            items_s1,
            dem=dem,
            crs=crs,
            resolution=resolution,
            bbox=bbox,
            chunks={"x": chunk, "y": chunk},
            s1_window_days=s1_window_days,
        )
        result = fill(ts, list(methods), mask=mask, max_gap_days=max_gap_days, model=model)
        path = write_zarr(result, out, progress=progress)
    return path, dict(result.sizes)
