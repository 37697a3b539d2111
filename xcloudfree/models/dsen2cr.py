"""DSen2-CR (Meraner et al. 2020): a deep residual network that predicts the correction of the cloudy image.

::

    x = [cloudy S2 (13 bands), S1 (VV, VH)]                       (B, 15, H, W), dsen2cr scaling
    Conv3×3(F) → ReLU
    B × [Conv3×3(F) → ReLU → Conv3×3(F) → ×0.1 → + input]       no normalisation, no activation after the add
    Conv3×3(13)
    + cloudy S2                                                  long skip: the network learns a residual

Stride 1 and zero padding throughout: fully convolutional, any height and width. With F = 256 and B = 16 (the paper)
the network has 18,947,341 parameters; ``sar=False`` gives the 13-channel optical-only variant.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sensors import S1_POLARIZATIONS, S2_BAND_NAMES
from .layers import ResidualBlock, check_input
from .spec import ModelSpec, halo_from_radius

__all__ = ["DSen2CR"]


class DSen2CR(nn.Module):
    """DSen2-CR generator.

    Parameters
    ----------
    features : width F of every hidden layer.
    blocks : number B of residual blocks.
    sar : take S1 VV and VH after the 13 optical bands (15 input channels) or not (13).

    ``forward(x)``: ``x`` is ``(B, 15 or 13, H, W)`` in ``spec.input_order`` (optical first), any H and W;
    returns ``(B, 13, H, W)`` on the same (dsen2cr, S2 / 2000) scale.
    """

    def __init__(self, features: int = 256, blocks: int = 16, sar: bool = True) -> None:
        super().__init__()
        n_optical = len(S2_BAND_NAMES)
        polarizations = S1_POLARIZATIONS if sar else ()
        self.head = nn.Sequential(nn.Conv2d(n_optical + len(polarizations), features, 3, padding=1), nn.ReLU(True))
        self.blocks = nn.Sequential(*(ResidualBlock(features, scale=0.1) for _ in range(blocks)))
        self.tail = nn.Conv2d(features, n_optical, 3, padding=1)
        # One 3×3 conv in the head, two per block, one in the tail: each sees one more pixel on every side.
        radius = 1 + 2 * blocks + 1
        self.spec = ModelSpec(
            optical_bands=S2_BAND_NAMES,
            sar=polarizations,
            output_bands=S2_BAND_NAMES,
            normalization="dsen2cr",
            input_order=S2_BAND_NAMES + polarizations,
            size_multiple=1,
            halo=halo_from_radius(radius),
            residual=True,
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # Keras he_uniform: U(±sqrt(6 / fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels)
        cloudy = x[:, : len(S2_BAND_NAMES)]
        return cloudy + self.tail(self.blocks(self.head(x)))
