"""Cloud removal of GeoTIFF files, tile by tile, streamed to a COG (``xcloudfree remove``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..inference import predict
from ..io import open_scene, write_cog
from .cluster import dask_cluster

__all__ = ["remove_clouds"]


def remove_clouds(
    s2: str | os.PathLike,
    out: str | os.PathLike,
    *,
    s1: str | os.PathLike | None = None,
    dem: str | os.PathLike | None = None,
    model: Any = "dsen2cr",
    product: str | None = None,
    chunk: int = 2048,
    workers: int = 0,
    scheduler: str | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
    **options: Any,
) -> Path:
    """Write the cloud-free bands of ``s2`` (float32 DN) predicted by ``model`` as a COG; returns its path.

    ``s1`` (VV/VH dB) must lie on the S2 grid, ``dem`` (m) may lie on any. ``options`` go to
    :func:`xcloudfree.inference.predict` (``tile``, ``overlap``, ``blend``, ``batch_size``, ``device``, ``mask``,
    ``keep_clear``, ``feather``). ``workers`` > 0 runs on a local Dask cluster of that many processes,
    ``scheduler`` (an address) on a running one (:func:`.cluster.dask_cluster`); ``log`` receives the cluster's line
    (workers, dashboard address). ``progress`` shows a progress bar while the COG is computed.
    """
    with dask_cluster(workers, scheduler=scheduler) as cluster:
        if cluster and log:
            log(cluster)
        scene = open_scene(
            s2=s2, s1=s1, dem=dem, product=product, chunks={"x": chunk, "y": chunk}, max_nan_fraction=1.0
        )
        result = predict(scene, model, **options)
        return write_cog(result["s2_cloudfree"], out, progress=progress)
