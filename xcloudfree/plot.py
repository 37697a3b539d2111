"""Figures: matplotlib's object API on the Agg canvas (no pyplot state, no display needed), PNGs written atomically."""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_evaluation", "quicklook", "rgb"]

#: Longest side of a map as drawn; larger scenes are averaged down in blocks (chunk-wise for Dask).
_MAX_DISPLAY = 1024


def _block_mean(image: Any, factor: int) -> np.ndarray:
    """(H, W) → (H // factor, W // factor) by NaN-ignoring block means; Dask is reduced before it is computed."""
    if factor > 1:
        h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
        image = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            image = np.nanmean(image, axis=(1, 3))
    return np.asarray(image.compute() if hasattr(image, "compute") else image, dtype=np.float64)


def plot_evaluation(
    pred: Any,
    target: Any,
    path: str | os.PathLike | None = None,
    band_names: Sequence[str] | None = None,
    mask: Any = None,
) -> Any:
    """Error map and per-band nRMSE of a prediction against its target.

    Parameters
    ----------
    pred, target : (C, H, W), numpy, Dask, torch or xarray
        Reflectance in [0, 1].
    path : optional
        Where to write the figure as PNG (written to a temporary name, then renamed).
    band_names : optional
        Bar labels (default: the ``band`` coordinate, else 0, 1, ...).
    mask : (H, W), optional
        Cloud mask, outlined on the error map.

    Returns
    -------
    matplotlib.figure.Figure
        Left: per-pixel RMSE over the bands (block-averaged down to at most 1024 px a side); right: RMSE of each
        band divided by its value range in the target (:func:`xcloudfree.metrics.band_nrmse`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .metrics import band_nrmse
    from .metrics._inputs import as_images, as_mask, check_pair

    p, names_p = as_images(pred, "pred")
    t, names_t = as_images(target, "target")
    check_pair(p, t, ("pred", "target"))
    if p.shape[0] != 1:
        raise ValueError(f"pred: expected one image (C, H, W), found a batch of {p.shape[0]}")
    count, height, width = p.shape[1:]
    names = list(band_names) if band_names is not None else list(names_t or names_p or map(str, range(count)))
    if len(names) != count:
        raise ValueError(f"band_names: expected {count} names, found {len(names)}")

    factor = max(1, math.ceil(max(height, width) / _MAX_DISPLAY))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels NaN in every band stay NaN
        error = _block_mean(np.sqrt(np.nanmean((p[0] - t[0]) ** 2, axis=0)), factor)
    nrmse = band_nrmse(p, t)

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_map, ax_bar = fig.subplots(1, 2, width_ratios=(1.1, 1))
    finite = error[np.isfinite(error)]
    top = float(np.percentile(finite, 99)) if finite.size else 1.0
    image = ax_map.imshow(error, cmap="magma", vmin=0.0, vmax=top if top > 0 else 1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax_map, label="RMSE over bands (reflectance)", extend="max")
    if mask is not None:
        cloud = _block_mean(as_mask(mask, p.shape)[0], factor)
        if np.nanmin(cloud) < 0.5 < np.nanmax(cloud):
            ax_map.contour(cloud, levels=[0.5], colors="cyan", linewidths=0.8)
    scale = f", 1:{factor} block means" if factor > 1 else ""
    ax_map.set_title(f"error map ({height} × {width} px{scale})" + (", mask in cyan" if mask is not None else ""))
    ax_map.set_axis_off()

    ax_bar.bar(range(count), nrmse, color="tab:blue")
    ax_bar.set_xticks(range(count), names, rotation=90 if count > 6 else 0)
    ax_bar.set_ylabel("nRMSE (RMSE / target range)")
    ax_bar.set_title("per-band nRMSE")
    ax_bar.grid(axis="y", alpha=0.3)

    if path is not None:
        _save_png(fig, Path(path))
    return fig


def rgb(s2: Any, *, bands: Sequence[str] = ("B04", "B03", "B02"), gain: float = 3.0) -> np.ndarray:
    """A display image (height, width, 3) in [0, 1] from an S2 DataArray in DN: reflectance × ``gain``, clipped."""
    data = np.asarray(s2.sel(band=list(bands)).values, dtype=np.float32)
    return np.clip(np.moveaxis(data, 0, -1) / 10000.0 * gain, 0.0, 1.0)


def quicklook(panels: dict[str, np.ndarray], path: str | os.PathLike, *, panel_size: float = 4.0) -> Path:
    """Panels side by side as a PNG (written atomically): RGB arrays (h, w, 3) in [0, 1] or layers (h, w)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size * len(panels), panel_size), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (title, image) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(fig, path)
    return path


def _save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` next to ``path`` under a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
