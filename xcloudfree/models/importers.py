"""Import the published weights of the reference implementations into our networks, without unpickling.

=============  ==========================================================  ======================================
``arch``       file                                                        read with
=============  ==========================================================  ======================================
``dsen2cr``    Keras HDF5 of ameraner/dsen2-cr (``model_SARcarl.hdf5``)    h5py (no TensorFlow)
``carf``       GLF-CR ``CR_net.pth`` (``{"network": state_dict}``)         ``torch.load(weights_only=True)``
``pix2pix``    junyanz pix2pix generator ``latest_net_G.pth``              ``torch.load(weights_only=True)``
``patchgan``   junyanz pix2pix discriminator ``latest_net_D.pth``          ``torch.load(weights_only=True)``
=============  ==========================================================  ======================================

Mapping rules (stated once, applied by name, checked by shape):

- **dsen2cr**: the Conv2D layers of the file, in creation order (Keras numbers auto-named layers ``conv2d_1``,
  ``conv2d_2``, ... as they are built; names without numbers keep the file's ``layer_names`` order), are
  head, then two per residual block, then tail. F, B and the SAR input are read from the kernels: ``B = (n − 2) / 2``,
  ``F`` = the head's output width, SAR when the head takes 15 channels (13 without). Kernels are HWIO → OIHW.
- **carf**: GLF-CR module names → ours by the table ``_CARF_RULES`` (e.g. ``RDBs.i.convs.c.attn.qkv_SAR`` →
  ``blocks.i.attention.c.attn.qkv_sar``); features, growth, blocks, layers, heads, window, kernel and MLP ratio
  are read from the shapes.
- **pix2pix**: the nested ``UnetSkipConnectionBlock`` names are generated level by level (outermost
  ``model.model.0`` / ``.3``, then ``.1.model.`` and ``.3.model.`` inwards) and paired with our ``down`` / ``up``
  lists; ``num_downs``, ``ngf``, channels and the norm are read from the file.
- **patchgan**: ``model.i`` → ``layers.i`` (the same Sequential order).

Wrappers are unwrapped: ``module.`` / ``_orig_mod.`` prefixes, ``{"network" | "state_dict" | "model" | ...: ...}``
checkpoints, and EMA copies (preferred when present). Every tensor of our model must be filled and every tensor
of the file used or listed as ignored with a reason; a shape mismatch raises ``ValueError`` naming both shapes.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMATS", "convert", "import_weights"]

#: arch → the published format it reads.
FORMATS = {
    "dsen2cr": "keras-hdf5 (ameraner/dsen2-cr)",
    "carf": "pytorch state dict (GLF-CR RDN_residual_CR)",
    "pix2pix": "pytorch state dict (junyanz UnetGenerator)",
    "patchgan": "pytorch state dict (junyanz NLayerDiscriminator)",
}
#: Checkpoint keys that hold the weights, EMA copies first (they are the ones to run).
_WRAPPERS = (
    "params_ema",
    "ema",
    "model_ema",
    "ema_state_dict",
    "state_dict_ema",
    "network",
    "state_dict",
    "model",
    "net_G",
    "netG",
    "generator",
    "params",
)
_PREFIXES = ("module.", "_orig_mod.")


def import_weights(path: str | os.PathLike, arch: str, **hparams: Any) -> Any:
    """Build our ``arch`` network from a published checkpoint, safely (HDF5 via h5py, PyTorch with weights_only).

    Parameters
    ----------
    path : the downloaded file (Keras ``.hdf5`` / ``.h5`` for dsen2cr, ``.pth`` for the others).
    arch : ``"dsen2cr"``, ``"carf"``, ``"pix2pix"`` or ``"patchgan"``.
    **hparams : hyperparameters of :func:`xcloudfree.models.create`; those the file determines (widths, depths,
        channels) are read from it and must agree when given; the rest (e.g. ``dropout``) are used as given.

    Returns
    -------
    The network in eval mode, with ``.metadata["imported_from"]``: source file name, sha256, format, the file
    tensors ignored (with reasons) and our tensors given defaults (with reasons).
    """
    from . import create, file_sha256

    path = Path(path)
    if arch not in FORMATS:
        raise ValueError(f"arch: expected one of {list(FORMATS)}, found {arch!r}")
    if not path.is_file():
        raise FileNotFoundError(f"path: no weights file at {path}")
    reader = _read_keras if arch == "dsen2cr" else _read_torch
    tensors, ignored = reader(path)
    found, mapping, extra_ignored = _ARCHES[arch](tensors)
    ignored.update(extra_ignored)
    for key, value in found.items():
        if key in hparams and hparams[key] != value:
            raise ValueError(
                f"hparams: {key}={hparams[key]!r} was given but the file {path.name} holds a {arch} "
                f"with {key}={value!r}"
            )
    model = create(arch, **{**hparams, **found})
    defaulted = _fill(model, tensors, mapping, ignored, path.name)
    model.metadata = {
        "imported_from": {
            "source": path.name,
            "sha256": file_sha256(path),
            "format": FORMATS[arch],
            "ignored": ignored,
            "defaulted": defaulted,
        }
    }
    if arch == "carf":
        warnings.warn(
            "carf: filled from GLF-CR weights; carf's dynamic-filter generator uses ReLU where GLF-CR uses "
            "LeakyReLU(0.1) (and no activation on the kernel output), so the outputs are not GLF-CR's: fine-tune "
            "before use (docs/weights.md)",
            stacklevel=2,
        )
    return model.eval()


def convert(path: str | os.PathLike, out: str | os.PathLike, arch: str, **hparams: Any) -> Path:
    """:func:`import_weights` then :func:`xcloudfree.models.save` to ``out`` with the provenance as metadata."""
    from . import save

    model = import_weights(path, arch, **hparams)
    return save(model, out, metadata=model.metadata)


# ------------------------------------------------------------------------------------------------- readers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_keras(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Weights of a Keras HDF5 file as ``{"<layer>/<param>": array}`` in file order, plus ignored entries.

    Whole-model files keep the layers under ``model_weights`` (``model_weights/conv2d_1/conv2d_1/kernel:0``),
    weights-only files at the root; both list ``layer_names`` and, per layer, ``weight_names``. A model wrapped
    by ``multi_gpu_model`` holds the inner model as one layer whose weight names carry the inner layer names.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("dsen2cr: reading Keras HDF5 needs h5py: pip install 'xcloudfree[weights]'") from None
    ignored: dict[str, str] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"path: expected a Keras HDF5 file, {path.name} is not HDF5 ({err})") from None
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ValueError(f"path: expected a Keras HDF5 file with 'layer_names', found none in {path.name}")
        tensors: dict[str, np.ndarray] = {}
        for layer in (_text(n) for n in group.attrs["layer_names"]):
            lg = group[layer]
            for wname in (_text(w) for w in lg.attrs.get("weight_names", [])):
                key = re.sub(r":\d+$", "", wname)
                tensors[key] = np.asarray(lg[wname])
        if "optimizer_weights" in f:

            def note(name: str, obj: Any) -> None:  # visititems stops at the first non-None return
                if isinstance(obj, h5py.Dataset):
                    ignored[f"optimizer_weights/{name}"] = "optimizer state, not needed for inference"

            f["optimizer_weights"].visititems(note)
    return tensors, ignored


def _read_torch(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A PyTorch checkpoint read with ``weights_only=True``, unwrapped to one flat state dict."""
    import argparse

    import torch

    try:
        # Training scripts often store their argparse options beside the weights: a harmless attribute bag.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for anything beyond plain tensors and containers
        raise ValueError(
            f"path: {path.name} is not a plain PyTorch state dict readable with weights_only=True ({err}); "
            "xcloudfree never unpickles arbitrary objects"
        ) from None
    ignored: dict[str, str] = {}
    while isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            raise ValueError(
                f"path: expected a state dict (name → tensor) or a checkpoint holding one under {list(_WRAPPERS)}, "
                f"found keys {sorted(map(str, obj))[:8]} in {path.name}"
            )
        for other in obj:
            if other != key:
                ignored[str(other)] = f"checkpoint entry beside the weights {key!r} (training state or metadata)"
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"path: expected a state dict in {path.name}, found a {type(obj).__name__}")
    tensors: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            ignored[str(name)] = f"not a tensor ({type(value).__name__})"
            continue
        key = str(name)
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        tensors[key] = value.detach().cpu().numpy()
    return tensors, ignored


