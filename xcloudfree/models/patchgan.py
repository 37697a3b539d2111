"""70×70 PatchGAN discriminator (pix2pix / CycleGAN), optionally spectrally normalised (cyclecr).

::

    C64  Conv4×4/2 → LeakyReLU(0.2)                 no norm
    C128 Conv4×4/2 → norm → LeakyReLU(0.2)
    C256 Conv4×4/2 → norm → LeakyReLU(0.2)
    C512 Conv4×4/1 → norm → LeakyReLU(0.2)
    Conv4×4/1 → 1 logit per patch                     padding 1 everywhere

A 256² input gives a 30×30 logit map; every logit sees 70×70 input pixels. The input is the condition (the
generator's input channels) followed by the real or generated image: 5 + 3 = 8 channels for pix2pix5 (2,770,753
parameters). The output is a logit; the sigmoid belongs to the loss (``BCEWithLogitsLoss``) or is absent (LSGAN).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .layers import check_input, init_gan_weights, norm_layer
from .spec import ModelSpec, halo_from_radius

__all__ = ["PatchGAN"]


class PatchGAN(nn.Module):
    """PatchGAN discriminator.

    Parameters
    ----------
    in_channels : condition channels + image channels.
    n_layers : stride-2 layers after the first (3 → the 70×70 PatchGAN).
    ndf : width of the first layer; doubles per layer up to 8·ndf.
    norm : ``"batch"`` (pix2pix), ``"instance"`` (CycleGAN) or ``"none"``.
    spectral_norm : wrap every conv in spectral normalisation (adds no parameters).

    ``forward(x)``: ``(B, in_channels, H, W)`` → logits ``(B, 1, H', W')`` (30×30 for 256² and n_layers=3).
    """

    def __init__(
        self, in_channels: int = 8, n_layers: int = 3, ndf: int = 64, norm: str = "batch", spectral_norm: bool = False
    ) -> None:
        super().__init__()
        bias = norm != "batch"
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        widths = [min(ndf * 2**i, ndf * 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [sn(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [
                sn(nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1, bias=bias)),
                norm_layer(norm, widths[i]),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.layers = nn.Sequential(*layers)
        # Receptive field: two stride-1 4×4 convs at stride 2**n_layers and n_layers stride-2 ones below them.
        field = 1 + 3 * 2 * 2**n_layers + 3 * (2**n_layers - 1)
        self.spec = ModelSpec(
            optical_bands=(),
            sar=(),
            output_bands=("logit",),
            normalization="tanh",
            input_order=tuple(f"channel{i}" for i in range(in_channels)),
            size_multiple=1,
            halo=halo_from_radius(field // 2),
            role="discriminator",
        )
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels)
        return self.layers(x)
