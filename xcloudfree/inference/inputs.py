"""Build a network's input from a scene by its :class:`~xcloudfree.models.spec.ModelSpec`, and undo the scaling.

Users hand over physical values (S2 DN, S1 dB, DEM metres, a cloud map in [0, 1]); the spec says which channels,
in which order, on which preset's scale. Everything stays lazy on Dask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..sensors import denormalize_s1, denormalize_s2, harmonize_s2, normalize_s1, normalize_s2, preset_range

__all__ = ["model_input", "denormalize_output", "required_variables"]


def required_variables(spec: Any) -> list[str]:
    """Scene variables a network needs: ``s2``, ``s1``, ``dem``, ``cloud_map``."""
    need = []
    if spec.optical_bands:
        need.append("s2")
    if spec.sar or spec.sar_mean:
        need.append("s1")
    if spec.dem:
        need.append("dem")
    if spec.cloud_map:
        need.append("cloud_map")
    return need


def model_input(scene: xr.Dataset, spec: Any, cloud_map: xr.DataArray | None = None) -> xr.DataArray:
    """The network input ``(channel, y, x)`` float32 in ``spec.input_order``, on the spec's scale.

    Parameters
    ----------
    scene : Dataset with the variables the spec needs (``s2`` DN, ``s1`` dB, ``dem`` m)
    spec : the model's ModelSpec
    cloud_map : (y, x) in [0, 1], for networks conditioned on a cloud map (else ``scene["cloud_map"]``)

    Raises
    ------
    ValueError naming the missing variable, band or polarisation.
    """
    from ..models.spec import CLOUD_MAP, DEM, SAR_MEAN

    preset = spec.normalization
    channels: dict[str, xr.DataArray] = {}
    if spec.optical_bands:
        s2 = _variable(scene, "s2", "the cloudy Sentinel-2 image (band, y, x) in DN")
        _require_labels(s2, "band", spec.optical_bands, "s2")
        s2 = normalize_s2(harmonize_s2(s2.sel(band=list(spec.optical_bands))).astype("float32"), preset)
        channels.update({str(b): s2.sel(band=b, drop=True) for b in spec.optical_bands})
    if spec.sar or spec.sar_mean:
        s1 = _variable(scene, "s1", "Sentinel-1 backscatter (polarization, y, x) in dB")
        pols = tuple(spec.sar) or ("VV", "VH")
        _require_labels(s1, "polarization", pols, "s1")
        s1 = normalize_s1(s1.sel(polarization=list(pols)).astype("float32"), preset)
        channels.update({str(p): s1.sel(polarization=p, drop=True) for p in pols})
        if spec.sar_mean:
            channels[SAR_MEAN] = (s1.sel(polarization="VV", drop=True) + s1.sel(polarization="VH", drop=True)) / 2
    if spec.dem:
        dem = _variable(scene, "dem", "a DEM (y, x) in metres")
        lo, hi = spec.dem_range
        start, end = preset_range(preset)
        channels[DEM] = (dem.astype("float32").clip(lo, hi) - lo) * ((end - start) / (hi - lo)) + start
    if spec.cloud_map:
        cmap = cloud_map if cloud_map is not None else scene.get("cloud_map")
        if cmap is None:
            raise ValueError(
                "cloud_map: expected a (y, x) cloud map in [0, 1] for this model (pass mask=... or a 'cloud_map' "
                "variable), found none"
            )
        channels[CLOUD_MAP] = cmap.astype("float32")
    stacked = xr.concat(
        [channels[c].drop_vars("spatial_ref", errors="ignore") for c in spec.input_order],
        dim="channel",
        coords="minimal",
        compat="override",
    )
    stacked = stacked.assign_coords(channel=list(spec.input_order)).transpose("channel", "y", "x")
    return stacked.astype(np.float32)


def denormalize_output(values: Any, spec: Any) -> Any:
    """Network output (channel, ...) → S2 DN (or S1 dB for SAR outputs), by the spec's preset."""
    preset = spec.normalization
    bands = list(spec.output_bands)
    if all(b in ("VV", "VH") for b in bands):
        return denormalize_s1(values, preset, polarizations=tuple(bands))
    return denormalize_s2(values, preset)


def _variable(scene: xr.Dataset, name: str, what: str) -> xr.DataArray:
    if name not in scene:
        raise ValueError(f"{name}: the model needs {what}; expected it in the scene, found {list(scene.data_vars)}")
    return scene[name]


def _require_labels(da: xr.DataArray, dim: str, needed: tuple[str, ...], name: str) -> None:
    have = [str(v) for v in da[dim].values]
    missing = [n for n in needed if n not in have]
    if missing:
        raise ValueError(f"{name}: the model needs {dim} {missing}; expected {list(needed)}, found {have}")