def _is_state_dict(obj: dict) -> bool:
    import torch

    values = list(obj.values())
    # Tensors, perhaps beside a few scalars (an EMA step counter), but no nested containers.
    return any(isinstance(v, torch.Tensor) for v in values) and not any(isinstance(v, dict) for v in values)


def _fill(model: Any, tensors: dict[str, np.ndarray], mapping: dict[str, str], ignored: dict[str, str], src: str):
    """Copy ``tensors[mapping[ours]]`` into every tensor of ``model``; check names and shapes both ways."""
    import torch

    state = model.state_dict()
    missing, defaulted = [], {}
    values = {}
    for ours, target in state.items():
        theirs = mapping.get(ours)
        if theirs is None or theirs not in tensors:
            if ours.endswith("num_batches_tracked"):  # absent from files of PyTorch < 0.4.1; unused in eval
                values[ours] = torch.zeros_like(target)
                defaulted[ours] = "BatchNorm step counter absent from the file; unused at inference"
                continue
            missing.append(ours if theirs is None else f"{ours} (from {theirs})")
            continue
        array = tensors[theirs]
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(
                f"{src}: tensor {theirs!r} has shape {tuple(array.shape)} but {ours!r} of our "
                f"{model.architecture} expects {tuple(target.shape)}"
            )
        values[ours] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
    if missing:
        raise ValueError(f"{src}: our {model.architecture} tensors not found in the file: {_few(missing)}")
    used = set(mapping.values())
    unused = [name for name in tensors if name not in used and name not in ignored]
    if unused:
        raise ValueError(f"{src}: file tensors that fit no tensor of our {model.architecture}: {_few(unused)}")
    model.load_state_dict(values, strict=True)
    return defaulted


