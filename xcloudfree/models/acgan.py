"""Attention cGAN (Nhemaphuki, Thapa, Bhurtyal): SAR, optical and DEM in, the four 10 m optical bands out.

The paper names the parts (encoder → attention module → residual blocks → decoder → output activation; a
discriminator of convolutional encoder blocks with LeakyReLU ending in a logit) but not every layer. Our choices:

::

    x = [VV, VH | B04, B03, B02, B08 | DEM]           early fusion; variant S, SD, SO or SOD picks the groups
    encoder   Conv7×7 (64) → 2 × stride-2 Conv3×3 (128, 256), instance norm + ReLU each
    attention CBAM (channel attention from average- and max-pooled MLP, then 7×7 spatial attention)
    9 × residual block [Conv3×3 → IN → ReLU → Conv3×3 → IN → CBAM] + input, reflection padding
    decoder   2 × stride-2 transposed Conv3×3 (128, 64), IN + ReLU → Conv7×7 (4) → tanh
    → B04, B03, B02, B08 on the tanh scale

Init N(0, 0.02) as pix2pix. Instance rather than batch normalisation because the paper trains with batch size 2.
The discriminator is the 70×70 PatchGAN (:mod:`.patchgan`) on the generator input followed by the four output bands;
it returns logits and the sigmoid is part of the BCE-with-logits loss. Inputs are on the tanh scale; the DEM (metres)
is clipped to ``DEM_RANGE`` and mapped onto [-1, 1].
"""

from __future__ import annotations

import torch

from ..sensors import S1_POLARIZATIONS
from .layers import ResnetGenerator, check_input, init_gan_weights
from .patchgan import PatchGAN
from .spec import DEM, ModelSpec, halo_from_radius

__all__ = ["ACGANGenerator", "BANDS", "DEM_RANGE", "VARIANTS", "discriminator"]

#: Optical bands the method uses, as input (variants with O) and as output.
BANDS: tuple[str, ...] = ("B04", "B03", "B02", "B08")
#: Elevation range (m) mapped onto the network's range: below the Dead Sea shore to above Everest.
DEM_RANGE: tuple[float, float] = (-500.0, 9000.0)
VARIANTS: tuple[str, ...] = ("S", "SD", "SO", "SOD")


def _spec(inputs: str, halo: int) -> ModelSpec:
    """Spec of the generator for a variant: S = SAR, O = optical, D = DEM, in that channel order."""
    if inputs not in VARIANTS:
        raise ValueError(f"inputs: expected one of {list(VARIANTS)}, found {inputs!r}")
    optical = BANDS if "O" in inputs else ()
    dem = "D" in inputs
    return ModelSpec(
        optical_bands=optical,
        sar=S1_POLARIZATIONS,
        output_bands=BANDS,
        normalization="tanh",
        input_order=S1_POLARIZATIONS + optical + (DEM,) * dem,
        dem=dem,
        dem_range=DEM_RANGE if dem else None,
        size_multiple=4,
        halo=halo,
    )


class ACGANGenerator(ResnetGenerator):
    """Attention cGAN generator.

    Parameters
    ----------
    inputs : ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"`` (SAR, + DEM, + optical, + both).
    ngf : width of the first layer (64); the residual blocks run at 4·ngf.
    n_blocks : residual blocks (9).

    ``forward(x)``: ``(B, C, H, W)`` in ``spec.input_order``, H and W multiples of 4 → ``(B, 4, H, W)`` in [-1, 1].
    """

    def __init__(self, inputs: str = "SOD", ngf: int = 64, n_blocks: int = 9) -> None:
        spec = _spec(inputs, halo_from_radius(ResnetGenerator.receptive_radius(n_blocks)))
        super().__init__(spec.in_channels, spec.out_channels, ngf, n_blocks, norm="instance", attention=True)
        self.spec = spec
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.spec.in_channels, self.spec.size_multiple)
        return super().forward(x)


def discriminator(inputs: str = "SOD", n_layers: int = 3, ndf: int = 64) -> PatchGAN:
    """The acgan discriminator: PatchGAN on the generator input of variant ``inputs`` + the 4 output bands."""
    condition = _spec(inputs, 0).in_channels
    return PatchGAN(condition + len(BANDS), n_layers=n_layers, ndf=ndf, norm="batch")
