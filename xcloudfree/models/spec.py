"""What a network eats and returns: the :class:`ModelSpec` that tiled inference reads to build inputs and undo scaling.

Channel names: Sentinel-2 bands by their names (``xcloudfree.sensors.S2_BAND_NAMES``), Sentinel-1 polarisations
(``"VV"``, ``"VH"``), and three derived channels:

- :data:`SAR_MEAN` ``"mean(VV,VH)"``: the mean of the *normalised* VV and VH channels (cyclecr's third S1 channel);
- :data:`DEM`: elevation in metres, clipped to ``dem_range`` and mapped linearly onto the preset's S2 range;
- :data:`CLOUD_MAP`: a continuous cloud map in [0, 1], passed through unscaled.

Halo rule (:func:`halo_from_radius`): the receptive radius r of an output pixel (pixels of input it can see on each
side), rounded up to a multiple of 8 (16 for window attention, whose windows must stay aligned), at most 64 px
(a quarter of the 256 px training patches). Networks whose receptive field spans the whole training patch (U-Net,
window-attention chains, ResNet generators) get the cap: the tile is the context they were trained with.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from ..checks import check_int, describe
from ..sensors import PRESETS, S1_POLARIZATIONS, S2_BAND_NAMES

__all__ = ["CLOUD_MAP", "DEM", "SAR_MEAN", "ModelSpec", "halo_from_radius"]

SAR_MEAN = "mean(VV,VH)"
DEM = "DEM"
CLOUD_MAP = "cloud_map"

#: Most overlap a tile ever needs (px): a quarter of the 256 px patches all networks were trained on.
HALO_CAP = 64
_ROLES = ("generator", "discriminator")


def halo_from_radius(radius: int, multiple: int = 8, cap: int = HALO_CAP) -> int:
    """Tile overlap (px) for a receptive radius of ``radius`` px: rounded up to ``multiple``, at most ``cap``.

    >>> from xcloudfree.models import halo_from_radius
    >>> halo_from_radius(34), halo_from_radius(34, multiple=16), halo_from_radius(500)
    (40, 48, 64)
    """
    return min(int(math.ceil(radius / multiple)) * multiple, cap)


@dataclass(frozen=True)
class ModelSpec:
    """Inputs, outputs and size rules of a network.

    Attributes
    ----------
    optical_bands : S2 band names the network reads from the (cloudy) optical image.
    sar : S1 polarisations it reads, e.g. ``("VV", "VH")``; empty for optical-only networks.
    output_bands : names of the output channels (S2 bands; S1 names for SAR generators; a logit for discriminators).
    normalization : preset of :mod:`xcloudfree.sensors` used for inputs and outputs (``dsen2cr``, ``unit``, ``tanh``).
    input_order : channel order of the single input tensor ``forward(x)`` takes.
    sar_mean : whether :data:`SAR_MEAN` is an input channel.
    dem, cloud_map : whether :data:`DEM` / :data:`CLOUD_MAP` are input channels.
    dem_range : (min, max) elevation in metres mapped onto the preset's range; ``None`` without a DEM.
    size_multiple : input height and width must be multiples of this (px).
    halo : overlap (px) tiled inference must give each tile side (see :func:`halo_from_radius`).
    residual : the output is the optical input plus a predicted residual (output bands ⊆ optical bands).
    role : ``"generator"`` (image in, image out) or ``"discriminator"`` (channels are the caller's, logits out).

    Examples
    --------
    >>> from xcloudfree.models import ModelSpec
    >>> rgb = ("B04", "B03", "B02")
    >>> spec = ModelSpec(optical_bands=rgb, sar=("VV", "VH"), output_bands=rgb, normalization="tanh",
    ...                  input_order=("VV", "VH", *rgb), halo=16)
    >>> spec.channels(), spec.in_channels, spec.out_channels
    (('B04', 'B03', 'B02', 'VV', 'VH'), 5, 3)
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    >>> ModelSpec(optical_bands=rgb, sar=(), output_bands=rgb, normalization="tanh", input_order=("B04",))
    Traceback (most recent call last):
    ValueError: spec.input_order: expected an ordering of the input channels ['B02', 'B03', 'B04'], found ['B04']
    """

    optical_bands: tuple[str, ...]
    sar: tuple[str, ...]
    output_bands: tuple[str, ...]
    normalization: str
    input_order: tuple[str, ...]
    sar_mean: bool = False
    dem: bool = False
    cloud_map: bool = False
    dem_range: tuple[float, float] | None = None
    size_multiple: int = 1
    halo: int = 0
    residual: bool = False
    role: str = "generator"

    def __post_init__(self) -> None:
        for name in ("optical_bands", "sar", "output_bands", "input_order"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ValueError(f"spec.{name}: expected a list of channel names, found {describe(value)}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.dem_range is not None:
            if isinstance(self.dem_range, str) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in self.dem_range
            ):
                raise ValueError(f"spec.dem_range: expected (min, max) metres, found {describe(self.dem_range)}")
            object.__setattr__(self, "dem_range", tuple(float(v) for v in self.dem_range))
        self._validate()

    def _validate(self) -> None:
        # Types first: a checkpoint's JSON may hold anything, and a comparison with a string would raise TypeError.
        check_int("spec.size_multiple", self.size_multiple, minimum=1)
        check_int("spec.halo", self.halo, minimum=0)
        for name in ("sar_mean", "dem", "cloud_map", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"spec.{name}: expected true or false, found {describe(getattr(self, name))}")
        for name in ("normalization", "role"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"spec.{name}: expected a string, found {describe(getattr(self, name))}")
        unknown = [b for b in self.optical_bands if b not in S2_BAND_NAMES]
        if unknown:
            raise ValueError(f"spec.optical_bands: expected Sentinel-2 names {list(S2_BAND_NAMES)}, found {unknown}")
        unknown = [p for p in self.sar if p not in S1_POLARIZATIONS]
        if unknown:
            raise ValueError(f"spec.sar: expected polarisations from {list(S1_POLARIZATIONS)}, found {unknown}")
        if self.normalization not in PRESETS:
            raise ValueError(f"spec.normalization: expected one of {list(PRESETS)}, found {self.normalization!r}")
        if self.role not in _ROLES:
            raise ValueError(f"spec.role: expected one of {list(_ROLES)}, found {self.role!r}")
        if self.size_multiple < 1 or self.halo < 0:
            raise ValueError(
                f"spec.size_multiple / spec.halo: expected >= 1 and >= 0, found {self.size_multiple} and {self.halo}"
            )
        if self.dem and (self.dem_range is None or len(self.dem_range) != 2 or self.dem_range[0] >= self.dem_range[1]):
            raise ValueError(f"spec.dem_range: expected (min, max) metres with min < max, found {self.dem_range!r}")
        if self.role == "discriminator":
            return
        expected = sorted(self.channels())
        if sorted(self.input_order) != expected:
            raise ValueError(
                f"spec.input_order: expected an ordering of the input channels {expected}, "
                f"found {list(self.input_order)}"
            )
        allowed = set(S2_BAND_NAMES) | set(S1_POLARIZATIONS) | {SAR_MEAN}
        unknown = [b for b in self.output_bands if b not in allowed]
        if unknown:
            raise ValueError(f"spec.output_bands: expected S2 or S1 channel names, found {unknown}")
        if self.residual and not set(self.output_bands) <= set(self.optical_bands):
            raise ValueError(
                f"spec.output_bands: a residual network must output optical input bands {list(self.optical_bands)}, "
                f"found {list(self.output_bands)}"
            )

    def channels(self) -> tuple[str, ...]:
        """The input channels in canonical grouping: optical, SAR, SAR mean, DEM, cloud map."""
        derived = (SAR_MEAN,) * self.sar_mean + (DEM,) * self.dem + (CLOUD_MAP,) * self.cloud_map
        return self.optical_bands + self.sar + derived

    @property
    def in_channels(self) -> int:
        return len(self.input_order)

    @property
    def out_channels(self) -> int:
        return len(self.output_bands)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        extra, missing = sorted(set(data) - known), sorted(required - set(data))
        if extra or missing:
            raise ValueError(f"spec: expected the fields {sorted(known)}, found unknown {extra} and missing {missing}")
        return cls(**data)
