"""The model zoo: every network of the five methods by name, with its :class:`ModelSpec`, and safe checkpoints.

>>> import tempfile
>>> import xcloudfree as xcf
>>> model = xcf.models.create("dsen2cr", features=16, blocks=2)  # create("dsen2cr"): the paper's sizes
>>> model.spec.input_order[-2:], model.spec.output_bands[:3]  # what it reads and returns
(('VV', 'VH'), ('B01', 'B02', 'B03'))
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = xcf.models.save(model, f"{tmp}/m.safetensors", metadata={"trained_on": "SEN12MS-CR train"})
...     model = xcf.models.load(path)
>>> model.metadata
{'trained_on': 'SEN12MS-CR train'}

Generators: ``dsen2cr``, ``pix2pix`` (U-Net), ``carf``, ``acgan``, ``cyclecr`` (G_S1→S2) and ``cyclecr_s2_to_s1``.
Discriminators: ``patchgan`` (pix2pix5), ``acgan_discriminator``, ``cyclecr_discriminator``.

Published weights of the reference code (Keras HDF5, PyTorch ``.pth``) become our networks through
:func:`import_weights` (never unpickled).

Checkpoints are single safetensors files. Their header metadata key ``"xcloudfree"`` holds JSON: architecture,
hyperparameters, spec, package version and the caller's provenance. Loading rebuilds the network from that JSON,
checks every tensor name and shape, and never unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import check_int, check_number, describe
from ..io.jsonfile import to_json
from . import acgan, cyclecr
from .acgan import ACGANGenerator
from .carf import CARF
from .cyclecr import CycleCRGenerator, SARGenerator
from .dsen2cr import DSen2CR
from .importers import import_weights
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
    "import_weights",
    "load",
    "read_metadata",
    "save",
    "summary",
    "verify",
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
    """Names accepted by :func:`create`.

    >>> import xcloudfree as xcf
    >>> xcf.models.available()
    ['dsen2cr', 'pix2pix', 'patchgan', 'carf', 'acgan', 'acgan_discriminator', 'cyclecr', 'cyclecr_s2_to_s1',
     'cyclecr_discriminator']
    """
    return list(_REGISTRY)


def create(name: str, **hparams: Any) -> nn.Module:
    """Build the network ``name`` with its paper's hyperparameters, overridden by ``hparams``.

    The module carries ``.spec`` (:class:`ModelSpec`), ``.architecture`` (``name``) and ``.hparams`` (every
    hyperparameter, defaults included), which :func:`save` writes down. Weights are freshly initialised.
    Hyperparameters are checked before anything is allocated: each has the type of its default (integers in
    ``[1, MAX_HPARAM]``, finite non-negative floats), and the network, sized on the meta device first, must
    hold at most :data:`MAX_PARAMETERS` parameters.

    >>> import xcloudfree as xcf
    >>> model = xcf.models.create("dsen2cr", features=16, blocks=2)  # a small DSen2-CR
    >>> model.hparams, model.spec.halo, model.spec.input_order[-3:]
    ({'features': 16, 'blocks': 2, 'sar': True}, 8, ('B12', 'VV', 'VH'))
    >>> xcf.models.create("dsen2cr", blocks=2.5)
    Traceback (most recent call last):
    ValueError: hparams.blocks: expected an integer in [1, 4096], found 2.5 (float)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name: expected one of {available()}, found {name!r}")
    arguments = _check_hparams(name, hparams)
    if hparams and torch.get_default_device().type != "meta":  # the paper's sizes are known to fit
        with torch.device("meta"):
            probe = _build(name, arguments)
        n = count_parameters(probe)
        if n > MAX_PARAMETERS:
            raise ValueError(
                f"hparams: expected a network of at most {MAX_PARAMETERS:,} parameters, found {n:,} for {name} "
                f"with {hparams}"
            )
    return _build(name, arguments)


