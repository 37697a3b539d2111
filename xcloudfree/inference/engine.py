"""Tiled inference over Dask: any model of the zoo, any scene size, the same pixels however the scene is chunked.

One task per output block (input chunks grouped or split to about four tile widths): it reads the model input over
the block plus the tiles reaching it (reflected at the scene border), runs every tile whose blend weight reaches the
block and blends them. No task hands data to another, so memory is bounded by the blocks in flight whatever the
scene's size; the price is that a tile on a block border runs once per block it reaches. The tiles are summed in
the groups and order of the global grid (:func:`_processing_chunks`), so a pixel gets the same value from any
block.

The network itself never travels inside the graph: tasks carry a small :class:`~xcloudfree.inference.runtime.ModelRef`
and each process loads it once (:mod:`xcloudfree.inference.runtime`, which also settles device and precision).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_int, check_positive_int
from ..parallel import Windows
from ..sensors import S2_BAND_NAMES, harmonize_s2
from .inputs import denormalize_output, model_input, required_variables
from .runtime import ModelRef, get_runner, resolve_model
from .tiling import TileGrid, accumulate_tiles, reflect_index

__all__ = ["predict"]

#: Least output block side (px) on CUDA (see _tiled).
_CUDA_BLOCK = 4096


def _model_window(scene: xr.Dataset, spec: Any, cloud_map: xr.DataArray | None, ys: slice, xs: slice) -> Any:
    """The model input over a window: the scene is sliced first, so only the window's pixels are read and scaled.

    Elementwise, so it equals the window of the whole scene's input bit for bit.
    """
    cmap = None if cloud_map is None else cloud_map.isel(y=ys, x=xs)
    return model_input(scene.isel(y=ys, x=xs), spec, cloud_map=cmap).data


def _block_task(
    source: Windows,
    ref: ModelRef,
    origin: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    bounds: tuple[int, int, int, int],
    parts: list[list[tuple[int, int]]],
    weights: np.ndarray,
    batch_size: int,
    out_channels: int,
) -> np.ndarray:
    """One output block (out_channels, y1 − y0, x1 − x0) float32 from every tile whose blend weight reaches it.

    Parameters
    ----------
    source : the model input (C_in, y, x)
    origin : scene coordinate (y, x) of the window's first pixel, negative at the top or left border
    rows, cols : the window's scene coordinates reflected into the scene (px)
    bounds : (y0, y1, x0, x1) of the block (px)
    parts : tile starts (y, x) per processing chunk reaching the block, in the grid's order
    weights : (tile, tile) blend window

    The grid's arithmetic is kept whichever block runs a tile: each part sums its tiles in float32 in order and
    the block adds the parts in float64 in order, so every pixel sees the same operations in any chunking.
    """
    runner = get_runner(ref)
    r0, c0 = int(rows.min()), int(cols.min())
    window = source.read(slice(r0, int(rows.max()) + 1), slice(c0, int(cols.max()) + 1))
    # The window is this task's own (computed here; model_input allocates even for NumPy scenes), so it is cleaned
    # in place, reflected at the scene border where needed (a copy there only): NaN (nodata) must not spread
    # through the convolutions, so it becomes zero on the network's scale and is masked again below.
    x = np.asarray(window[:, _as_slice(rows - r0)][:, :, _as_slice(cols - c0)], dtype=np.float32)
    del window
    y0, y1, x0, x1 = bounds
    oy, ox = origin
    invalid = ~np.isfinite(x[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]).all(axis=0)
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    acc = np.zeros((out_channels, y1 - y0, x1 - x0), np.float64)
    wsum = np.zeros((y1 - y0, x1 - x0), np.float64)
    for (py0, px0), part_acc, part_w in accumulate_tiles(
        x,
        origin,
        parts,
        runner.map,
        tile=weights.shape[0],
        weights=weights,
        batch_size=batch_size,
        out_channels=out_channels,
    ):
        # Only the block's pixels of the part's extent are kept.
        py1, px1 = py0 + part_w.shape[0], px0 + part_w.shape[1]
        ya, yb, xa, xb = max(y0, py0), min(y1, py1), max(x0, px0), min(x1, px1)
        here = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        inside = (slice(ya - py0, yb - py0), slice(xa - px0, xb - px0))
        acc[(slice(None), *here)] += part_acc[(slice(None), *inside)]
        wsum[here] += part_w[inside]
    out = np.divide(acc, wsum, out=acc).astype(np.float32)  # in place: no second float64 block
    out[:, invalid] = np.nan
    return out


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A contiguous ascending index as a slice (a view, no copy); reflected indices stay an array."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _processing_chunks(size: int, chunks: tuple[int, ...] | None, stride: int, target: int) -> tuple[int, ...]:
    """Processing chunk sizes (px) along an axis: whole strides, near ``target`` px and at most the input's chunks.

    A processing chunk groups the tiles it owns (those whose first kept pixel it holds) into one float32 sum:
    the grouping fixes the order of the additions, hence the output's last bits.
    """
    target = min(chunks[0], target) if chunks else target
    step = stride * max(1, round(target / stride))
    sizes = [step] * (size // step)
    if size % step:
        sizes.append(size % step)
    return tuple(sizes)


def _blocks(size: int, chunks: tuple[int, ...] | None, target: int) -> tuple[int, ...]:
    """Output block sizes (px) along an axis: input chunks grouped, or split, to about ``target`` px.

    Each block runs every tile reaching it, so a tile on a block border runs once per block it reaches: about
    ``1 + (tile − 2·margin) / block`` times the tiles per axis. A block never straddles two input chunks' borders
    unless it holds both whole, so the output reaches the input's chunks by splitting or concatenating alone.
    """
    sizes: list[int] = []
    run = 0
    for c in chunks or (size,):
        if c >= 2 * target:  # a large chunk: equal pieces near the target bound a task's memory
            if run:
                sizes.append(run)
                run = 0
            n = c // target
            sizes += [c // n + (k < c % n) for k in range(n)]
            continue
        run += c
        if run >= target:
            sizes.append(run)
            run = 0
    if run:
        sizes.append(run)
    return tuple(sizes)


class _TileGraph:
    """One task per output block over one scene: every block runs the tiles reaching it and blends them.

    Parameters
    ----------
    source : windows of the model input (C_in, y, x)
    ref : the network
    grid : the global tile grid
    chunks : processing chunk sizes (px) along y and x, whole strides (the float32 summation groups)
    blocks : output block sizes (px) along y and x
    """

    def __init__(
        self,
        source: Windows,
        ref: ModelRef,
        grid: TileGrid,
        chunks: tuple[tuple[int, ...], tuple[int, ...]],
        blocks: tuple[tuple[int, ...], tuple[int, ...]],
        *,
        blend: str,
        batch_size: int,
        out_channels: int,
    ) -> None:
        self.source, self.ref, self.grid, self.blocks = source, ref, grid, blocks
        self.weights = grid.window(blend)
        self.batch_size, self.out_channels = batch_size, out_channels
        #: per axis: tile starts, and the processing chunk owning each tile (the one holding its first kept pixel).
        self.starts = (grid.starts(0), grid.starts(1))
        self.owner = tuple(
            np.searchsorted(np.cumsum((0, *c)), s + grid.margin, side="right") - 1
            for c, s in zip(chunks, self.starts, strict=True)
        )

    def reaching(self, axis: int, lo: int, hi: int) -> np.ndarray:
        """Indices of the tiles along ``axis`` whose blend weight (kept pixels) meets ``[lo, hi)``."""
        kept = self.starts[axis] + self.grid.margin
        return np.flatnonzero((kept < hi) & (kept + self.grid.tile - 2 * self.grid.margin > lo))

    def block(self, bounds: tuple[int, int, int, int]) -> Any:
        """The task of the output block ``bounds`` = (y0, y1, x0, x1) px.

        The source goes inside the task, not as a key the blocks share: a cluster would run every block where that
        key lives. It is a lazy graph, small, except for a Dask scene made from in-memory NumPy arrays.
        """
        import dask

        grid = self.grid
        ty, tx = self.reaching(0, *bounds[:2]), self.reaching(1, *bounds[2:])
        sy, sx = self.starts[0][ty], self.starts[1][tx]
        # Parts in the grid's order (processing chunks row by row), each with its tiles in row order.
        parts = [
            [(int(a), int(b)) for a in sy[self.owner[0][ty] == i] for b in sx[self.owner[1][tx] == j]]
            for i in np.unique(self.owner[0][ty])
            for j in np.unique(self.owner[1][tx])
        ]
        rows = reflect_index(np.arange(sy.min(), sy.max() + grid.tile), grid.height)
        cols = reflect_index(np.arange(sx.min(), sx.max() + grid.tile), grid.width)
        return dask.delayed(_block_task, pure=True)(
            self.source,
            self.ref,
            (int(sy.min()), int(sx.min())),
            rows,
            cols,
            bounds,
            parts,
            self.weights,
            self.batch_size,
            self.out_channels,
        )

    def array(self) -> Any:
        """The blended output as one Dask array (out_channels, y, x) in output blocks."""
        import dask.array as da

        ey, ex = (np.cumsum((0, *b)) for b in self.blocks)
        return da.block(
            [
                [
                    da.from_delayed(
                        self.block((int(ey[i]), int(ey[i + 1]), int(ex[j]), int(ex[j + 1]))),
                        shape=(self.out_channels, int(ey[i + 1] - ey[i]), int(ex[j + 1] - ex[j])),
                        dtype=np.float32,
                        meta=np.empty((0, 0, 0), np.float32),
                    )
                    for j in range(len(ex) - 1)
                ]
                for i in range(len(ey) - 1)
            ]
        )


def _tiled(
    scene: xr.Dataset,
    spec: Any,
    cloud_map: xr.DataArray | None,
    xin: xr.DataArray,
    ref: ModelRef,
    grid: TileGrid,
    *,
    blend: str,
    batch_size: int,
) -> Any:
    """Lazy Dask array (out_channels, y, x) of blended network outputs, on the network's scale.

    ``xin`` is the lazy model input of ``scene``: its chunks set the processing chunks and the blocks; the blocks
    read their windows from ``scene`` itself.
    """
    chunks_of = xin.chunks[1:] if xin.chunks is not None else (None, None)
    target = 2048 if ref.device.startswith("cuda") else 512
    # Blocks of about 4 kept tile widths: a tile runs at most about 1.25 times per axis (see _blocks). On a GPU
    # the tiles, not the host's memory, are the cost, so blocks of at least 4096 px (≈ 1.1 tile runs per axis at
    # tile 512), whose many batches also keep the device's pipeline full (runtime._Runner.map).
    block = 4 * (grid.tile - 2 * grid.margin)
    if ref.device.startswith("cuda"):
        block = max(block, _CUDA_BLOCK)
    sizes = (grid.height, grid.width)
    chunks = tuple(_processing_chunks(n, c, grid.stride, target) for n, c in zip(sizes, chunks_of, strict=True))
    blocks = tuple(_blocks(n, c, block) for n, c in zip(sizes, chunks_of, strict=True))
    needed = [v for v in required_variables(spec) if v in scene]
    source = Windows(partial(_model_window, scene[needed], spec, cloud_map))
    graph = _TileGraph(
        source, ref, grid, chunks, blocks, blend=blend, batch_size=batch_size, out_channels=spec.out_channels
    )
    return graph.array()


def predict(
    scene: xr.Dataset,
    model: Any,
    *,
    tile: int = 256,
    overlap: int | None = None,
    blend: str = "cosine",
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "auto",
    mask: str | xr.DataArray | None = None,
    keep_clear: bool = True,
    cloud_map: xr.DataArray | None = None,
    feather: int = 3,
) -> xr.Dataset:
    """Remove clouds from a scene with a network, tile by tile; lazy on Dask input.

    Parameters
    ----------
    scene : Dataset with ``s2`` (cloudy, DN) and whatever else the model needs (``s1`` dB, ``dem`` m)
    model : a model name, a checkpoint path or an ``nn.Module`` of :mod:`xcloudfree.models`
    tile : tile side in pixels (a multiple of the model's size multiple)
    overlap : pixels shared by neighbouring tiles; ``None`` gives each tile side the model's halo
        (``overlap = 2·halo``). Each side drops ``min(halo, overlap // 2)`` px and blends over the rest.
    blend : ``"cosine"``, ``"gaussian"`` or ``"mean"``
    batch_size : tiles per forward pass
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        (:func:`~xcloudfree.inference.runtime.resolve_device`)
    precision : ``"auto"`` (bf16 autocast on CUDA where supported, float32 on CPU), ``"float32"``, ``"bfloat16"``,
        ``"float16"`` (:func:`~xcloudfree.inference.runtime.amp_dtype`)
    mask : a masking method name (e.g. ``"dsen2cr"``) or a (y, x) DataArray in [0, 1]; added to the output as
        ``mask``, used by ``keep_clear`` and, as the cloud map, by models conditioned on one. ``None``: the
        ``"dsen2cr"`` detector when ``keep_clear``, no mask otherwise
    keep_clear : the observed pixels where the mask says clear, the prediction where it says cloud or shadow,
        feathered outwards over ``feather`` px at hard mask edges (:func:`xcloudfree.inference.composite.composite`);
        ``False``: the raw network output everywhere
    cloud_map : (y, x) map in [0, 1] for models conditioned on a cloud map (default: ``mask``)
    feather : width in px of the transition outside hard mask edges with ``keep_clear`` (0: none)

    Returns
    -------
    The scene plus ``s2_cloudfree`` (band, y, x): float32 DN of the bands the model predicts (the scene's band
    variables ``s2`` and ``s2_clear`` keep those bands only), coords and CRS of the scene, attrs of ``s2`` plus
    provenance (``model``, ``weights_sha256``, ``tile``, ``overlap``, ``blend``);
    plus ``mask`` when one was computed. NaN input pixels are NaN in the output.

    Examples
    --------
    >>> import torch, xcloudfree as xcf
    >>> _ = torch.manual_seed(0)
    >>> net = xcf.models.create("dsen2cr", features=4, blocks=1)
    >>> scene = xcf.datasets.synthetic_scene(48, seed=1)
    >>> out = predict(scene, net, tile=32, device="cpu", keep_clear=False)
    >>> out["s2_cloudfree"].shape, out["s2_cloudfree"].attrs["overlap"]
    ((13, 48, 48), 16)
    """
    if not isinstance(scene, xr.Dataset):
        raise ValueError(f"scene: expected an xarray.Dataset scene, found {type(scene).__name__}")
    tile, batch_size = check_positive_int("tile", tile), check_positive_int("batch_size", batch_size)
    overlap = None if overlap is None else check_int("overlap", overlap, minimum=0, maximum=tile - 1)
    ref, spec = resolve_model(model, device=device, precision=precision)
    grid = _grid(scene, spec, tile, overlap)

    mask_da = _mask(scene, "dsen2cr" if mask is None and keep_clear else mask)
    if spec.cloud_map and cloud_map is None:
        cloud_map = mask_da
    xin = model_input(scene, spec, cloud_map=cloud_map)
    out = _tiled(scene, spec, cloud_map, xin, ref, grid, blend=blend, batch_size=batch_size)
    if xin.chunks is not None:
        out = out.rechunk((spec.out_channels, *xin.data.chunks[1:]))  # the caller's chunks, not the tile tasks'
    else:
        import dask

        out = dask.compute(out, scheduler="threads")[0]
    pred = xr.DataArray(
        out, dims=("band", "y", "x"), coords={"band": list(spec.output_bands), "y": scene["y"], "x": scene["x"]}
    )
    pred = denormalize_output(pred, spec)
    if keep_clear:
        from .composite import composite

        observed = harmonize_s2(scene["s2"]).sel(band=list(spec.output_bands)).astype("float32")
        pred = composite(observed, pred, mask_da, feather=feather)
    name = getattr(model, "architecture", None) or _model_name(ref, model)
    return _result(scene, spec, pred, mask_da, ref, grid, model_name=name, blend=blend)


def _grid(scene: xr.Dataset, spec: Any, tile: int, overlap: int | None) -> TileGrid:
    """The scene's tile grid for a generator of S2 bands: ``overlap`` (default ``2·halo``) and margin by its spec."""
    if spec.role != "generator" or not set(spec.output_bands) <= set(S2_BAND_NAMES):
        raise ValueError(
            f"model: expected a generator of Sentinel-2 bands, found role {spec.role!r} with outputs "
            f"{list(spec.output_bands)}"
        )
    if tile % spec.size_multiple:
        raise ValueError(
            f"tile: expected a multiple of the model's size multiple {spec.size_multiple}, found {tile} "
            f"(e.g. {spec.size_multiple * max(1, round(tile / spec.size_multiple))})"
        )
    if tile <= 2 * spec.halo:
        # Smaller tiles cut every pixel's receptive field: the output would depend on where the tiles fall.
        need = spec.size_multiple * (2 * spec.halo // spec.size_multiple + 1)
        raise ValueError(
            f"tile: expected more than twice the model's halo ({spec.halo} px, its receptive field), found {tile} "
            f"(e.g. {need})"
        )
    overlap = min(2 * spec.halo, tile - spec.size_multiple) if overlap is None else overlap
    if overlap % spec.size_multiple and spec.size_multiple > 1:
        overlap -= overlap % spec.size_multiple  # the grid must stay on the model's size multiple
    margin = min(spec.halo, overlap // 2)
    return TileGrid(scene.sizes["y"], scene.sizes["x"], tile, overlap, margin)


def _result(
    scene: xr.Dataset,
    spec: Any,
    pred: xr.DataArray,
    mask: xr.DataArray | None,
    ref: ModelRef,
    grid: TileGrid,
    *,
    model_name: str,
    blend: str,
) -> xr.Dataset:
    """The scene with ``s2_cloudfree`` (attrs of ``s2`` plus provenance) and ``mask`` when there is one."""
    attrs = dict(scene["s2"].attrs) if "s2" in scene else {}
    attrs.update(
        units="DN",
        offset=0,
        model=model_name,
        weights_sha256=ref.sha256 or "in-memory module",
        tile=grid.tile,
        overlap=grid.overlap,
        margin=grid.margin,
        blend=blend,
    )
    # One Dataset has one band coordinate: the scene's band variables keep the bands the model predicts.
    base = scene.sel(band=list(spec.output_bands)) if "band" in scene.dims else scene
    result = base.assign(s2_cloudfree=pred.astype(np.float32).assign_attrs(attrs))
    if mask is not None:
        result["mask"] = mask
    return result


def _model_name(ref: ModelRef, model: Any) -> str:
    if ref.path is not None:
        from ..models import read_metadata

        return str(read_metadata(ref.path).get("architecture", Path(ref.path).name))
    return str(model)


def _mask(scene: xr.Dataset, mask: str | xr.DataArray | None) -> xr.DataArray | None:
    if mask is None:
        return None
    if isinstance(mask, str):
        from ..masking import detect

        return detect(scene["s2"], method=mask)["mask"]
    if isinstance(mask, xr.DataArray):
        if mask.dims != ("y", "x"):
            raise ValueError(f"mask: expected dims ('y', 'x'), found {mask.dims}")
        return mask.astype("float32")
    raise ValueError(f"mask: expected a method name or a (y, x) DataArray, found {type(mask).__name__}")
