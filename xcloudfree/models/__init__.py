"""The model zoo: every network of the five methods by name, with its :class:`ModelSpec`, and safe checkpoints.

>>> import xcloudfree as xcf
>>> model = xcf.models.create("dsen2cr")               # the network of the paper, spec in model.spec
>>> xcf.models.save(model, "m.safetensors", metadata={"trained_on": "SEN12MS-CR train"})
>>> model = xcf.models.load("m.safetensors")

Generators: ``dsen2cr``, ``pix2pix`` (U-Net), ``carf``, ``acgan``, ``cyclecr`` (G_S1→S2) and ``cyclecr_s2_to_s1``.
Discriminators: ``patchgan`` (pix2pix5), ``acgan_discriminator``, ``cyclecr_discriminator``.

Checkpoints are single safetensors files. Their header metadata key ``"xcloudfree"`` holds JSON: architecture,
hyperparameters, spec, package version and the caller's provenance. Loading rebuilds the network from that JSON,
checks every tensor name and shape, and never unpickles anything.
"""

from __future__ import annotations

import inspect
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import acgan, cyclecr
from .acgan import ACGANGenerator
from .carf import CARF
from .cyclecr import CycleCRGenerator, SARGenerator
from .dsen2cr import DSen2CR
from .patchgan import PatchGAN
from .spec import CLOUD_MAP, DEM, SAR_MEAN, ModelSpec, halo_from_radius
from .unet import UNetGenerator

__all__ = [
    "CLOUD_MAP",
    "DEM",
    "SAR_MEAN",
    "ModelSpec",
    "available",
    "count_parameters",
    "create",
    "halo_from_radius",
    "load",
    "read_metadata",
    "save",
    "summary",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "dsen2cr": DSen2CR,
    "pix2pix": UNetGenerator,
    "patchgan": PatchGAN,
    "carf": CARF,
    "acgan": ACGANGenerator,
    "acgan_discriminator": acgan.discriminator,
    "cyclecr": CycleCRGenerator,
    "cyclecr_s2_to_s1": SARGenerator,
    "cyclecr_discriminator": cyclecr.discriminator,
}
#: safetensors header metadata key holding our JSON.
_KEY = "xcloudfree"
#: A safetensors header larger than this is not one of ours (the format itself caps it at 100 MB).
_MAX_HEADER = 100_000_000
#: First bytes of torch.save zip archives and of raw pickles (protocols 2-5); never valid header lengths.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def available() -> list[str]:
    """Names accepted by :func:`create`."""
    return list(_REGISTRY)


