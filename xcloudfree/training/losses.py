"""Training losses of the five methods (REFERENCE §4), as plain functions of torch tensors.

Images are ``(B, C, H, W)`` on the scale the network works on (dsen2cr [0, 5], carf [0, 1], pix2pix and cyclecr
[-1, 1]); masks are ``(B, 1, H, W)`` or ``(B, H, W)`` floats in [0, 1] with 1 = cloud or shadow (covered).
Every loss returns a scalar float32 tensor, is differentiable, and runs on CPU or CUDA in float32, float16 or
bfloat16 and under ``torch.autocast``: the arithmetic is done in float32 (SSIM's small constants and the sums
of large batches need it; the cost is nothing next to the network).

Invalid pixels: the masking module marks pixels it could not judge with NaN. Every masked loss gives a NaN mask
pixel weight 0 in all its terms (its image values are not read, so NaN there does no harm either) and averages
over the valid pixels only; with no NaN the means are the plain means of the formulas. A batch with no valid
pixel gives a loss of 0.

Composite losses return ``(total, parts)``: ``parts`` maps each term's name to its unweighted value, detached
(call ``.item()`` when logging; nothing here forces a device sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.structural import ssim_torch
from ..metrics.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16Features

__all__ = [
    "l1",
    "carl",
    "carf_loss",
    "gan_loss",
    "pix2pix_generator_loss",
    "discriminator_loss",
    "cycle_loss",
    "identity_loss",
    "aux_loss",
    "cyclecr_generator_loss",
    "PerceptualLoss",
    "CYCLECR_WEIGHTS",
]

GanMode = Literal["vanilla", "lsgan"]
Parts = dict[str, torch.Tensor]

#: cyclecr loss weights (REFERENCE §4): adversarial, cycle, identity, cloud-map regression.
CYCLECR_WEIGHTS: dict[str, float] = {"adv": 5.0, "cyc": 10.0, "idt": 1.0, "aux": 10.0}


def _images(name: str, x: torch.Tensor, like: torch.Tensor | None = None, like_name: str = "pred") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        found = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected a tensor (B, C, H, W), found {found}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name}: expected the shape of {like_name} {tuple(like.shape)}, found {tuple(x.shape)}")
    return x.float()


def _mask(name: str, mask: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask with NaN → 0, valid weights)``, both ``(B, 1 or C, H, W)`` float32, for images shaped like ``like``."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor (B, 1, H, W) or (B, H, W), found {type(mask).__name__}")
    m = mask[:, None] if mask.ndim == 3 else mask
    b, c, h, w = like.shape
    if m.ndim != 4 or m.shape[0] != b or m.shape[2:] != (h, w) or m.shape[1] not in (1, c):
        raise ValueError(
            f"{name}: expected a mask (B, 1, H, W) or (B, H, W) matching images {tuple(like.shape)}, "
            f"found {tuple(mask.shape)}"
        )
    m = m.float()
    valid = torch.isfinite(m)
    return torch.where(valid, m, 0.0), valid.float()


def _valid_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, C, H, W) over the pixels where ``valid`` (broadcastable) is 1."""
    weight = valid.expand_as(x)
    return (x * weight).sum() / weight.sum().clamp_min(1.0)


