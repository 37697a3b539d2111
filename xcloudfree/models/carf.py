"""CARF, cloud-aware SAR fusion (derived from GLF-CR): two residual-dense streams with Swin window attention whose
optical attention logits are steered by SAR, and dynamic-filter SAR→optical feature fusion after every block.

::

    optical (13) ─ PixelUnshuffle(2) → Conv5×5(96) → Conv3×3(96) ──┐ (shallow features f1 kept for the global skip)
    SAR (2) ───── PixelUnshuffle(2) → Conv5×5(96) → Conv3×3(96) ──┤
                                                                    │ 6 × [dual RDB → dynamic-filter fusion]
    dual RDB, 5 layers, growth 48, per layer and stream:           │
        Conv3×3 + ReLU (→48) → window attention (8×8, shift 4 on odd layers, 8 heads, relative position bias
        shared by the streams), optical logits A_o += (A_s − A_o)·σ(Conv1×1(A_s − A_o)) → + ; LayerNorm → MLP(×2,
        GELU) → + (stochastic depth up to 0.2); dense concatenation; local fusion Conv3×3 (336 → 96) + block input
    fusion: kernels = Conv1×1(96·25)(2 × ResBlock(ReLU(Conv3×3(192 → 96)([O, S]))));
        S_f = per-pixel, per-channel 5×5 filtering of S with the kernels;
        O' = O + (S_f − O)·σ(Conv1×1(S_f − O));  S' = S + (O' − S_f)·σ(Conv1×1(O' − S_f))
    global fusion Conv1×1 (6·96 → 96) → Conv3×3 + f1 → Conv3×3 (96 → 256) → PixelShuffle(2) → Conv3×3 (64 → 13)
    + cloudy optical input

14,827,373 parameters at the defaults. Window masks are built for the size of each input, so any height and width
that are multiples of 16 (2 × window) work. Dynamic filtering is plain PyTorch (shifted multiply-adds), no extension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sensors import S1_POLARIZATIONS, S2_BAND_NAMES
from .layers import (
    DropPath,
    ResidualBlock,
    check_input,
    relative_position_index,
    shifted_window_mask,
    trunc_normal_,
    window_merge,
    window_partition,
)
from .spec import ModelSpec, halo_from_radius

__all__ = ["CARF"]

#: Channels after the upsampler's PixelShuffle(2) (256 before it).
_UP_WIDTH = 64


class CrossModalWindowAttention(nn.Module):
    """Multi-head self-attention inside windows for both streams; SAR logits steer the optical ones.

    Tokens are ``(B · nW, window², dim)`` per stream; the relative position bias table is shared by the streams.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv_opt = nn.Linear(dim, 3 * dim)
        self.qkv_sar = nn.Linear(dim, 3 * dim)
        self.proj_opt = nn.Linear(dim, dim)
        self.proj_sar = nn.Linear(dim, dim)
        self.position_bias = nn.Parameter(trunc_normal_(torch.zeros((2 * window - 1) ** 2, heads)))
        self.logit_gate = nn.Conv2d(heads, heads, 1)
        self.register_buffer("position_index", relative_position_index(window), persistent=False)

    def _split(self, tokens: torch.Tensor, qkv: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, length, dim = tokens.shape
        q, k, v = qkv(tokens).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(
        self, opt: torch.Tensor, sar: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, length, dim = opt.shape
        q_o, k_o, v_o = self._split(opt, self.qkv_opt)
        q_s, k_s, v_s = self._split(sar, self.qkv_sar)
        # Logits stay in the compute dtype (bf16 under autocast): they are the largest tensors of the network.
        bias = self.position_bias[self.position_index].permute(2, 0, 1).to(q_o.dtype)  # (heads, N, N)
        logits_o = (q_o * self.scale) @ k_o.transpose(-2, -1) + bias
        logits_s = (q_s * self.scale) @ k_s.transpose(-2, -1) + bias
        diff = logits_s - logits_o
        logits_o = logits_o + diff * torch.sigmoid(self.logit_gate(diff))
        out = []
        for logits, v, proj in ((logits_o, v_o, self.proj_opt), (logits_s, v_s, self.proj_sar)):
            if mask is not None:  # (nW, N, N), the same for every image of the batch
                mask = mask.to(logits.dtype)
                logits = (logits.view(-1, mask.shape[0], self.heads, length, length) + mask[:, None]).flatten(0, 1)
            attn = logits.softmax(dim=-1).to(v.dtype)
            out.append(proj((attn @ v).transpose(1, 2).reshape(n, length, dim)))
        return out[0], out[1]


class CrossModalSwinLayer(nn.Module):
    """Shifted-window attention + MLP on both streams, ``(B, C, H, W)`` in and out."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.attn = CrossModalWindowAttention(dim, heads, window)
        hidden = int(dim * mlp_ratio)
        self.norm_opt = nn.LayerNorm(dim)
        self.norm_sar = nn.LayerNorm(dim)
        self.mlp_opt = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.mlp_sar = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, h, w = opt.shape
        # A single window per axis has nothing to shift towards (as in Swin).
        shift = self.shift if min(h, w) > self.window else 0
        opt, sar = opt.permute(0, 2, 3, 1), sar.permute(0, 2, 3, 1)  # (B, H, W, C)

        def windows(x: torch.Tensor) -> torch.Tensor:
            return window_partition(torch.roll(x, (-shift, -shift), (1, 2)) if shift else x, self.window)

        def image(t: torch.Tensor) -> torch.Tensor:
            x = window_merge(t, self.window, h, w)
            return torch.roll(x, (shift, shift), (1, 2)) if shift else x

        mask = shifted_window_mask(h, w, self.window, shift, opt.device) if shift else None
        att_o, att_s = self.attn(windows(opt), windows(sar), mask)
        opt = opt + self.drop_path(image(att_o))
        sar = sar + self.drop_path(image(att_s))
        opt = opt + self.drop_path(self.mlp_opt(self.norm_opt(opt)))
        sar = sar + self.drop_path(self.mlp_sar(self.norm_sar(sar)))
        return opt.permute(0, 3, 1, 2), sar.permute(0, 3, 1, 2)


class DualResidualDenseBlock(nn.Module):
    """Residual dense block run on both streams, each layer followed by cross-modal window attention."""

    def __init__(
        self, features: int, growth: int, layers: int, heads: int, window: int, mlp_ratio: float, drop_path: list[float]
    ) -> None:
        super().__init__()

        def conv(i: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(features + i * growth, growth, 3, padding=1), nn.ReLU(True))

        self.convs_opt = nn.ModuleList(conv(i) for i in range(layers))
        self.convs_sar = nn.ModuleList(conv(i) for i in range(layers))
        self.attention = nn.ModuleList(
            CrossModalSwinLayer(growth, heads, window, window // 2 if i % 2 else 0, mlp_ratio, drop_path[i])
            for i in range(layers)
        )
        self.local_fusion_opt = nn.Conv2d(features + layers * growth, features, 3, padding=1)
        self.local_fusion_sar = nn.Conv2d(features + layers * growth, features, 3, padding=1)

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dense_o, dense_s = [opt], [sar]
        for conv_o, conv_s, attention in zip(self.convs_opt, self.convs_sar, self.attention, strict=True):
            new_o, new_s = attention(conv_o(torch.cat(dense_o, 1)), conv_s(torch.cat(dense_s, 1)))
            dense_o.append(new_o)
            dense_s.append(new_s)
        return opt + self.local_fusion_opt(torch.cat(dense_o, 1)), sar + self.local_fusion_sar(torch.cat(dense_s, 1))


def dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Filter every pixel and channel of ``x`` ``(B, C, H, W)`` with its own ``size×size`` kernel.

    ``kernels`` is ``(B, C · size², H, W)``, channel-major (kernel taps of channel c at ``c·size² … (c+1)·size² − 1``,
    row-major); zero padding. Shifted multiply-adds keep memory at one extra feature map.
    """
    b, c, h, w = x.shape
    kernels = kernels.view(b, c, size * size, h, w)
    padded = F.pad(x, (size // 2,) * 4)
    out = torch.zeros_like(x)
    for dy in range(size):
        for dx in range(size):
            out = out + padded[:, :, dy : dy + h, dx : dx + w] * kernels[:, :, dy * size + dx]
    return out


class DynamicFilterFusion(nn.Module):
    """SAR→optical fusion: SAR features filtered by kernels predicted from both streams, then gated exchange."""

    def __init__(self, features: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.kernel_net = nn.Sequential(
            nn.Conv2d(2 * features, features, 3, padding=1),
            nn.ReLU(True),
            ResidualBlock(features),
            ResidualBlock(features),
            nn.Conv2d(features, features * kernel * kernel, 1),
        )
        self.gate_opt = nn.Conv2d(features, features, 1)
        self.gate_sar = nn.Conv2d(features, features, 1)

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filtered = dynamic_filter(sar, self.kernel_net(torch.cat([opt, sar], 1)), self.kernel)
        opt = opt + (filtered - opt) * torch.sigmoid(self.gate_opt(filtered - opt))
        sar = sar + (opt - filtered) * torch.sigmoid(self.gate_sar(opt - filtered))
        return opt, sar


class CARF(nn.Module):
    """CARF generator.

    Parameters
    ----------
    features : base width of both streams (96).
    growth : channels each dense layer adds (48).
    blocks, layers : residual dense blocks (6) and layers per block (5).
    heads, window : attention heads (8) and window side in feature pixels (8; shift = window / 2 on odd layers).
    kernel : side of the dynamic filters (5).
    mlp_ratio : hidden width of the attention MLP relative to ``growth`` (2).
    drop_path : stochastic depth of the last layer, rising linearly from 0 (0.2).

    ``forward(x)``: ``(B, 15, H, W)`` = 13 optical bands then VV, VH on the unit scale, H and W multiples of
    2 × window; returns ``(B, 13, H, W)`` on the same scale.
    """

    def __init__(
        self,
        features: int = 96,
        growth: int = 48,
        blocks: int = 6,
        layers: int = 5,
        heads: int = 8,
        window: int = 8,
        kernel: int = 5,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.2,
    ) -> None:
        super().__init__()
        if growth % heads:
            raise ValueError(f"growth: expected a multiple of heads={heads}, found {growth}")
        n_opt, n_sar = len(S2_BAND_NAMES), len(S1_POLARIZATIONS)
        self.shallow1_opt = nn.Conv2d(4 * n_opt, features, 5, padding=2)
        self.shallow2_opt = nn.Conv2d(features, features, 3, padding=1)
        self.shallow_sar = nn.Sequential(
            nn.Conv2d(4 * n_sar, features, 5, padding=2), nn.Conv2d(features, features, 3, padding=1)
        )
        n = blocks * layers
        rates = [drop_path * i / max(n - 1, 1) for i in range(n)]
        self.blocks = nn.ModuleList(
            DualResidualDenseBlock(
                features, growth, layers, heads, window, mlp_ratio, rates[i * layers : (i + 1) * layers]
            )
            for i in range(blocks)
        )
        self.fusions = nn.ModuleList(DynamicFilterFusion(features, kernel) for _ in range(blocks))
        self.global_fusion = nn.Sequential(
            nn.Conv2d(blocks * features, features, 1), nn.Conv2d(features, features, 3, padding=1)
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(features, 4 * _UP_WIDTH, 3, padding=1),
            nn.PixelShuffle(2),
            nn.Conv2d(_UP_WIDTH, n_opt, 3, padding=1),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                nn.init.zeros_(m.bias)
        # Every attention layer reaches across a window (2·window input px); the chain spans any training tile.
        self.spec = ModelSpec(
            optical_bands=S2_BAND_NAMES,
            sar=S1_POLARIZATIONS,
            output_bands=S2_BAND_NAMES,
            normalization="unit",
            input_order=S2_BAND_NAMES + S1_POLARIZATIONS,
            size_multiple=2 * window,
            halo=halo_from_radius(blocks * layers * 2 * window, multiple=2 * window),
            residual=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels, self.spec.size_multiple)
        optical, sar = x[:, : len(S2_BAND_NAMES)], x[:, len(S2_BAND_NAMES) :]
        shallow = self.shallow1_opt(F.pixel_unshuffle(optical, 2))
        opt = self.shallow2_opt(shallow)
        sar = self.shallow_sar(F.pixel_unshuffle(sar, 2))
        outputs = []
        for block, fusion in zip(self.blocks, self.fusions, strict=True):
            opt, sar = fusion(*block(opt, sar))
            outputs.append(opt)
        return optical + self.upsample(self.global_fusion(torch.cat(outputs, 1)) + shallow)