def create(name: str, **hparams: Any) -> nn.Module:
    """Build the network ``name`` with its paper's hyperparameters, overridden by ``hparams``.

    The module carries ``.spec`` (:class:`ModelSpec`), ``.architecture`` (``name``) and ``.hparams`` (every
    hyperparameter, defaults included), which :func:`save` writes down. Weights are freshly initialised.
    """
    if name not in _REGISTRY:
        raise ValueError(f"name: expected one of {available()}, found {name!r}")
    builder = _REGISTRY[name]
    signature = inspect.signature(builder)
    try:
        bound = signature.bind(**hparams)
    except TypeError as err:
        raise ValueError(
            f"hparams: {name} takes {list(signature.parameters)}, found {sorted(hparams)} ({err})"
        ) from None
    bound.apply_defaults()
    model = builder(**bound.arguments)
    model.architecture = name
    model.hparams = dict(bound.arguments)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics not included)."""
    return sum(p.numel() for p in model.parameters())


def summary() -> list[dict[str, Any]]:
    """One row per available network at its defaults: ``name``, ``parameters`` and ``spec`` (a dict).

    Built on the meta device: no memory, no weights.
    """
    rows = []
    for name in available():
        with torch.device("meta"):
            model = create(name)
        rows.append({"name": name, "parameters": count_parameters(model), "spec": model.spec.to_dict()})
    return rows


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as one safetensors file, atomically (a temporary name in the same folder, then a rename).

    Parameters
    ----------
    model : a network from :func:`create` (or :func:`load`).
    path : destination, conventionally ``*.safetensors``.
    metadata : JSON-serialisable provenance (training data, config, metrics ...), returned by :func:`read_metadata`
        and as ``model.metadata`` by :func:`load`.

    Returns
    -------
    The path written.
    """
    from safetensors.torch import save_file

    from .. import __version__

    architecture = getattr(model, "architecture", None)
    if architecture not in _REGISTRY or not isinstance(getattr(model, "hparams", None), dict):
        raise ValueError(
            f"model: expected a network built by xcloudfree.models.create (with .architecture and .hparams), "
            f"found a {type(model).__name__} without them"
        )
    header = {
        "architecture": architecture,
        "hparams": model.hparams,
        "spec": model.spec.to_dict(),
        "xcloudfree_version": __version__,
        "metadata": metadata or {},
    }
    try:
        text = json.dumps(header)
    except TypeError as err:
        raise ValueError(f"metadata: expected JSON-serialisable values, found {err}") from None
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, tmp, metadata={"format": "pt", _KEY: text})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an xcloudfree checkpoint (architecture, hparams, spec, xcloudfree_version, metadata)."""
    return _read_header(Path(path))[0]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network from a checkpoint written by :func:`save`, in eval mode, on ``map_location``.

    Raises ``ValueError`` for anything but an intact safetensors checkpoint of ours (pickles included: they are
    never opened), for an unknown architecture, and for weights whose names or shapes do not fit it.
    The spec and provenance saved with the weights become ``model.spec`` and ``model.metadata``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    info, shapes = _read_header(path)
    architecture, hparams = info.get("architecture"), info.get("hparams")
    if architecture not in _REGISTRY or not isinstance(hparams, dict):
        raise ValueError(
            f"{path}: architecture expected one of {available()} with a dict of hparams, "
            f"found {architecture!r} with {hparams!r}"
        )
    try:
        model = create(architecture, **hparams)
    except ValueError as err:
        raise ValueError(f"{path}: the saved hyperparameters do not build {architecture!r}: {err}") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    resized = sorted(n for n in set(expected) & set(shapes) if expected[n] != shapes[n])
    if missing or unexpected or resized:
        raise ValueError(
            f"{path}: the weights do not fit architecture {architecture!r} with hparams {hparams}: "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}, "
            f"wrong shape {_few([f'{n} {shapes[n]} != {expected[n]}' for n in resized])}"
        )
    saved = info.get("spec")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: spec expected a dict in the xcloudfree metadata, found {saved!r}")
    spec = ModelSpec.from_dict(saved)
    if (spec.in_channels, spec.out_channels) != (model.spec.in_channels, model.spec.out_channels):
        raise ValueError(
            f"{path}: spec expected {model.spec.in_channels} → {model.spec.out_channels} channels for "
            f"{architecture!r}, found {spec.in_channels} → {spec.out_channels}"
        )
    try:
        tensors = load_file(path)
    except Exception as err:  # the Rust reader's own error type
        raise ValueError(f"{path}: cannot read the safetensors data ({err})") from None
    model.load_state_dict(tensors)
    model.spec = spec
    model.metadata = info.get("metadata", {})
    return model.to(map_location).eval()


def _few(names: list[str], n: int = 5) -> str:
    return "[]" if not names else ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """Parse and check a safetensors header by hand: our JSON and the tensor shapes.

    Pickles (``torch.save`` zip archives and raw pickles) are recognised by their magic bytes and refused.
    """
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        text = f.read(n) if 0 < n <= min(size - 8, _MAX_HEADER) else b""
    if not text.startswith(b"{"):
        if head.startswith(_PICKLE_MAGIC):
            raise ValueError(
                f"{path}: expected a safetensors checkpoint, found a pickle (torch.save) file; xcloudfree never "
                "unpickles (it can run arbitrary code). Convert it where you trust it: load the weights into "
                "xcloudfree.models.create(...) and xcloudfree.models.save it"
            )
        raise ValueError(
            f"{path}: expected a safetensors file, found {size} bytes that do not start with a valid header "
            "(truncated, empty or another format)"
        )
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path}: expected a safetensors file, its header is not JSON") from None
    meta = header.pop("__metadata__", None) or {}
    try:
        shapes = {name: tuple(t["shape"]) for name, t in header.items()}
        end = max((t["data_offsets"][1] for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError):
        raise ValueError(f"{path}: expected a safetensors file, its header lacks tensor shapes and offsets") from None
    if 8 + n + end != size:
        raise ValueError(f"{path}: truncated or padded safetensors file: expected {8 + n + end} bytes, found {size}")
    if _KEY not in meta:
        raise ValueError(f"{path}: a safetensors file without xcloudfree metadata (architecture, hparams, spec)")
    try:
        info = json.loads(meta[_KEY])
    except json.JSONDecodeError:
        raise ValueError(f"{path}: the xcloudfree metadata is not valid JSON") from None
    return info, shapes