def _few(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _need(tensors: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in tensors:
        raise ValueError(f"path: expected {what} with tensor {name!r}, not found (file has {_few(sorted(tensors))})")
    return tensors[name]


# ------------------------------------------------------------------------------------------------- dsen2cr
def _dsen2cr(tensors: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    layers: dict[str, list[str]] = {}
    for key in tensors:
        layer, _, param = key.rpartition("/")
        layers.setdefault(layer, []).append(param)
    convs = [name for name, params in layers.items() if "kernel" in params and tensors[f"{name}/kernel"].ndim == 4]
    others = [f"{name}/{p}" for name, params in layers.items() if name not in convs for p in params]
    if others:
        raise ValueError(f"path: expected only Conv2D layers in a DSen2-CR file, found weights {_few(others)}")

    def number(name: str) -> int | None:
        m = re.fullmatch(r"(?:.*/)?conv2d(?:_(\d+))?", name)
        return None if m is None else int(m.group(1) or 0)

    if all(number(n) is not None for n in convs):
        convs.sort(key=number)  # Keras numbers auto-named layers in the order the reference code builds them
    if len(convs) < 2 or len(convs) % 2:
        raise ValueError(f"path: expected 2·B + 2 Conv2D layers (head, B blocks of two, tail), found {len(convs)}")
    head, tail = tensors[f"{convs[0]}/kernel"], tensors[f"{convs[-1]}/kernel"]
    sar = {15: True, 13: False}.get(head.shape[2])
    if sar is None or tail.shape[3] != 13:
        raise ValueError(
            f"path: expected a DSen2-CR head taking 15 (S2 + S1) or 13 channels and a tail giving 13, found "
            f"{head.shape[2]} → {tail.shape[3]} (kernel shapes {head.shape}, {tail.shape})"
        )
    found = {"features": int(head.shape[3]), "blocks": (len(convs) - 2) // 2, "sar": sar}
    ours = ["head.0"] + [f"blocks.{i}.body.{j}" for i in range(found["blocks"]) for j in (0, 3)] + ["tail"]
    mapping = {}
    for mine, theirs in zip(ours, convs, strict=True):
        mapping[f"{mine}.weight"] = f"{theirs}/kernel"
        mapping[f"{mine}.bias"] = f"{theirs}/bias"
        tensors[f"{theirs}/kernel"] = tensors[f"{theirs}/kernel"].transpose(3, 2, 0, 1)  # HWIO → OIHW
    return found, mapping, {}


# ---------------------------------------------------------------------------------------------------- carf
#: GLF-CR name (regex) → carf name. ``{i}`` RDB / fusion index, ``{c}`` layer index.
_CARF_RULES = [
    (r"SFENet1\.", "shallow1_opt."),
    (r"SFENet2\.", "shallow2_opt."),
    (r"SFENet1_SAR\.", "shallow_sar.0."),
    (r"SFENet2_SAR\.", "shallow_sar.1."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\.", r"blocks.\1.convs_opt.\2.0."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.conv_SAR\.0\.", r"blocks.\1.convs_sar.\2.0."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.relative_position_bias_table", r"blocks.\1.attention.\2.attn.position_bias"),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.qkv\.", r"blocks.\1.attention.\2.attn.qkv_opt."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.qkv_SAR\.", r"blocks.\1.attention.\2.attn.qkv_sar."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.proj\.", r"blocks.\1.attention.\2.attn.proj_opt."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.proj_SAR\.", r"blocks.\1.attention.\2.attn.proj_sar."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.attn\.attn_fuse_1x1conv\.", r"blocks.\1.attention.\2.attn.logit_gate."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.norm2\.", r"blocks.\1.attention.\2.norm_opt."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.norm2_SAR\.", r"blocks.\1.attention.\2.norm_sar."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.mlp\.fc1\.", r"blocks.\1.attention.\2.mlp_opt.0."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.mlp\.fc2\.", r"blocks.\1.attention.\2.mlp_opt.2."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.mlp_SAR\.fc1\.", r"blocks.\1.attention.\2.mlp_sar.0."),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.mlp_SAR\.fc2\.", r"blocks.\1.attention.\2.mlp_sar.2."),
    (r"RDBs\.(\d+)\.LFF\.", r"blocks.\1.local_fusion_opt."),
    (r"RDBs\.(\d+)\.LFF_SAR\.", r"blocks.\1.local_fusion_sar."),
    (r"DF\.(\d+)\.fac_warp\.0\.0\.", r"fusions.\1.kernel_net.0."),
    (r"DF\.(\d+)\.fac_warp\.1\.stem\.0\.", r"fusions.\1.kernel_net.2.body.0."),
    (r"DF\.(\d+)\.fac_warp\.1\.stem\.2\.", r"fusions.\1.kernel_net.2.body.3."),
    (r"DF\.(\d+)\.fac_warp\.2\.stem\.0\.", r"fusions.\1.kernel_net.3.body.0."),
    (r"DF\.(\d+)\.fac_warp\.2\.stem\.2\.", r"fusions.\1.kernel_net.3.body.3."),
    (r"DF\.(\d+)\.fac_warp\.3\.0\.", r"fusions.\1.kernel_net.4."),
    (r"sar_fuse_1x1conv\.(\d+)\.", r"fusions.\1.gate_opt."),
    (r"opt_distribute_1x1conv\.(\d+)\.", r"fusions.\1.gate_sar."),
    (r"GFF\.(\d)\.", r"global_fusion.\1."),
    (r"UPNet\.(0|2)\.", r"upsample.\1."),
]
_CARF_IGNORED = [
    (r"\.attn\.relative_position_index$", "relative position index: recomputed from the window size"),
    (r"\.attn_mask$", "shifted-window mask for the one training size of GLF-CR: rebuilt for every input size"),
]


def _carf_name(theirs: str) -> str | None:
    for pattern, replacement in _CARF_RULES:
        m = re.match(pattern, theirs)
        if m:
            return re.sub(pattern, replacement, theirs[: m.end()]) + theirs[m.end() :]
    return None


def _carf(tensors: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    ignored = {
        name: reason for name in tensors for pattern, reason in _CARF_IGNORED if re.search(pattern, name) is not None
    }
    mapping = {}
    for theirs in tensors:
        if theirs in ignored:
            continue
        ours = _carf_name(theirs)
        if ours is not None:
            mapping[ours] = theirs
    shallow = _need(tensors, "SFENet1.weight", "a GLF-CR/carf network")
    features = int(shallow.shape[0])
    blocks = len({m.group(1) for n in tensors if (m := re.match(r"RDBs\.(\d+)\.", n))})
    layers = len({m.group(1) for n in tensors if (m := re.match(r"RDBs\.0\.convs\.(\d+)\.", n))})
    growth = int(_need(tensors, "RDBs.0.convs.0.conv.0.weight", "a GLF-CR/carf network").shape[0])
    table = _need(tensors, "RDBs.0.convs.0.attn.relative_position_bias_table", "a GLF-CR/carf network")
    heads, window = int(table.shape[1]), int(round((math.sqrt(table.shape[0]) + 1) / 2))
    kernel_out = _need(tensors, "DF.0.fac_warp.3.0.weight", "a GLF-CR/carf network").shape[0]
    kernel = int(round(math.sqrt(kernel_out / features)))
    hidden = _need(tensors, "RDBs.0.convs.0.mlp.fc1.weight", "a GLF-CR/carf network").shape[0]
    found = {
        "features": features,
        "growth": growth,
        "blocks": blocks,
        "layers": layers,
        "heads": heads,
        "window": window,
        "kernel": kernel,
        "mlp_ratio": float(hidden) / growth,
    }
    return found, mapping, ignored


# ------------------------------------------------------------------------------------------------- pix2pix
def _unet_block(level: int) -> str:
    """Name prefix of the junyanz ``UnetSkipConnectionBlock`` at ``level`` (0 = outermost)."""
    # The outermost Sequential holds its submodule at index 1, every other block at index 3.
    return "model.model." + "".join("1.model." if i == 0 else "3.model." for i in range(level))


def _module_pairs(ours: list[tuple[str, str]], tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """Every tensor suffix (weight, bias, running stats) of each (our module, their module) pair."""
    mapping = {}
    suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for mine, theirs in ours:
        for suffix in suffixes:
            if f"{theirs}.{suffix}" in tensors or suffix != "num_batches_tracked":
                mapping[f"{mine}.{suffix}"] = f"{theirs}.{suffix}"
    return mapping


def _norm_of(tensors: dict[str, np.ndarray]) -> str:
    return "batch" if any(n.endswith("running_mean") for n in tensors) else "instance"


def _pix2pix(tensors: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    first = _need(tensors, "model.model.0.weight", "a junyanz UnetGenerator")
    n = 1
    while f"{_unet_block(n)}1.weight" in tensors:
        n += 1
    if n < 5:
        raise ValueError(f"path: expected a UnetGenerator with at least 5 levels, found {n}")
    last_up = _need(tensors, "model.model.3.weight", "a junyanz UnetGenerator (outermost up-convolution)")
    found = {
        "in_channels": int(first.shape[1]),
        "out_channels": int(last_up.shape[1]),  # ConvTranspose2d weights are (in, out, k, k)
        "num_downs": n,
        "ngf": int(first.shape[0]),
        "norm": _norm_of(tensors),
    }
    pairs = [("down.0", "model.model.0")]
    for level in range(1, n):
        block = _unet_block(level)
        innermost = level == n - 1
        k = n - 1 - level  # our up list runs innermost first
        pairs.append((f"down.{level}.1", f"{block}1"))
        if innermost:
            pairs += [(f"up.{k}.1", f"{block}3"), (f"up.{k}.2", f"{block}4")]
        else:
            pairs += [(f"down.{level}.2", f"{block}2"), (f"up.{k}.1", f"{block}5"), (f"up.{k}.2", f"{block}6")]
    pairs.append((f"up.{n - 1}.1", "model.model.3"))
    return found, _module_pairs(pairs, tensors), {}


def _patchgan(tensors: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    first = _need(tensors, "model.0.weight", "a junyanz NLayerDiscriminator")
    convs = sorted(int(m.group(1)) for n in tensors if (m := re.fullmatch(r"model\.(\d+)\.weight", n)))
    convs = [i for i in convs if tensors[f"model.{i}.weight"].ndim == 4]
    found = {
        "in_channels": int(first.shape[1]),
        "n_layers": len(convs) - 2,
        "ndf": int(first.shape[0]),
        "norm": _norm_of(tensors),
        "spectral_norm": False,
    }
    modules = sorted({int(m.group(1)) for n in tensors if (m := re.match(r"model\.(\d+)\.", n))})
    return found, _module_pairs([(f"layers.{i}", f"model.{i}") for i in modules], tensors), {}


_ARCHES: dict[str, Callable[[dict[str, np.ndarray]], tuple[dict, dict, dict]]] = {
    "dsen2cr": _dsen2cr,
    "carf": _carf,
    "pix2pix": _pix2pix,
    "patchgan": _patchgan,
}
