"""Building blocks shared by the architectures: residual blocks, CBAM attention, ResNet generator, window helpers.

Tensors are ``(batch, channels, height, width)`` unless a docstring says otherwise.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

__all__ = [
    "CBAM",
    "DropPath",
    "ResidualBlock",
    "ResnetGenerator",
    "check_input",
    "init_gan_weights",
    "norm_layer",
    "relative_position_index",
    "shifted_window_mask",
    "trunc_normal_",
    "window_merge",
    "window_partition",
]


def check_input(x: torch.Tensor, channels: int, multiple: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, H, W)`` with H and W multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"x: expected a (batch, {channels}, height, width) tensor, found shape {tuple(x.shape)}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(f"x: expected height and width that are multiples of {multiple}, found {tuple(x.shape[-2:])}")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``"batch"``, ``"instance"`` (CycleGAN: no affine, no running statistics) or ``"none"``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch', 'instance' or 'none', found {kind!r}")


def init_gan_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix / CycleGAN init: conv weights N(0, std), BatchNorm weights N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            # Spectral-normalised convs keep the raw weight under parametrizations.
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class ResidualBlock(nn.Module):
    """``x + scale · body(x)`` with body = Conv3×3 → norm → ReLU → Conv3×3 → norm [→ attention].

    No activation after the addition. ``padding_mode="reflect"`` is the CycleGAN choice, ``"zeros"`` the DSen2-CR one;
    convs carry a bias unless BatchNorm follows.
    """

    def __init__(
        self,
        channels: int,
        norm: str = "none",
        scale: float = 1.0,
        padding_mode: str = "zeros",
        attention: nn.Module | None = None,
    ) -> None:
        super().__init__()
        bias = norm != "batch"
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, channels),
            attention if attention is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.body(x)


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel attention, then spatial attention.

    Channel: shared MLP (reduction ``reduction``) on average- and max-pooled features, summed, sigmoid.
    Spatial: Conv7×7 on the channel-wise mean and max maps, sigmoid.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.channel_mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.channel_mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + peak)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: encoder → attention → residual blocks → decoder → head.

    Encoder: Conv7×7 (ngf) and two stride-2 Conv3×3 (2·ngf, 4·ngf), each with norm and ReLU. Residual blocks at
    4·ngf with reflection padding (optionally with CBAM inside each, and CBAM between encoder and blocks). Decoder:
    two stride-2 transposed Conv3×3 back to ngf, then Conv7×7 → ``out_channels`` and ``tanh`` (or no activation).
    Height and width must be multiples of 4.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        attention: bool = False,
        tanh: bool = True,
    ) -> None:
        super().__init__()
        bias = norm != "batch"
        encoder: list[nn.Module] = [
            nn.Conv2d(in_channels, ngf, 7, padding=3, padding_mode="reflect", bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):
            encoder += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        width = ngf * 4
        self.encoder = nn.Sequential(*encoder)
        self.attention = CBAM(width) if attention else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(width, norm, padding_mode="reflect", attention=CBAM(width) if attention else None)
                for _ in range(n_blocks)
            )
        )
        decoder: list[nn.Module] = []
        for mult in (4, 2):
            decoder += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(norm, ngf * mult // 2),
                nn.ReLU(inplace=True),
            ]
        self.decoder = nn.Sequential(*decoder)
        self.head = nn.Sequential(
            nn.Conv2d(ngf, out_channels, 7, padding=3, padding_mode="reflect"), nn.Tanh() if tanh else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.blocks(self.attention(self.encoder(x)))))

    @staticmethod
    def receptive_radius(n_blocks: int) -> int:
        """Receptive radius (px): Conv7×7, two stride-2 convs, 2 convs per block at stride 4, two up-convs, Conv7×7."""
        return 3 + 1 + 2 + 2 * n_blocks * 4 + 4 + 2 + 3


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` → ``(B · nW, window², C)``: non-overlapping square windows, row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B · nW, window², C)`` → ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


@torch.compiler.disable  # built eagerly once per size and device; torch.compile graphs only use it
@lru_cache(maxsize=32)
def shifted_window_mask(
    height: int, width: int, window: int, shift: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Additive attention mask ``(nW, window², window²)`` for a feature map of the given size, cached per device.

    After a cyclic shift by ``shift``, windows on the border hold pixels from opposite image sides: tokens from
    different regions must not attend to each other (-100 before the softmax), as in Swin. Built for the actual
    size, so any multiple of the window works.
    """
    # The cached tensor must stay usable in training even when first built under torch.inference_mode.
    with torch.inference_mode(False):
        labels = torch.zeros(1, height, width, 1)
        region = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                labels[:, hs, ws, :] = region
                region += 1
        labels = window_partition(labels, window).squeeze(-1)
        diff = labels.unsqueeze(1) - labels.unsqueeze(2)
        return torch.zeros_like(diff).masked_fill(diff != 0, -100.0).to(device)


def relative_position_index(window: int) -> torch.Tensor:
    """``(window², window²)`` index into a ``(2·window − 1)²`` table of relative position biases."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """Truncated normal at ±2 std (the transformer init)."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)