def _zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # Replacing (not multiplying) keeps a NaN at an invalid pixel out of both the value and the gradient.
    return torch.where(valid.bool(), x, 0.0)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean|P − T|`` over all pixels and bands."""
    pred = _images("pred", pred)
    return (pred - _images("target", target, pred)).abs().mean()


def carl(
    pred: torch.Tensor, target: torch.Tensor, cloudy: torch.Tensor, mask: torch.Tensor, lam: float = 1.0
) -> torch.Tensor:
    """Cloud-adaptive regularised loss of dsen2cr.

    ``mean(M·|P − T| + (1 − M)·|P − I|) + λ·mean|P − T|``: under clouds and shadows the prediction must match the
    target, on clear pixels the cloudy input, and everywhere the target a little (λ = 1 in the paper). On the
    [0, 5] scale of the dsen2cr normalisation.

    Parameters
    ----------
    pred, target, cloudy : (B, C, H, W)
        Prediction P, cloud-free target T, cloudy input I (the same bands as P).
    mask : (B, 1, H, W) or (B, H, W)
        M, 1 = cloud or shadow; NaN = invalid pixel (weight 0 in all terms, means over the valid pixels).
    lam : float
        λ, weight of the global L1 term.
    """
    pred = _images("pred", pred)
    target = _images("target", target, pred)
    cloudy = _images("cloudy", cloudy, pred)
    m, valid = _mask("mask", mask, pred)
    pred, target, cloudy = (_zero_invalid(x, valid) for x in (pred, target, cloudy))
    to_target = (pred - target).abs()
    adaptive = m * to_target + (1.0 - m) * (pred - cloudy).abs()
    return _valid_mean(adaptive, valid) + lam * _valid_mean(to_target, valid)


def carf_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    l1_weight: float = 0.5,
    ssim_weight: float = 0.5,
    masked_weight: float = 2.0,
    use_mse: bool = False,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Cloud-aware loss of carf: ``2·mean|M·P − M·T| + 0.5·mean|P − T| + 0.5·(1 − SSIM(P, T))``.

    Parameters
    ----------
    pred, target : (B, C, H, W)
        On carf's [0, 1] scale (``data_range`` is SSIM's dynamic range).
    mask : (B, 1, H, W) or (B, H, W)
        Cloud mask (clouds only in carf), 1 = cloud; NaN = invalid pixel, weight 0 in the masked and pixel
        terms. SSIM (:func:`xcloudfree.metrics.ssim_torch`, zero padding) covers the whole image, with invalid
        pixels of P and T set to 0.
    l1_weight, ssim_weight, masked_weight : weights of the three terms.
    use_mse : use ``mean((P − T)²)`` for the pixel term instead of L1 (an option of the reference training).
    """
    pred = _images("pred", pred)
    target = _images("target", target, pred)
    m, valid = _mask("mask", mask, pred)
    pred, target = _zero_invalid(pred, valid), _zero_invalid(target, valid)
    diff = pred - target
    masked = _valid_mean((m * diff).abs(), valid)
    pixel = _valid_mean(diff.square() if use_mse else diff.abs(), valid)
    with torch.autocast(pred.device.type, enabled=False):
        structural = 1.0 - ssim_torch(pred, target, data_range=data_range)
    return masked_weight * masked + l1_weight * pixel + ssim_weight * structural


def gan_loss(logits: torch.Tensor, target_is_real: bool, mode: GanMode = "vanilla") -> torch.Tensor:
    """Adversarial loss of discriminator outputs (raw logits, any shape).

    ``"vanilla"``: binary cross-entropy with logits against all-ones (real) or all-zeros (fake) (pix2pix);
    ``"lsgan"``: ``mean((D − 1)²)`` or ``mean(D²)`` on the raw outputs (cyclecr).
    """
    if mode not in ("vanilla", "lsgan"):
        raise ValueError(f"mode: expected 'vanilla' or 'lsgan', found {mode!r}")
    logits = logits.float()
    label = torch.full_like(logits, 1.0 if target_is_real else 0.0)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, label)
    return (logits - label).square().mean()


def pix2pix_generator_loss(
    fake_logits: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, lam: float = 100.0, mode: GanMode = "vanilla"
) -> tuple[torch.Tensor, Parts]:
    """pix2pix generator loss ``GAN(D(x, G(x)), real) + λ·mean|G(x) − T|`` (λ = 100).

    Returns ``(total, {"gan", "l1"})``; ``fake_logits`` is the discriminator's output on the generated image.
    """
    adversarial = gan_loss(fake_logits, True, mode)
    pixel = l1(pred, target)
    return adversarial + lam * pixel, {"gan": adversarial.detach(), "l1": pixel.detach()}


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: GanMode = "vanilla"
) -> tuple[torch.Tensor, Parts]:
    """Discriminator loss ``0.5·(GAN(D(real), real) + GAN(D(fake), fake))``: the 0.5 of pix2pix slows D down.

    Compute ``fake_logits`` on a detached generator output. Returns ``(total, {"real", "fake"})``.
    """
    real = gan_loss(real_logits, True, mode)
    fake = gan_loss(fake_logits, False, mode)
    return 0.5 * (real + fake), {"real": real.detach(), "fake": fake.detach()}


