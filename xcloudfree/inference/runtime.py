"""Where and how a network runs: the device, the precision, and the per-process model cache.

One set of rules for inference and training:

- ``device``: ``"auto"`` is ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cpu"``, ``"cuda"`` and
  ``"cuda:N"`` are taken as they are, but CUDA asked for where torch sees none is a ``ValueError`` naming the
  argument (never a silent fall-back to the CPU, never a torch error later).
- ``precision``: ``"auto"`` is bf16 autocast on CUDA where the GPU supports it, fp16 autocast on older GPUs and
  float32 (no autocast) on the CPU; ``"float32"``, ``"bfloat16"`` and ``"float16"`` force one on any device.
  Training's ``amp: true`` is ``"auto"`` and ``amp: false`` is ``"float32"``.

Inference tasks carry a small :class:`ModelRef` (a checkpoint path and its SHA-256, or an in-process module) instead
of the network; each process loads it once into a cache (:func:`get_runner`, counted by :func:`load_count`).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_choice, check_device
from ..parallel import active_client, ship_file, shipped_file, worker_threads

if TYPE_CHECKING:
    import torch

__all__ = [
    "PRECISIONS",
    "ModelRef",
    "amp_dtype",
    "autocast",
    "bundled_weights",
    "get_runner",
    "load_count",
    "resolve_device",
    "resolve_model",
    "to_device",
]

#: The precisions a network runs in (see the module docstring).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

_CACHE: dict[tuple, _Runner] = {}
_OBJECT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
_LOADS = 0
#: Checkpoints written for in-process modules that must reach other processes (one per module).
_SAVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --- device and precision -------------------------------------------------------------------------------------
def resolve_device(device: str = "auto", *, name: str = "device") -> str:
    """The device to run on: ``"auto"`` → ``"cuda"`` when torch sees a GPU, else ``"cpu"``.

    ``name`` is the argument the error messages name (``"config.device"`` for training).

    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("auto") in ("cpu", "cuda")
    True
    >>> resolve_device("tpu", name="config.device")
    Traceback (most recent call last):
    ...
    ValueError: config.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'tpu' (str)
    """
    import torch

    check_device(name, device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}: expected an available device, found {device!r} but CUDA is not available")
    return device


def amp_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; ``None`` means float32 without autocast.

    >>> amp_dtype("cpu") is None
    True
    >>> amp_dtype("cpu", "bfloat16")
    torch.bfloat16
    """
    import torch

    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        if torch.device(device).type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None if precision == "float32" else getattr(torch, precision)


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> Any:
    """A context running under ``dtype`` autocast on ``device``; a no-op context for ``dtype=None`` (float32)."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def to_device(module: Any, device: str | torch.device) -> Any:
    """``module`` moved to ``device`` (in place), channels-last on CUDA where convolutions run fastest that way."""
    import torch

    device = torch.device(device)
    module = module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


# --- the model cache ------------------------------------------------------------------------------------------
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
    """A network ready for batches: eval mode, on its device, one stream of batches at a time per process.

    On CUDA the host↔device copies overlap the compute (:meth:`map`): each batch goes up from a pinned buffer on an
    upload stream while the batch before it runs, and comes down into pinned memory on a download stream, while the
    caller's thread stacks the next batch and blends the last one.
    """

    #: Batches on the GPU at once (1: no overlap; the pinned buffers are double buffers at 2).
    in_flight = 2

    def __init__(self, module: Any, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.lock = threading.Lock()
        self.amp = amp_dtype(self.device, precision)
        self.module = to_device(module.eval(), self.device)
        self.spec = module.spec
        self.sha256 = getattr(module, "_xcf_sha256", None)
        self._slots: list[_Slot] = []
        self._streams: tuple[Any, Any] | None = None

    def map(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The outputs of ``batches``, in order: (N, C_in, tile, tile) → (N, C_out, tile, tile) float32.

        Outputs are on the network's scale and belong to the caller. Another thread's ``map`` waits for the GPU
        until this one is exhausted (on the CPU, for each batch: torch uses every core for one forward anyway).
        """
        torch = self.torch
        if self.device.type != "cuda":
            for x in batches:
                with self.lock, torch.inference_mode(), autocast(self.device, self.amp):
                    y = self.module(torch.from_numpy(x))
                yield y.float().numpy()
            return
        batches = iter(batches)
        first = next(batches, None)  # stacked before taking the GPU, so the GPU does not wait for it
        if first is None:
            return
        with self.lock, torch.inference_mode(), torch.cuda.device(self.device):
            # The next batches are stacked by a helper thread while this one feeds the GPU and hands outputs back:
            # on one thread the host's work per batch outlasted the GPU's (measured on an H200, dsen2cr F=256).
            yield from self._map_cuda(first, _prefetched(batches, self.in_flight))

    def _map_cuda(self, first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        torch = self.torch
        if self._streams is None:
            self._streams = (torch.cuda.Stream(self.device), torch.cuda.Stream(self.device))
        upload, download = self._streams
        compute = torch.cuda.current_stream(self.device)
        pending: deque[tuple[Any, Any]] = deque()
        x: np.ndarray | None = first
        i = 0
        while x is not None:
            slot = self._slot(i % self.in_flight, x.shape)
            n = x.shape[0]
            slot.uploaded.synchronize()  # its last upload has left the pinned buffer
            host = slot.host[:n]
            host.copy_(torch.from_numpy(x))
            with torch.cuda.stream(upload):
                dev = host.to(self.device, non_blocking=True)
                slot.uploaded.record(upload)
            compute.wait_event(slot.uploaded)
            dev.record_stream(compute)  # allocated on the upload stream, read on the compute stream
            with autocast(self.device, self.amp):
                y = self.module(dev.contiguous(memory_format=torch.channels_last))
            download.wait_stream(compute)
            with torch.cuda.stream(download):
                # Half-precision outputs come down as they are (half the bytes) and are widened on the host.
                out = slot.output(y.shape, y.dtype)
                out.copy_(y, non_blocking=True)
                done = torch.cuda.Event()
                done.record(download)
            y.record_stream(download)
            pending.append((done, out))
            del dev, y
            if len(pending) == self.in_flight:
                yield _collect(*pending.popleft())
            x = next(rest, None)
            i += 1
        while pending:
            yield _collect(*pending.popleft())

    def _slot(self, k: int, shape: tuple[int, ...]) -> _Slot:
        """Pinned buffer ``k`` for batches of ``shape`` (allocated once: pinning per batch costs more than the copy)."""
        while len(self._slots) <= k:
            self._slots.append(_Slot(self.torch))
        slot = self._slots[k]
        slot.reserve_input(shape)
        return slot


class _Slot:
    """Pinned host memory of one batch in flight: its input, its output, and the event of its upload."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.host = torch.empty(0, pin_memory=True)
        self.out = torch.empty(0, pin_memory=True)
        self.uploaded = torch.cuda.Event()

    def reserve_input(self, shape: tuple[int, ...]) -> None:
        if self.host.shape[1:] != shape[1:] or self.host.shape[0] < shape[0]:
            self.uploaded.synchronize()
            self.host = self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True)

    def output(self, shape: tuple[int, ...], dtype: Any) -> Any:
        if self.out.shape[1:] != shape[1:] or self.out.shape[0] < shape[0] or self.out.dtype != dtype:
            self.out = self.torch.empty(shape, dtype=dtype, pin_memory=True)
        return self.out[: shape[0]]


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, made up to ``depth`` ahead by a helper thread; its errors are raised here, in order."""
    queue: Queue = Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))
            return
        put(end)

    thread = threading.Thread(target=produce, name="xcloudfree-prefetch", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not end:
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Failure:
    exc: BaseException


def _collect(done: Any, out: Any) -> np.ndarray:
    """A downloaded batch as float32 NumPy of its own (its pinned buffer is reused two batches later)."""
    import torch

    done.synchronize()
    return out.to(torch.float32, copy=True).numpy()


def _set_worker_threads() -> None:
    """Inside a Dask worker, give torch as many threads as the worker has, not every core of the machine."""
    nthreads = worker_threads()
    if nthreads is not None:
        import torch

        torch.set_num_threads(max(1, nthreads))


def get_runner(ref: ModelRef) -> _Runner:
    """The process-wide runner for ``ref`` (a callable on batches of tiles), loading it on first use."""
    global _LOADS
    with _CACHE_LOCK:
        if ref.module is not None:
            key = (ref.device, ref.precision)
            per_module = _OBJECT_CACHE.setdefault(ref.module, {})
            if key not in per_module:
                # Never move the caller's module: running it elsewhere than where it lies takes a copy.
                param = next(ref.module.parameters(), None)
                here = param is None or str(param.device) == ref.device
                module = ref.module if here else copy.deepcopy(ref.module)
                per_module[key] = _Runner(module, ref.device, ref.precision)
                _LOADS += 1
            return per_module[key]
        key = (ref.path, ref.sha256, ref.device, ref.precision)
        if key not in _CACHE:
            from ..models import file_sha256, load

            _set_worker_threads()
            # A worker of a cluster loads the copy the client shipped (_checkpoint_ref): the client's path may not
            # exist on its machine.
            path = shipped_file(_shipped_name(ref.sha256)) if ref.sha256 else None
            path = path or Path(ref.path)
            if ref.sha256 is not None and file_sha256(path) != ref.sha256:
                raise ValueError(f"model: the checkpoint {ref.path!r} changed since the graph was built (SHA-256)")
            module = load(path, map_location="cpu")
            module._xcf_sha256 = ref.sha256
            _CACHE[key] = _Runner(module, ref.device, ref.precision)
            _LOADS += 1
        return _CACHE[key]


def resolve_model(model: Any, *, device: str = "auto", precision: str = "auto") -> tuple[ModelRef, Any]:
    """A :class:`ModelRef` for a model name, a checkpoint path or an ``nn.Module``, and its ModelSpec.

    A name gives the bundled weights of that model when the package ships them, else an untrained network (with a
    warning). Under a ``dask.distributed`` client an in-process module is written once to a temporary safetensors
    checkpoint. Under a client every checkpoint is also shipped to the workers' local directories
    (:func:`xcloudfree.parallel.ship_file`), so no worker needs to read the client's file system.

    >>> import xcloudfree as xcf
    >>> ref, spec = resolve_model(xcf.models.create("dsen2cr", features=4, blocks=1), device="cpu")
    >>> ref.device, ref.precision, ref.path, spec.out_channels
    ('cpu', 'auto', None, 13)
    """
    from torch import nn

    from .. import models

    device = resolve_device(device)
    check_choice("precision", precision, PRECISIONS)
    if isinstance(model, nn.Module):
        if not hasattr(model, "spec"):
            raise ValueError("model: expected a network of xcloudfree.models (with a .spec), found a plain nn.Module")
        if active_client() is None:
            return ModelRef(None, None, device, precision, module=model), model.spec
        return _checkpoint_ref(_saved_checkpoint(model), device, precision), model.spec
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if path.is_file():
            spec = models.verify(path)["spec"]  # the whole checkpoint, before any task runs
            return _checkpoint_ref(path, device, precision), models.ModelSpec.from_dict(spec)
        if str(model) in models.available():
            bundled = bundled_weights(str(model))
            if bundled is not None:
                return resolve_model(bundled, device=device, precision=precision)
            warnings.warn(f"model: no trained weights ship for {model!r}; using an untrained network", stacklevel=3)
            return resolve_model(models.create(str(model)), device=device, precision=precision)
        raise ValueError(
            f"model: expected a model name {models.available()}, a checkpoint file or an nn.Module, "
            f"found {str(model)!r} (no such file)"
        )
    raise ValueError(f"model: expected a name, a checkpoint path or an nn.Module, found {type(model).__name__}")


def _checkpoint_ref(path: Path, device: str, precision: str) -> ModelRef:
    from ..models import file_sha256

    sha256 = file_sha256(path)
    client = active_client()
    if client is not None:
        ship_file(client, path, _shipped_name(sha256))
    return ModelRef(str(Path(path).resolve()), sha256, device, precision)


def _shipped_name(sha256: str) -> str:
    """The name of a checkpoint in the workers' local directories: its content, not its path, identifies it."""
    return f"xcloudfree-model-{sha256}.safetensors"


def _saved_checkpoint(model: Any) -> Path:
    """A temporary checkpoint of an in-process module, written once per module for other processes to load."""
    from .. import models

    path = _SAVED.get(model)
    if path is None:
        folder = tempfile.mkdtemp(prefix="xcloudfree-model-")
        # The folder lives as long as the module (and is removed at exit at the latest).
        weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
        path = models.save(model, Path(folder) / "model.safetensors")
        _SAVED[model] = path
    return Path(path)


def bundled_weights(name: str) -> Path | None:
    """The safetensors weights of model ``name`` shipped in ``xcloudfree/weights``, or None when none ship."""
    folder = Path(__file__).resolve().parents[1] / "weights"
    found = sorted(folder.glob(f"{name}*.safetensors"))
    return found[0] if found else None
