"""The cloud and shadow mask of a Sentinel-2 GeoTIFF, written as a COG (``xcloudfree mask``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import read_s2, write_cog
from ..masking import detect, to_classes

__all__ = ["mask_file"]


def mask_file(
    s2: str | os.PathLike,
    out: str | os.PathLike,
    *,
    method: str = "dsen2cr",
    probability: bool = False,
    product: str | None = None,
    chunk: int = 2048,
    progress: bool = False,
    **params: Any,
) -> Path:
    """Mask ``s2`` (DN) with ``method`` and write the classes (uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata).

    ``probability`` writes the float cloud probability instead; ``params`` go to
    :func:`xcloudfree.masking.detect`. Streams in ``chunk``-pixel Dask chunks; returns the COG's path.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import xcloudfree as xcf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     s2 = xcf.io.write_cog(xcf.datasets.synthetic_scene(64, seed=1)["s2"], f"{tmp}/s2.tif")
    ...     classes = xcf.io.read_dem(mask_file(s2, f"{tmp}/mask.tif"))  # one layer
    >>> np.unique(classes).tolist()  # clear, cloud, shadow
    [0.0, 1.0, 2.0]
    """
    image = read_s2(s2, product=product, chunks={"x": chunk, "y": chunk})
    masks = detect(image, method=method, **params)
    layer = masks["cloud_probability"] if probability else to_classes(masks)
    return write_cog(layer, out, progress=progress)