def _domain_pair(
    name: str, s1: torch.Tensor, s1_other: torch.Tensor, s2: torch.Tensor, s2_other: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The S1 and S2 differences (float32, zero at invalid pixels), the map with NaN → 0 and its valid weights."""
    s1 = _images("s1", s1)
    s1_other = _images(f"s1_{name}", s1_other, s1, "s1")
    s2 = _images("s2", s2)
    s2_other = _images(f"s2_{name}", s2_other, s2, "s2")
    if s1.shape[0] != s2.shape[0] or s1.shape[2:] != s2.shape[2:]:
        raise ValueError(f"s2: expected the batch size and size of s1 {tuple(s1.shape)}, found {tuple(s2.shape)}")
    m, valid = _mask("m", m, s2)
    if m.shape[1] != 1:
        raise ValueError(f"m: expected one cloud-map channel (B, 1, H, W), found {tuple(m.shape)}")
    s1, s1_other, s2, s2_other = (_zero_invalid(x, valid) for x in (s1, s1_other, s2, s2_other))
    return s1 - s1_other, s2 - s2_other, m, valid


def cycle_loss(
    s1: torch.Tensor, s1_rec: torch.Tensor, s2: torch.Tensor, s2_rec: torch.Tensor, m: torch.Tensor
) -> torch.Tensor:
    """cyclecr cycle consistency ``mean|m·(S1 − S1̆)| + mean|(1 − m)·(S2 − S2̆)|``.

    ``s1_rec`` = G_S2→S1(G_S1→S2(S1, ...)) and ``s2_rec`` = G_S1→S2(G_S2→S1(S2), ...), on the [-1, 1] scale; the
    SAR cycle must hold under clouds, the optical one on clear pixels. ``m`` is the continuous cloud map
    (B, 1, H, W) in [0, 1] (NaN = invalid, weight 0).
    """
    d1, d2, m, valid = _domain_pair("rec", s1, s1_rec, s2, s2_rec, m)
    return _valid_mean((m * d1).abs(), valid) + _valid_mean(((1.0 - m) * d2).abs(), valid)


def identity_loss(
    s1: torch.Tensor, s1_idt: torch.Tensor, s2: torch.Tensor, s2_idt: torch.Tensor, m: torch.Tensor
) -> torch.Tensor:
    """cyclecr identity loss ``mean|m·(S1 − S1˙)| + mean|m·(S2 − S2˙)|``.

    ``s1_idt`` = G_S2→S1 applied to an S1 image and ``s2_idt`` = G_S1→S2 applied to an S2 image (each generator
    fed its own output domain); ``m`` as in :func:`cycle_loss`.
    """
    d1, d2, m, valid = _domain_pair("idt", s1, s1_idt, s2, s2_idt, m)
    return _valid_mean((m * d1).abs(), valid) + _valid_mean((m * d2).abs(), valid)


def aux_loss(m: torch.Tensor, m_hat: torch.Tensor) -> torch.Tensor:
    """cyclecr cloud-map regression loss ``mean|(1 − m)·(m − m̂)|`` (m and m̂ (B, 1, H, W); NaN in m = invalid)."""
    m_hat = _images("m_hat", m_hat)
    m, valid = _mask("m", m, m_hat)
    m_hat = _zero_invalid(m_hat, valid)
    return _valid_mean(((1.0 - m) * (m - m_hat)).abs(), valid)


def cyclecr_generator_loss(
    *,
    fake_logits: torch.Tensor | Sequence[torch.Tensor],
    s1: torch.Tensor,
    s2: torch.Tensor,
    m: torch.Tensor,
    s1_rec: torch.Tensor,
    s2_rec: torch.Tensor,
    m_hat: torch.Tensor,
    s1_idt: torch.Tensor | None = None,
    s2_idt: torch.Tensor | None = None,
    pred: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    perceptual: PerceptualLoss | None = None,
    weights: dict[str, float] | None = None,
    mode: GanMode = "lsgan",
) -> tuple[torch.Tensor, Parts]:
    """Generator loss of cyclecr: ``λ_adv·L_adv + λ_cyc·L_cyc + λ_idt·L_idt + λ_aux·L_aux`` (+ paired terms).

    Parameters
    ----------
    fake_logits : discriminator outputs on the generated images, e.g. ``[D_S2(Ŝ2, m), D_S1(Ŝ1)]``; L_adv is the
        sum of their GAN losses against "real" (LSGAN by default, as in the paper).
    s1, s2, m : the real S1 (B, 3, H, W), cloudy S2 and cloud map (B, 1, H, W), all on the [-1, 1] / [0, 1] scales.
    s1_rec, s2_rec : cycle reconstructions (:func:`cycle_loss`).
    m_hat : the cloud-map regression head's output (:func:`aux_loss`).
    s1_idt, s2_idt : identity mappings (:func:`identity_loss`); leave out both to drop the term.
    pred, target : with paired data, the generated Ŝ2 and the cloud-free target: adds ``λ_l1·mean|Ŝ2 − T|`` and,
        with ``perceptual``, its VGG16 perceptual/style loss (weights inside the module).
    weights : overrides of :data:`CYCLECR_WEIGHTS` (adv 5, cyc 10, idt 1, aux 10) and ``"l1"`` (default 10: the
        paper gives none; 10 puts the paired L1 on a par with the optical cycle term it stands in for).

    Returns
    -------
    ``(total, parts)`` with the unweighted terms ``adv``, ``cyc``, ``aux`` and, when computed, ``idt``, ``l1``,
    ``perceptual``.
    """
    w = {**CYCLECR_WEIGHTS, "l1": 10.0, **(weights or {})}
    unknown = sorted(set(w) - set(CYCLECR_WEIGHTS) - {"l1"})
    if unknown:
        raise ValueError(f"weights: expected keys from {sorted(CYCLECR_WEIGHTS) + ['l1']}, found {unknown}")
    logits = [fake_logits] if isinstance(fake_logits, torch.Tensor) else list(fake_logits)
    if not logits:
        raise ValueError("fake_logits: expected at least one discriminator output, found none")
    terms: Parts = {
        "adv": sum((gan_loss(x, True, mode) for x in logits), torch.zeros((), device=s2.device)),
        "cyc": cycle_loss(s1, s1_rec, s2, s2_rec, m),
        "aux": aux_loss(m, m_hat),
    }
    if (s1_idt is None) != (s2_idt is None):
        raise ValueError("s1_idt, s2_idt: expected both identity outputs or neither, found one")
    if s1_idt is not None:
        terms["idt"] = identity_loss(s1, s1_idt, s2, s2_idt, m)
    if (pred is None) != (target is None):
        raise ValueError("pred, target: expected both (paired data) or neither, found one")
    if pred is not None:
        terms["l1"] = l1(pred, target)
        if perceptual is not None:
            terms["perceptual"] = perceptual(pred, target)
    total = sum((w.get(k, 1.0) * v for k, v in terms.items()), torch.zeros((), device=s2.device))
    return total, {k: v.detach() for k, v in terms.items()}


class PerceptualLoss(nn.Module):
    """VGG16 perceptual and style loss (cyclecr's paired terms), on a frozen VGG16 with the user's weights.

    ``loss = perceptual_weight·Σ_l mean|φ_l(P) − φ_l(T)| + style_weight·Σ_l mean|G_l(P) − G_l(T)|`` where φ_l are
    the activations after ``features[l]`` of torchvision's VGG16 (defaults 11, 20, 29: relu3_1, relu4_2,
    relu5_3) and ``G = φ φᵀ / (C·H·W)`` their Gram matrices (float32).

    Parameters
    ----------
    weights_path : safetensors file in torchvision's VGG16 layout (see :mod:`xcloudfree.metrics.vgg`); only the
        ``features.*`` tensors up to the deepest layer used are read, so a full VGG16 file or a truncated one
        both work. Nothing is downloaded.
    layers : indices into ``VGG16.features``.
    perceptual_weight, style_weight : the paper gives no weights; both default to 1.
    channels : indices of red, green, blue in the inputs when they have more than 3 bands (e.g. ``(3, 2, 1)``
        for 13 canonical bands).

    ``forward(pred, target)`` takes images (B, C, H, W) on the [-1, 1] scale; the RGB channels are mapped to
    [0, 1] and normalised with the ImageNet mean and standard deviation the torchvision weights expect, at their
    own size (no resizing). Gradients flow into ``pred`` only; the VGG parameters are frozen.
    """

    def __init__(
        self,
        weights_path: str | Path,
        layers: Sequence[int] = (11, 20, 29),
        perceptual_weight: float = 1.0,
        style_weight: float = 1.0,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        from safetensors import safe_open

        with torch.device("meta"):
            features = VGG16Features().features
        self.layers = tuple(int(i) for i in layers)
        if not self.layers or min(self.layers) < 0 or max(self.layers) >= len(features):
            raise ValueError(f"layers: expected indices in [0, {len(features) - 1}] of VGG16.features, found {layers}")
        self.features = features[: max(self.layers) + 1]
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # an in-place ReLU would overwrite a captured conv output
        path = Path(weights_path)
        if not path.is_file():
            raise ValueError(f"weights_path: expected a safetensors file of VGG16 weights, found no file at {path}")
        needed = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        state = {}
        with safe_open(str(path), framework="pt") as f:
            present = set(f.keys())
            missing = sorted(set(needed) - present)
            if missing:
                raise ValueError(
                    f"weights_path: expected torchvision's VGG16 layout in {path} up to layer {max(self.layers)}, "
                    f"found missing keys {missing[:5]}"
                )
            for key, ref in needed.items():
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != tuple(ref.shape):
                    raise ValueError(
                        f"weights_path: expected {key} of shape {tuple(ref.shape)} in {path}, "
                        f"found {tuple(tensor.shape)}"
                    )
                state[key.removeprefix("features.")] = tensor.float()
        self.features.load_state_dict(state, assign=True)
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.channels = None if channels is None else tuple(int(c) for c in channels)
        if self.channels is not None and len(self.channels) != 3:
            raise ValueError(f"channels: expected the indices of red, green, blue (3 values), found {channels}")

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # frozen: stays in eval mode whatever the trainer does
        return self

    def _rgb(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = _images(name, x)
        if self.channels is not None:
            x = x[:, list(self.channels)]
        elif x.shape[1] != 3:
            raise ValueError(f"{name}: expected RGB (B, 3, H, W) or channels=... to pick them, found {tuple(x.shape)}")
        return ((x + 1.0) * 0.5 - self.mean) / self.std

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.layers:
                out.append(x.float())
        return out

    @staticmethod
    def _gram(f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> Parts:
        """The unweighted ``{"perceptual", "style"}`` sums over the layers (not detached)."""
        fake = self._activations(self._rgb("pred", pred))
        with torch.no_grad():
            real = self._activations(self._rgb("target", target))
        zero = torch.zeros((), device=fake[0].device)
        with torch.autocast(zero.device.type, enabled=False):  # Gram sums overflow float16
            return {
                "perceptual": sum(((a - b).abs().mean() for a, b in zip(fake, real, strict=True)), zero),
                "style": sum(
                    ((self._gram(a) - self._gram(b)).abs().mean() for a, b in zip(fake, real, strict=True)), zero
                ),
            }

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = self.terms(pred, target)
        return self.perceptual_weight * t["perceptual"] + self.style_weight * t["style"]
