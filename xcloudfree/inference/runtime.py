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
from dataclasses import dataclass, field
from pathlib import Path
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
    """A network ready for batches: eval mode, on its device, one forward at a time per process."""

    def __init__(self, module: Any, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.lock = threading.Lock()
        self.amp = amp_dtype(self.device, precision)
        self.module = to_device(module.eval(), self.device)
        self.spec = module.spec
        self.sha256 = getattr(module, "_xcf_sha256", None)
        self._pinned = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, tile, tile) float32 → (N, C_out, tile, tile) float32 on the network's scale."""
        torch = self.torch
        with self.lock, torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device.type == "cuda":
                # One pinned staging buffer per runner: allocating pinned memory per batch costs more than the copy.
                if self._pinned is None or self._pinned.shape != t.shape:
                    self._pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                self._pinned.copy_(t)
                t = self._pinned.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp):
                y = self.module(t)
            # Copy half-precision outputs as they are (half the bytes) and widen on the host.
            return y.cpu().float().numpy()


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
