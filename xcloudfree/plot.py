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

__all__ = ["plot_evaluation", "quicklook", "rgb", "timeseries_strip"]

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

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> pred, target = xcf.sensors.reflectance(scene.s2), xcf.sensors.reflectance(scene.s2_clear)
    >>> fig = xcf.plot.plot_evaluation(pred, target, mask=scene.cloud_truth)  # path="eval.png" writes a PNG
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['error map (64 × 64 px), mask in cyan', 'per-band nRMSE']
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
    """A display image (height, width, 3) in [0, 1] from an S2 DataArray in DN: reflectance × ``gain``, clipped.

    >>> import xcloudfree as xcf
    >>> image = xcf.plot.rgb(xcf.datasets.synthetic_scene(size=64).s2_clear)
    >>> image.shape, image.dtype, 0 <= float(image.min()) <= float(image.max()) <= 1
    ((64, 64, 3), dtype('float32'), True)
    """
    data = np.asarray(s2.sel(band=list(bands)).values, dtype=np.float32)
    return np.clip(np.moveaxis(data, 0, -1) / 10000.0 * gain, 0.0, 1.0)


def quicklook(panels: dict[str, np.ndarray], path: str | os.PathLike, *, panel_size: float = 4.0) -> Path:
    """Panels side by side as a PNG (written atomically): RGB arrays (h, w, 3) in [0, 1] or layers (h, w).

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> panels = {"cloudy": xcf.plot.rgb(scene.s2), "clouds": scene.cloud_opacity.values}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.plot.quicklook(panels, f"{tmp}/quicklook.png", panel_size=2)
    ...     print(path.name, path.read_bytes()[1:4])
    quicklook.png b'PNG'
    """
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


#: Colours of the ``fill_source`` codes (observed, temporal, model, unfilled).
_SOURCE_COLOURS = ("#d9d9d9", "#4c72b0", "#dd8452", "#c44e52")


def timeseries_strip(
    filled: Any,
    path: str | os.PathLike,
    *,
    dates: Sequence[int] | None = None,
    bands: Sequence[str] = ("B04", "B03", "B02"),
    gain: float = 3.0,
    panel_size: float = 1.5,
    max_side: int = 128,
    dpi: int = 100,
) -> Path:
    """A strip of dates: the cloudy input, the filled image and where each pixel came from, as a PNG.

    Parameters
    ----------
    filled : xarray.Dataset
        The result of :func:`xcloudfree.timeseries.fill` (``s2``, ``s2_filled``, ``fill_source``).
    path : where to write the PNG (atomically).
    dates : indices along ``time`` to show (default: all).
    bands, gain : the RGB bands and the brightness of :func:`rgb`.
    panel_size : inches per panel; ``max_side`` pixels per panel at most (block means), ``dpi`` of the PNG:
        they set the file size.

    Returns
    -------
    pathlib.Path of the PNG: one column per date, rows cloudy | filled | fill_source.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np, xarray as xr
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=32, cloud_cover=0.3)
    >>> time = np.array(["2024-06-01", "2024-06-11"], dtype="datetime64[ns]")
    >>> ts = xr.Dataset({"s2": xr.concat([scene.s2_clear, scene.s2], dim="time")}).assign_coords(time=time)
    >>> filled = xcf.timeseries.fill(ts, "nearest", mask="dsen2cr")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.plot.timeseries_strip(filled, f"{tmp}/strip.png")
    ...     print(path.name, path.read_bytes()[1:4])
    strip.png b'PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    missing = [v for v in ("s2", "s2_filled", "fill_source") if v not in filled]
    if missing:
        raise ValueError(f"filled: expected the result of xcloudfree.timeseries.fill, missing {missing}")
    dates = list(range(filled.sizes["time"])) if dates is None else [int(i) for i in dates]
    factor = max(1, math.ceil(max(filled.sizes["y"], filled.sizes["x"]) / max_side))

    def small_rgb(s2: Any) -> np.ndarray:
        image = rgb(s2, bands=bands, gain=gain)
        return np.stack([_block_mean(image[..., c], factor) for c in range(3)], axis=-1)

    fig = Figure(figsize=(panel_size * len(dates), panel_size * 3 + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(dates), squeeze=False)
    colours = ListedColormap(_SOURCE_COLOURS)
    for col, t in enumerate(dates):
        date = filled.isel(time=t)
        source = np.asarray(date["fill_source"].values)[::factor, ::factor]
        panels = (small_rgb(date["s2"]), small_rgb(date["s2_filled"]), source)
        for row, image in enumerate(panels):
            ax = axes[row, col]
            if row == 2:
                ax.imshow(image, cmap=colours, vmin=-0.5, vmax=3.5, interpolation="nearest")
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(str(date["time"].values)[:10], fontsize=8)
    for row, label in enumerate(("cloudy", "filled", "fill_source")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    names = str(filled["fill_source"].attrs.get("flag_meanings", "observed temporal model unfilled")).split()
    fig.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(_SOURCE_COLOURS, names, strict=False)],
        loc="outside lower center",
        ncols=4,
        fontsize=8,
        frameon=False,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(fig, path, dpi=dpi)
    return path


def _save_png(fig: Any, path: Path, dpi: int = 120) -> None:
    """Write ``fig`` next to ``path`` under a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
