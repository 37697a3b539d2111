"""Tiled inference over Dask: any model of the zoo, any scene size, the same pixels however the scene is chunked.

The graph has two stages per processing chunk. *Tiles*: every tile of the global grid is run once, by the chunk
holding the first pixel it keeps; the task cuts its tiles from a window of the lazy model input (reflected at the
scene border), runs the network in batches and returns the blend-weighted sum and the weight sum over the tiles'
extent. *Blend*: each output chunk adds the sums of the tile tasks that reach it and divides. Nothing is computed
twice and nothing depends on where chunk borders fall.

The network itself never travels inside the graph: tasks carry a small :class:`~xcloudfree.inference.runtime.ModelRef`
and each process loads it once (:mod:`xcloudfree.inference.runtime`, which also settles device and precision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_int, check_positive_int
from ..sensors import S2_BAND_NAMES, harmonize_s2
from .inputs import denormalize_output, model_input
from .runtime import ModelRef, get_runner, resolve_model
from .tiling import TileGrid, accumulate_tiles, reflect_index

__all__ = ["predict"]


def _tile_task(
    window: np.ndarray,
    ref: ModelRef,
    rows: np.ndarray,
    cols: np.ndarray,
    origin: tuple[int, int],
    tiles: list[tuple[int, int]],
    weights: np.ndarray,
    batch_size: int,
    out_channels: int,
    after: None = None,
) -> tuple:
    runner = get_runner(ref)
    window = np.block(window) if isinstance(window, list) else window
    # One private copy of the window (reflected at the scene border where needed), cleaned in place: NaN (nodata)
    # must not spread through the convolutions, so it becomes zero on the network's scale and is masked again later.
    x = np.array(window[:, _as_slice(rows)][:, :, _as_slice(cols)], dtype=np.float32, copy=True)
    invalid = ~np.isfinite(x).all(axis=0)
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    acc, wsum = accumulate_tiles(
        x,
        origin,
        tiles,
        runner,
        tile=weights.shape[0],
        weights=weights,
        batch_size=batch_size,
        out_channels=out_channels,
    )
    # The blend marks nodata pixels NaN again: here, so that the input is read by the tile tasks alone.
    return acc, wsum, invalid, origin


def _barrier(*_: Any) -> None:
    """Depends on its arguments and returns nothing: orders tasks without handing data on."""
    return None


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A contiguous ascending index as a slice (a view, no copy); reflected indices stay an array."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _blend_task(bounds: tuple[int, int, int, int], out_channels: int, *parts: tuple) -> np.ndarray:
    """Output chunk = Σ weighted tile outputs / Σ weights over the tile tasks that reach it; nodata stays NaN."""
    y0, y1, x0, x1 = bounds
    acc = np.zeros((out_channels, y1 - y0, x1 - x0), np.float64)
    wsum = np.zeros((y1 - y0, x1 - x0), np.float64)
    invalid = np.zeros((y1 - y0, x1 - x0), bool)
    for part_acc, part_w, part_invalid, (oy, ox) in parts:
        ya, yb = max(y0, oy), min(y1, oy + part_w.shape[0])
        xa, xb = max(x0, ox), min(x1, ox + part_w.shape[1])
        if ya >= yb or xa >= xb:
            continue
        inside = (slice(ya - oy, yb - oy), slice(xa - ox, xb - ox))
        here = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        acc[(slice(None), *here)] += part_acc[(slice(None), *inside)]
        wsum[here] += part_w[inside]
        invalid[here] |= part_invalid[inside]
    out = (acc / wsum).astype(np.float32)
    out[:, invalid] = np.nan
    return out


def _processing_chunks(size: int, chunks: tuple[int, ...] | None, stride: int, target: int) -> tuple[int, ...]:
    """Chunk sizes along an axis: whole strides, near ``target`` px and at most the input's chunks.

    Blending holds about two rows of tile tasks' accumulators, so memory grows with scene width × chunk height:
    small chunks on CPU, large ones on a GPU (whose batches want many tiles per task).
    """
    target = min(chunks[0], target) if chunks else target
    step = stride * max(1, round(target / stride))
    sizes = [step] * (size // step)
    if size % step:
        sizes.append(size % step)
    return tuple(sizes)


class _TileGraph:
    """The two-stage graph over one scene: tile tasks per processing chunk, then blend tasks per output chunk.

    Parameters
    ----------
    data : Dask array (C_in, y, x), the model input with one chunk along the channels
    ref : the network
    grid : the global tile grid
    chunks : processing chunk sizes (px) along y and x, whole strides
    """

    def __init__(
        self,
        data: Any,
        ref: ModelRef,
        grid: TileGrid,
        chunks: tuple[tuple[int, ...], tuple[int, ...]],
        *,
        blend: str,
        batch_size: int,
        out_channels: int,
    ) -> None:
        self.data, self.ref, self.grid = data, ref, grid
        self.chunk_y, self.chunk_x = chunks
        self.edges = (np.cumsum((0, *self.chunk_y)), np.cumsum((0, *self.chunk_x)))
        self.weights = grid.window(blend)
        self.batch_size, self.out_channels = batch_size, out_channels
        #: (row, column) of a processing chunk → (tile task, its extent (y0, y1, x0, x1) in scene px).
        self.parts: dict[tuple[int, int], tuple[Any, tuple[int, int, int, int]]] = {}
        #: row of output chunks → its blend tasks.
        self.blends: dict[int, list[Any]] = {}

    def owned(self, axis: int, k: int) -> np.ndarray:
        """Starts of the tiles along ``axis`` whose first kept pixel lies in processing chunk ``k``."""
        starts = self.grid.starts(axis)
        kept = starts + self.grid.margin
        edges = self.edges[axis]
        return starts[(kept >= edges[k]) & (kept < edges[k + 1])]

    def tile_row(self, i: int) -> None:
        """The tile tasks of processing row ``i``, each after an earlier blend row."""
        import dask

        ty = self.owned(0, i)
        # Row i starts once an earlier row is blended: without this the scheduler may run tiles far ahead of the
        # blends and hold their accumulators, so memory would grow with the scene instead of with its width.
        done = [r for r in self.blends if r <= i - 2]
        after = dask.delayed(_barrier, pure=True)(*self.blends[max(done)]) if done else None
        for j in range(len(self.chunk_x)):
            tx = self.owned(1, j)
            if len(ty) and len(tx):
                self.parts[i, j] = self.tile_task(ty, tx, after)

    def tile_task(self, ty: np.ndarray, tx: np.ndarray, after: Any) -> tuple[Any, tuple[int, int, int, int]]:
        """One task running the tiles starting at rows ``ty`` × columns ``tx``, and the extent it covers."""
        import dask

        grid = self.grid
        ys, ye, xs, xe = ty.min(), ty.max() + grid.tile, tx.min(), tx.max() + grid.tile
        rows, cols = reflect_index(np.arange(ys, ye), grid.height), reflect_index(np.arange(xs, xe), grid.width)
        # The window travels as its chunk pieces with their own keys: an optimised (fused) copy per window
        # would read and normalise the same input chunks once per window, and hold each copy.
        window = self.data[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        window = window.to_delayed(optimize_graph=False).tolist()
        tiles = [(int(a), int(b)) for a in ty for b in tx]
        task = dask.delayed(_tile_task, pure=True)(
            window,
            self.ref,
            rows - rows.min(),
            cols - cols.min(),
            (int(ys), int(xs)),
            tiles,
            self.weights,
            self.batch_size,
            self.out_channels,
            after,
        )
        return task, (int(ys), int(ye), int(xs), int(xe))

    def blend_row(self, i: int) -> None:
        """The blend tasks of output row ``i``: each takes the tile tasks whose extent reaches its chunk."""
        import dask

        edges_y, edges_x = self.edges
        y0, y1 = int(edges_y[i]), int(edges_y[i + 1])
        row = []
        for j in range(len(self.chunk_x)):
            x0, x1 = int(edges_x[j]), int(edges_x[j + 1])
            reaching = [t for t, (ys, ye, xs, xe) in self.parts.values() if ys < y1 and ye > y0 and xs < x1 and xe > x0]
            row.append(dask.delayed(_blend_task, pure=True)((y0, y1, x0, x1), self.out_channels, *reaching))
        self.blends[i] = row

    def build(self) -> None:
        """Tile rows in order, each blend row as soon as every tile row reaching it exists."""
        # Blend row r can be built once every tile row reaching it exists: the tile rows whose first tile starts
        # at or above the row's end (a prefix of the rows, since tile starts grow with the row).
        edges_y, n = self.edges[0], len(self.chunk_y)
        first_start = [int(self.owned(0, k).min(initial=edges_y[k + 1])) for k in range(n)]
        last_needed = [max(k for k in range(n) if first_start[k] < edges_y[r + 1]) for r in range(n)]
        for i in range(n):
            self.tile_row(i)
            for r in range(n):
                if r not in self.blends and last_needed[r] <= i:
                    self.blend_row(r)

    def array(self) -> Any:
        """The blended output as one Dask array (out_channels, y, x) in processing chunks."""
        import dask.array as da

        self.build()
        return da.block(
            [
                [
                    da.from_delayed(
                        blend,
                        shape=(self.out_channels, int(self.chunk_y[i]), int(self.chunk_x[j])),
                        dtype=np.float32,
                        meta=np.empty((0, 0, 0), np.float32),
                    )
                    for j, blend in enumerate(self.blends[i])
                ]
                for i in range(len(self.chunk_y))
            ]
        )


def _tiled(xin: xr.DataArray, ref: ModelRef, grid: TileGrid, *, blend: str, batch_size: int, out_channels: int) -> Any:
    """Lazy Dask array (out_channels, y, x) of blended network outputs, on the network's scale."""
    import dask.array as da

    lazy = xin.chunks is not None
    data = xin.data.rechunk({0: -1}) if lazy else da.from_array(xin.values, chunks=-1)
    target = 2048 if ref.device.startswith("cuda") else 512
    chunks = tuple(
        _processing_chunks(size, data.chunks[axis] if lazy else None, grid.stride, target)
        for axis, size in ((1, grid.height), (2, grid.width))
    )
    return _TileGraph(data, ref, grid, chunks, blend=blend, batch_size=batch_size, out_channels=out_channels).array()


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
    out = _tiled(xin, ref, grid, blend=blend, batch_size=batch_size, out_channels=spec.out_channels)
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
