"""Tiled inference over Dask: any model of the zoo, any scene size, the same pixels however the scene is chunked.

The graph has two stages per processing chunk. *Tiles*: every tile of the global grid is run once, by the chunk
holding the first pixel it keeps; the task cuts its tiles from a window of the lazy model input (reflected at the
scene border), runs the network in batches and returns the blend-weighted sum and the weight sum over the tiles'
extent. *Blend*: each output chunk adds the sums of the tile tasks that reach it and divides. Nothing is computed
twice and nothing depends on where chunk borders fall.

The network itself never travels inside the graph: tasks carry a small :class:`ModelRef` (a checkpoint path and
its SHA-256, or an in-process object) and each process loads it once into a cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_choice, check_device, check_int, check_positive_int
from ..parallel import active_client, worker_threads
from ..sensors import S2_BAND_NAMES, harmonize_s2
from .inputs import denormalize_output, model_input
from .tiling import TileGrid, accumulate_tiles, reflect_index

__all__ = ["predict", "ModelRef", "resolve_model", "load_count"]

_CACHE: dict[tuple, _Runner] = {}
_OBJECT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
_LOADS = 0
#: Checkpoints written for in-process modules that must reach other processes (one per module).
_SAVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_count() -> int:
    """How many models this process has loaded (or prepared) for inference: one per model, device and precision."""
    return _LOADS


@dataclass(frozen=True)
class ModelRef:
    """What a task needs to find the network in its process: a checkpoint (path + SHA-256) or a live module."""

    path: str | None
    sha256: str | None
    device: str
    precision: str
    module: Any = field(default=None, compare=False, repr=False)

    def __dask_tokenize__(self) -> tuple:
        # Identify the network without hashing (or pickling) its weights.
        return (self.path, self.sha256, self.device, self.precision, id(self.module))

    def __reduce__(self):
        if self.path is None:
            raise TypeError("ModelRef: an in-process module cannot travel to another process; save it first")
        return (ModelRef, (self.path, self.sha256, self.device, self.precision))


class _Runner:
    """A network ready for batches: eval mode, on its device, one forward at a time per process."""

    def __init__(self, module: Any, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.lock = threading.Lock()
        self.amp = _amp_dtype(self.device, precision)
        self.module = module.eval()
        self.spec = module.spec
        if self.device.type == "cuda":
            self.module = self.module.to(self.device, memory_format=torch.channels_last)
        self.sha256 = getattr(module, "_xcf_sha256", None)
        self._pinned = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with self.lock, torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device.type == "cuda":
                # One pinned staging buffer per runner: allocating pinned memory per batch costs more than the copy.
                if self._pinned is None or self._pinned.shape != t.shape:
                    self._pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                self._pinned.copy_(t)
                t = self._pinned.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                y = self.module(t)
            # Copy half-precision outputs as they are (half the bytes) and widen on the host.
            return y.cpu().float().numpy()


def _amp_dtype(device: Any, precision: str) -> Any:
    import torch

    if precision not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"precision: expected 'auto', 'float32', 'bfloat16' or 'float16', found {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None if precision == "float32" else getattr(torch, precision)


def _device(device: str) -> str:
    import torch

    check_device("device", device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, found {device!r} but CUDA is not available")
    return device


def _set_worker_threads() -> None:
    """Inside a Dask worker, give torch as many threads as the worker has, not every core of the machine."""
    nthreads = worker_threads()
    if nthreads is not None:
        import torch

        torch.set_num_threads(max(1, nthreads))


def _runner(ref: ModelRef) -> _Runner:
    """The process-wide runner for ``ref``, loading it on first use."""
    global _LOADS
    with _CACHE_LOCK:
        if ref.module is not None:
            key = (ref.device, ref.precision)
            per_module = _OBJECT_CACHE.setdefault(ref.module, {})
            if key not in per_module:
                module = ref.module
                if ref.device != "cpu":
                    import copy

                    module = copy.deepcopy(module)  # never move the caller's module
                per_module[key] = _Runner(module, ref.device, ref.precision)
                _LOADS += 1
            return per_module[key]
        key = (ref.path, ref.sha256, ref.device, ref.precision)
        if key not in _CACHE:
            from ..models import file_sha256, load

            _set_worker_threads()
            if ref.sha256 is not None and file_sha256(Path(ref.path)) != ref.sha256:
                raise ValueError(f"model: the checkpoint {ref.path!r} changed since the graph was built (SHA-256)")
            module = load(ref.path, map_location="cpu")
            module._xcf_sha256 = ref.sha256
            _CACHE[key] = _Runner(module, ref.device, ref.precision)
            _LOADS += 1
        return _CACHE[key]


def resolve_model(model: Any, *, device: str = "auto", precision: str = "auto") -> tuple[ModelRef, Any]:
    """A :class:`ModelRef` for a model name, a checkpoint path or an ``nn.Module``, and its ModelSpec.

    A name gives the bundled weights of that model when the package ships them, else an untrained network (with a
    warning). Under a ``dask.distributed`` client an in-process module is written once to a temporary safetensors
    checkpoint so that workers load it by path (for remote workers pass a path they can read).
    """
    from torch import nn

    from .. import models
    from ..models import file_sha256

    device = _device(device)
    check_choice("precision", precision, ("auto", "float32", "bfloat16", "float16"))
    if isinstance(model, nn.Module):
        if not hasattr(model, "spec"):
            raise ValueError("model: expected a network of xcloudfree.models (with a .spec), found a plain nn.Module")
        if active_client() is None:
            return ModelRef(None, None, device, precision, module=model), model.spec
        path = _SAVED.get(model)
        if path is None:
            folder = tempfile.mkdtemp(prefix="xcloudfree-model-")
            # The folder lives as long as the module (and is removed at exit at the latest).
            weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
            path = models.save(model, Path(folder) / "model.safetensors")
            _SAVED[model] = path
        return ModelRef(str(path), file_sha256(Path(path)), device, precision), model.spec
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if path.is_file():
            spec = models.verify(path)["spec"]  # the whole checkpoint, before any task runs
            return ModelRef(str(path.resolve()), file_sha256(path), device, precision), models.ModelSpec.from_dict(spec)
        if str(model) in models.available():
            bundled = _bundled_weights(str(model))
            if bundled is not None:
                return resolve_model(bundled, device=device, precision=precision)
            warnings.warn(f"model: no trained weights ship for {model!r}; using an untrained network", stacklevel=3)
            return resolve_model(models.create(str(model)), device=device, precision=precision)
        raise ValueError(
            f"model: expected a model name {models.available()}, a checkpoint file or an nn.Module, "
            f"found {str(model)!r} (no such file)"
        )
    raise ValueError(f"model: expected a name, a checkpoint path or an nn.Module, found {type(model).__name__}")


def _bundled_weights(name: str) -> Path | None:
    folder = Path(__file__).resolve().parents[1] / "weights"
    found = sorted(folder.glob(f"{name}*.safetensors"))
    return found[0] if found else None


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
    runner = _runner(ref)
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


def _tiled(xin: xr.DataArray, ref: ModelRef, grid: TileGrid, *, blend: str, batch_size: int, out_channels: int) -> Any:
    """Lazy Dask array (out_channels, y, x) of blended network outputs, on the network's scale."""
    import dask
    import dask.array as da

    data = xin.data.rechunk({0: -1}) if xin.chunks is not None else da.from_array(xin.values, chunks=-1)
    H, W = grid.height, grid.width
    target = 2048 if ref.device.startswith("cuda") else 512
    chunk_y = _processing_chunks(H, data.chunks[1] if xin.chunks is not None else None, grid.stride, target)
    chunk_x = _processing_chunks(W, data.chunks[2] if xin.chunks is not None else None, grid.stride, target)
    edges_y, edges_x = np.cumsum((0, *chunk_y)), np.cumsum((0, *chunk_x))
    weights = grid.window(blend)
    starts_y, starts_x = grid.starts(0), grid.starts(1)
    kept_y, kept_x = starts_y + grid.margin, starts_x + grid.margin

    parts: dict[tuple[int, int], tuple[Any, tuple[int, int, int, int]]] = {}
    blends: dict[int, list[Any]] = {}

    def tile_row(i: int) -> None:
        ty = starts_y[(kept_y >= edges_y[i]) & (kept_y < edges_y[i + 1])]
        # Row i starts once an earlier row is blended: without this the scheduler may run tiles far ahead of the
        # blends and hold their accumulators, so memory would grow with the scene instead of with its width.
        done = [r for r in blends if r <= i - 2]
        after = dask.delayed(_barrier, pure=True)(*blends[max(done)]) if done else None
        for j in range(len(chunk_x)):
            tx = starts_x[(kept_x >= edges_x[j]) & (kept_x < edges_x[j + 1])]
            if len(ty) == 0 or len(tx) == 0:
                continue
            ys, ye, xs, xe = ty.min(), ty.max() + grid.tile, tx.min(), tx.max() + grid.tile
            rows, cols = reflect_index(np.arange(ys, ye), H), reflect_index(np.arange(xs, xe), W)
            # The window travels as its chunk pieces with their own keys: an optimised (fused) copy per window
            # would read and normalise the same input chunks once per window, and hold each copy.
            window = data[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            window = window.to_delayed(optimize_graph=False).tolist()
            tiles = [(int(a), int(b)) for a in ty for b in tx]
            task = dask.delayed(_tile_task, pure=True)(
                window,
                ref,
                rows - rows.min(),
                cols - cols.min(),
                (int(ys), int(xs)),
                tiles,
                weights,
                batch_size,
                out_channels,
                after,
            )
            parts[i, j] = (task, (int(ys), int(ye), int(xs), int(xe)))

    def blend_row(i: int) -> None:
        y0, y1 = int(edges_y[i]), int(edges_y[i + 1])
        row = []
        for j in range(len(chunk_x)):
            x0, x1 = int(edges_x[j]), int(edges_x[j + 1])
            reaching = [t for t, (ys, ye, xs, xe) in parts.values() if ys < y1 and ye > y0 and xs < x1 and xe > x0]
            row.append(dask.delayed(_blend_task, pure=True)((y0, y1, x0, x1), out_channels, *reaching))
        blends[i] = row

    # Blend row r can be built once every tile row reaching it exists: the tile rows whose first tile starts
    # at or above the row's end (a prefix of the rows, since tile starts grow with the row).
    n = len(chunk_y)
    first_start = [
        int(starts_y[(kept_y >= edges_y[k]) & (kept_y < edges_y[k + 1])].min(initial=edges_y[k + 1])) for k in range(n)
    ]
    last_needed = [max(k for k in range(n) if first_start[k] < edges_y[r + 1]) for r in range(n)]
    for i in range(n):
        tile_row(i)
        for r in range(n):
            if r not in blends and last_needed[r] <= i:
                blend_row(r)
    blocks = [
        [
            da.from_delayed(
                blends[i][j],
                shape=(out_channels, int(chunk_y[i]), int(chunk_x[j])),
                dtype=np.float32,
                meta=np.empty((0, 0, 0), np.float32),
            )
            for j in range(len(chunk_x))
        ]
        for i in range(n)
    ]
    return da.block(blocks)


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
    precision : ``"auto"`` (bf16 autocast on CUDA where supported, float32 on CPU), ``"float32"``, ``"bfloat16"``,
        ``"float16"``
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
    """
    if not isinstance(scene, xr.Dataset):
        raise ValueError(f"scene: expected an xarray.Dataset scene, found {type(scene).__name__}")
    tile, batch_size = check_positive_int("tile", tile), check_positive_int("batch_size", batch_size)
    overlap = None if overlap is None else check_int("overlap", overlap, minimum=0, maximum=tile - 1)
    ref, spec = resolve_model(model, device=device, precision=precision)
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
    grid = TileGrid(scene.sizes["y"], scene.sizes["x"], tile, overlap, margin)

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
    attrs = dict(scene["s2"].attrs) if "s2" in scene else {}
    attrs.update(
        units="DN",
        offset=0,
        model=getattr(model, "architecture", None) or _model_name(ref, model),
        weights_sha256=ref.sha256 or "in-memory module",
        tile=tile,
        overlap=overlap,
        margin=margin,
        blend=blend,
    )
    # One Dataset has one band coordinate: the scene's band variables keep the bands the model predicts.
    base = scene.sel(band=list(spec.output_bands)) if "band" in scene.dims else scene
    result = base.assign(s2_cloudfree=pred.astype(np.float32).assign_attrs(attrs))
    if mask_da is not None:
        result["mask"] = mask_da
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