#: Largest integer hyperparameter accepted (widths, depths, channels): far above every paper's values.
MAX_HPARAM = 4096
#: Largest network :func:`create` builds (4 GB of float32 weights).
MAX_PARAMETERS = 1_000_000_000


def _check_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``name``, defaults filled in, each checked against the type of its default."""
    signature = inspect.signature(_REGISTRY[name])
    try:
        bound = signature.bind(**hparams)
    except TypeError as err:
        raise ValueError(
            f"hparams: {name} takes {list(signature.parameters)}, found {sorted(hparams)} ({err})"
        ) from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    for key, value in hparams.items():
        default = signature.parameters[key].default
        where = f"hparams.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true or false, found {describe(value)}")
        elif isinstance(default, int):
            arguments[key] = check_int(where, value, minimum=1, maximum=MAX_HPARAM)
        elif isinstance(default, float):
            arguments[key] = check_number(where, value, minimum=0.0)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{where}: expected a string like {default!r}, found {describe(value)}")
    return arguments


def _build(name: str, arguments: dict[str, Any]) -> nn.Module:
    try:
        model = _REGISTRY[name](**arguments)
    except (TypeError, RuntimeError, ZeroDivisionError, ValueError) as err:
        if isinstance(err, _TooMany):
            raise
        raise ValueError(f"hparams: {name} cannot be built with {arguments}: {err}") from None
    model.architecture = name
    model.hparams = dict(arguments)
    return model


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (weights provenance and cache keys), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics not included).

    >>> import xcloudfree as xcf
    >>> xcf.models.count_parameters(xcf.models.create("dsen2cr", features=16, blocks=2))
    13341
    """
    return sum(p.numel() for p in model.parameters())


