"""pix2pix U-Net generator ("unet_256", Isola et al. 2017), as used by pix2pix5 (Ledermann 2026).

::

    encoder  d1 Conv4×4/2 (64)                      no norm
             d2..d8 LeakyReLU(0.2) → Conv4×4/2 → BN  widths 128, 256, 512, 512, 512, 512, 512 (no BN on d8)
    decoder  u8 ReLU → ConvT4×4/2 (512) → BN         from d8
             u7..u2 ReLU → ConvT4×4/2 → BN [→ Dropout(0.5) on the three 512-wide blocks outside the innermost]
                    each from concat(previous up, matching down)
             u1 ReLU → ConvT4×4/2 (out) → Tanh

Convs have no bias where BatchNorm is used (the reference code drops it on every conv but the last). The input side
must be a multiple of ``2 ** num_downs`` (256 for the default). Default: pix2pix5, VV, VH, B04, B03, B02 → B04, B03,
B02 on the tanh scale, 54,416,003 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sensors import S1_POLARIZATIONS, S2_BAND_NAMES, S2_RGB
from .layers import check_input, init_gan_weights, norm_layer
from .spec import ModelSpec, halo_from_radius

__all__ = ["UNetGenerator", "pix2pix_spec"]

#: Band layouts by (in_channels, out_channels): (optical bands, SAR polarisations, input order, output bands).
_LAYOUTS: dict[tuple[int, int], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    (3, 3): (S2_RGB, (), S2_RGB, S2_RGB),
    (5, 3): (S2_RGB, S1_POLARIZATIONS, S1_POLARIZATIONS + S2_RGB, S2_RGB),  # pix2pix5: SAR first
    (5, 13): (S2_RGB, S1_POLARIZATIONS, S1_POLARIZATIONS + S2_RGB, S2_BAND_NAMES),
    (13, 13): (S2_BAND_NAMES, (), S2_BAND_NAMES, S2_BAND_NAMES),
    (15, 13): (S2_BAND_NAMES, S1_POLARIZATIONS, S2_BAND_NAMES + S1_POLARIZATIONS, S2_BAND_NAMES),  # dsen2cr baseline
}


def pix2pix_spec(in_channels: int, out_channels: int, size_multiple: int, halo: int) -> ModelSpec:
    """Spec of a pix2pix-style generator from its channel counts (see ``_LAYOUTS``), tanh scaling."""
    if (in_channels, out_channels) not in _LAYOUTS:
        raise ValueError(
            f"in_channels, out_channels: expected one of the band layouts {sorted(_LAYOUTS)}, "
            f"found {(in_channels, out_channels)}"
        )
    optical, sar, order, output = _LAYOUTS[in_channels, out_channels]
    return ModelSpec(
        optical_bands=optical,
        sar=sar,
        output_bands=output,
        normalization="tanh",
        input_order=order,
        size_multiple=size_multiple,
        halo=halo,
    )


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator.

    Parameters
    ----------
    in_channels, out_channels : 5 → 3 (pix2pix5), 3 → 3, 5 → 13, 13 → 13 or 15 → 13 (the dsen2cr-paper baseline).
    num_downs : stride-2 levels; input sides must be multiples of ``2 ** num_downs``.
    ngf : width of the outermost level; widths double per level up to 8·ngf.
    norm : ``"batch"`` (pix2pix) or ``"instance"``.
    dropout : dropout probability in the innermost 8·ngf up-blocks (0.5 in pix2pix; 0 disables).

    ``forward(x)``: ``(B, in_channels, H, W)`` in ``spec.input_order`` on the tanh scale → ``(B, out_channels, H, W)``
    in [-1, 1].
    """

    def __init__(
        self,
        in_channels: int = 5,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs: expected at least 5 stride-2 levels, found {num_downs}")
        bias = norm != "batch"
        widths = [min(ngf * 2**i, ngf * 8) for i in range(num_downs)]
        self.down = nn.ModuleList([nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias)])
        for level in range(1, num_downs):
            innermost = level == num_downs - 1
            self.down.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2, True),
                    nn.Conv2d(widths[level - 1], widths[level], 4, 2, 1, bias=bias),
                    nn.Identity() if innermost else norm_layer(norm, widths[level]),
                )
            )
        # up[level] mirrors down[level]; the innermost sees only its own down output, the others a concatenation.
        self.up = nn.ModuleList()
        for level in range(num_downs - 1, 0, -1):
            in_width = widths[level] * (1 if level == num_downs - 1 else 2)
            drop = dropout if 4 <= level < num_downs - 1 and dropout > 0 else None
            self.up.append(
                nn.Sequential(
                    nn.ReLU(True),
                    nn.ConvTranspose2d(in_width, widths[level - 1], 4, 2, 1, bias=bias),
                    norm_layer(norm, widths[level - 1]),
                    nn.Dropout(drop) if drop else nn.Identity(),
                )
            )
        self.up.append(
            nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1), nn.Tanh())
        )
        # The receptive field of the deepest level covers the whole 2**num_downs input.
        self.spec = pix2pix_spec(in_channels, out_channels, 2**num_downs, halo_from_radius(3 * (2**num_downs - 1)))
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels, self.spec.size_multiple)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](skips.pop())
        for block in self.up[1:]:
            x = block(torch.cat([x, skips.pop()], dim=1))
        return x
