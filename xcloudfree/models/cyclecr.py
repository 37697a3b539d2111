"""cyclecr (Ebel et al. 2021): a cycle-consistent GAN conditioned on a continuous cloud map.

::

    G_S1→S2   x = [VV, VH, mean(VV,VH) | cloudy B04, B03, B02 | cloud map m]   (B, 7, H, W), tanh scale, m in [0, 1]
              ResNet-9 generator (instance norm, no output activation) → S2_res (3)
              Ŝ2 = tanh(atanh(S2_cloudy) + S2_res)                 long skip in the atanh domain
              m̂  = σ(Conv3×3(S2_res))                               cloud-map regression head (auxiliary loss)
    G_S2→S1   ResNet-9 CycleGAN generator: cloudy B04, B03, B02 → VV, VH, mean(VV,VH), tanh
    D_S2      70×70 PatchGAN with spectral normalisation on [B04, B03, B02, m]
    D_S1      70×70 PatchGAN with spectral normalisation on [VV, VH, mean(VV,VH)]

The third S1 channel is the mean of the normalised VV and VH. ``atanh`` of the cloudy input is taken after clamping
it to ±(1 − 1e-4): saturated pixels (DN 10000 → 1.0) would otherwise be infinite. The regression head ends in a
sigmoid so that m̂ lives where m does. Spectral normalisation replaces the discriminators' norm layers (it already
bounds each layer; instance norm on top would undo that), a choice the paper leaves open.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sensors import S1_POLARIZATIONS, S2_RGB
from .layers import ResnetGenerator, check_input, init_gan_weights
from .patchgan import PatchGAN
from .spec import CLOUD_MAP, SAR_MEAN, ModelSpec, halo_from_radius

__all__ = ["CycleCRGenerator", "SARGenerator", "discriminator"]

#: The three S1 channels of the method.
S1_CHANNELS: tuple[str, ...] = S1_POLARIZATIONS + (SAR_MEAN,)
_EPS = 1e-4


class CycleCRGenerator(nn.Module):
    """G_S1→S2, the network used for cloud removal.

    Parameters
    ----------
    ngf : width of the first layer (64).
    n_blocks : residual blocks (9).

    ``forward(x, return_cloud_map=False)``: ``x`` is ``(B, 7, H, W)`` in ``spec.input_order``, H and W multiples of
    4; returns Ŝ2 ``(B, 3, H, W)`` in [-1, 1], and with ``return_cloud_map`` also m̂ ``(B, 1, H, W)`` in [0, 1].
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        self.spec = ModelSpec(
            optical_bands=S2_RGB,
            sar=S1_POLARIZATIONS,
            sar_mean=True,
            cloud_map=True,
            output_bands=S2_RGB,
            normalization="tanh",
            input_order=S1_CHANNELS + S2_RGB + (CLOUD_MAP,),
            size_multiple=4,
            halo=halo_from_radius(ResnetGenerator.receptive_radius(n_blocks) + 1),
            residual=True,
        )
        self.generator = ResnetGenerator(self.spec.in_channels, len(S2_RGB), ngf, n_blocks, "instance", tanh=False)
        self.cloud_head = nn.Sequential(nn.Conv2d(len(S2_RGB), 1, 3, padding=1), nn.Sigmoid())
        init_gan_weights(self)

    def forward(
        self, x: torch.Tensor, return_cloud_map: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.spec.in_channels, self.spec.size_multiple)
        start = len(S1_CHANNELS)
        cloudy = x[:, start : start + len(S2_RGB)]
        residual = self.generator(x)
        out = torch.tanh(torch.atanh(cloudy.clamp(-1 + _EPS, 1 - _EPS)) + residual)
        return (out, self.cloud_head(residual)) if return_cloud_map else out


class SARGenerator(ResnetGenerator):
    """G_S2→S1: ResNet-9 CycleGAN generator, cloudy RGB → VV, VH, mean(VV,VH) on the tanh scale.

    ``forward(x)``: ``(B, 3, H, W)``, H and W multiples of 4 → ``(B, 3, H, W)`` in [-1, 1].
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__(len(S2_RGB), len(S1_CHANNELS), ngf, n_blocks, "instance")
        self.spec = ModelSpec(
            optical_bands=S2_RGB,
            sar=(),
            output_bands=S1_CHANNELS,
            normalization="tanh",
            input_order=S2_RGB,
            size_multiple=4,
            halo=halo_from_radius(ResnetGenerator.receptive_radius(n_blocks)),
        )
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels, self.spec.size_multiple)
        return super().forward(x)


def discriminator(domain: str = "s2", n_layers: int = 3, ndf: int = 64) -> PatchGAN:
    """D_S2 (``domain="s2"``: RGB + cloud map, 4 channels) or D_S1 (``"s1"``: 3 channels), spectrally normalised."""
    channels = {"s2": len(S2_RGB) + 1, "s1": len(S1_CHANNELS)}
    if domain not in channels:
        raise ValueError(f"domain: expected 's2' or 's1', found {domain!r}")
    return PatchGAN(channels[domain], n_layers=n_layers, ndf=ndf, norm="none", spectral_norm=True)