def summary() -> list[dict[str, Any]]:
    """One row per available network at its defaults: ``name``, ``parameters`` and ``spec`` (a dict).

    Built on the meta device: no memory, no weights.

    >>> import xcloudfree as xcf
    >>> for row in xcf.models.summary()[:3]:
    ...     print(row["name"], row["parameters"])
    dsen2cr 18947341
    pix2pix 54416003
    patchgan 2770753
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

    Examples
    --------
    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> model = xcf.models.create("dsen2cr", features=16, blocks=2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.models.save(model, f"{tmp}/small.safetensors", metadata={"epochs": 3})
    ...     header = xcf.models.read_metadata(path)
    >>> path.name, header["architecture"], header["metadata"]
    ('small.safetensors', 'dsen2cr', {'epochs': 3})
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
        text = to_json(header)
    except TypeError as err:
        raise ValueError(f"metadata: expected JSON-serialisable values, found {err}") from None
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    from ..io.geotiff import atomic_path

    path, tmp = atomic_path(path)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", _KEY: text})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an xcloudfree checkpoint (architecture, hparams, spec, xcloudfree_version, metadata).

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.models.save(xcf.models.create("dsen2cr", features=16, blocks=2), f"{tmp}/m.safetensors")
    ...     header = xcf.models.read_metadata(path)
    >>> sorted(header), header["hparams"]
    (['architecture', 'hparams', 'metadata', 'spec', 'xcloudfree_version'], {'features': 16, 'blocks': 2, 'sar': True})
    """
    return _read_header(Path(path))[0]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network from a checkpoint written by :func:`save`, in eval mode, on ``map_location``.

    Everything is checked before any weight is allocated (:func:`verify`): the file (pickles are refused, never
    opened), the architecture, the hyperparameters' types and ranges, every tensor name and shape against the
    network built on the meta device, and the saved spec against the network's own. The spec and provenance saved
    with the weights become ``model.spec`` and ``model.metadata``.

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = xcf.models.save(xcf.models.create("dsen2cr", features=16, blocks=2), f"{tmp}/m.safetensors")
    ...     model = xcf.models.load(path)
    >>> model.architecture, model.training, model.spec.output_bands[:3]
    ('dsen2cr', False, ('B01', 'B02', 'B03'))
    """
    from safetensors.torch import load_file

    path = Path(path)
    info = verify(path)
    model = create(info["architecture"], **info["hparams"])
    try:
        tensors = load_file(path)
    except Exception as err:  # the Rust reader's own error type
        raise ValueError(f"{path}: cannot read the safetensors data ({err})") from None
    model.load_state_dict(tensors)
    model.spec = ModelSpec.from_dict(info["spec"])
    model.metadata = info.get("metadata", {})
    return model.to(map_location).eval()


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint without allocating its network; return its metadata (as :func:`read_metadata`).

    Raises ``ValueError`` naming the file and what does not fit: header, architecture, hyperparameters, tensor
    names and shapes (compared with the network built on the meta device; the build stops as soon as the
    network has more parameters than the file has tensors), or a saved spec (bands, channels, scaling, size
    rules) other than the one the network's hyperparameters give, which would mislabel the output bands.

    >>> import tempfile, torch
    >>> import xcloudfree as xcf
    >>> model = xcf.models.create("dsen2cr", features=16, blocks=2)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> xcf.models.verify(xcf.models.save(model, f"{tmp.name}/m.safetensors"))["architecture"]
    'dsen2cr'
    >>> torch.save(model.state_dict(), f"{tmp.name}/m.pth")
    >>> xcf.models.verify(f"{tmp.name}/m.pth")  # refused, never unpickled
    Traceback (most recent call last):
    ValueError: .../m.pth: expected a safetensors checkpoint, found a pickle (torch.save) file; ...
    >>> tmp.cleanup()
    """
    path = Path(path)
    info, shapes = _read_header(path)
    architecture, hparams = info.get("architecture"), info.get("hparams")
    if architecture not in _REGISTRY or not isinstance(hparams, dict):
        raise ValueError(
            f"{path}: architecture expected one of {available()} with a dict of hparams, "
            f"found {architecture!r} with {hparams!r}"
        )
    try:
        arguments = _check_hparams(architecture, hparams)
        with torch.device("meta"), _parameter_budget(len(shapes)):
            model = _build(architecture, arguments)
    except _TooMany:
        raise ValueError(
            f"{path}: the hparams {hparams} build a network with more parameters than the {len(shapes)} tensors "
            "the file holds"
        ) from None
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
    try:
        spec = ModelSpec.from_dict(saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the saved spec is not valid: {err}") from None
    # The channel layout is the network's: another one would mislabel inputs or outputs. Scaling may be
    # customised; the halo may grow (never shrink) and the size multiple be coarser, not finer.
    own = model.spec
    differ = [f for f in _LAYOUT_FIELDS if getattr(spec, f) != getattr(own, f)]
    if spec.halo < own.halo:
        differ.append("halo")
    if spec.size_multiple % own.size_multiple:
        differ.append("size_multiple")
    if differ:
        found = {f: getattr(spec, f) for f in differ}
        wanted = {f: getattr(own, f) for f in differ}
        raise ValueError(
            f"{path}: spec expected {wanted} (what {architecture!r} with these hparams computes; a halo at least, "
            f"a multiple of the size multiple), found {found}: the saved spec would mislabel the network's channels "
            "or cut its receptive field"
        )
    return info


#: Spec fields fixed by the architecture and its hyperparameters: what each input and output channel is.
_LAYOUT_FIELDS = (
    "optical_bands",
    "sar",
    "output_bands",
    "input_order",
    "sar_mean",
    "dem",
    "cloud_map",
    "residual",
    "role",
)


class _TooMany(RuntimeError):
    """A network under construction outgrew the checkpoint it is checked against."""


@contextlib.contextmanager
def _parameter_budget(limit: int) -> Iterator[None]:
    """Abort a build (in this thread) once it registers more than ``limit`` parameters."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    thread, count = threading.get_ident(), [0]

    def hook(module: nn.Module, name: str, param: Any) -> None:
        if threading.get_ident() == thread and param is not None:
            count[0] += 1
            if count[0] > limit:
                raise _TooMany

    handle = register_module_parameter_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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
