"""Procedural, georeferenced Sentinel-1/2 scenes with known truth, for demos, tests and training.

A land-cover map grows from Perlin noise and a DEM: water in the lowest ground, optional snow on the highest,
forest, urban and bare soil patches, and crops in rectangular field parcels at different growth stages. Each class
has a 13-band L1C top-of-atmosphere spectrum (DN) and a Sentinel-1 VV/VH backscatter (dB, with gamma speckle).
Fractal clouds (thick cores, thin margins, cirrus response in B10) and their shadows, displaced away from the
sun, make the cloudy observation; the clear one is the same ground without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..scene import make_scene
from ..sensors import S1_POLARIZATIONS, S2_BAND_NAMES, db_to_linear, linear_to_db
from .clouds import blend_clouds, cast_shadows, perlin_clouds, perlin_noise

__all__ = ["synthetic_scene", "LAND_COVER", "SPECTRA", "BACKSCATTER"]

#: Land-cover class codes of the ``landcover`` variable.
LAND_COVER: dict[int, str] = {0: "water", 1: "forest", 2: "cropland", 3: "urban", 4: "bare soil", 5: "snow"}

#: Mean L1C TOA DN per class, bands in canonical order (B01 … B12 with B8A after B08).
SPECTRA: dict[str, tuple[float, ...]] = {
    "water": (1300, 1000, 800, 550, 450, 350, 320, 300, 280, 100, 10, 120, 80),
    "forest": (1150, 850, 750, 450, 900, 2000, 2500, 2700, 2850, 700, 12, 1500, 700),
    "crop": (1200, 900, 950, 600, 1200, 2600, 3200, 3400, 3500, 900, 12, 1900, 900),
    "soil": (1350, 1200, 1450, 1750, 1950, 2100, 2250, 2350, 2450, 800, 15, 3000, 2500),
    "urban": (1500, 1400, 1450, 1550, 1650, 1750, 1850, 1900, 1950, 700, 15, 2200, 1900),
    "snow": (8500, 8700, 8600, 8400, 8300, 8100, 7900, 7700, 7500, 3000, 40, 600, 400),
}
#: Mean backscatter (VV, VH) in dB per class; cropland varies with growth between crop and soil.
BACKSCATTER: dict[str, tuple[float, float]] = {
    "water": (-21.0, -28.0),
    "forest": (-7.5, -13.5),
    "crop": (-9.0, -15.0),
    "soil": (-13.0, -20.0),
    "urban": (-2.5, -9.5),
    "snow": (-11.0, -19.0),
}
#: Sensor noise (DN, one standard deviation) per band; the cirrus band sees little signal and little noise.
_NOISE_DN = np.asarray([8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 1.5, 8, 8], np.float32)
_CLASS_KEY = {0: "water", 1: "forest", 3: "urban", 4: "soil", 5: "snow"}
#: Share of direct light a shadow removes per band: diffuse skylight keeps the blue bands brighter.
_SHADOW_DEPTH = np.asarray([0.55, 0.6, 0.65, 0.7, 0.72, 0.75, 0.75, 0.75, 0.75, 0.6, 0.1, 0.75, 0.75], np.float32)


def _parcels(h: int, w: int, rng: np.random.Generator, lo: int = 15, hi: int = 60) -> np.ndarray:
    """Rectangular field parcels (10 m pixels → 150–600 m fields): an id per pixel."""

    def cuts(n: int) -> np.ndarray:
        sizes = rng.integers(lo, hi, size=n // lo + 2)
        return np.searchsorted(np.cumsum(sizes), np.arange(n), side="right")

    rows, cols = cuts(h), cuts(w)
    return rows[:, None] * (cols.max() + 1) + cols[None, :]


def _by_class(landcover: np.ndarray, growth: np.ndarray, table: dict[str, tuple[float, ...]]) -> np.ndarray:
    """Per-pixel values from a class table; cropland mixes crop and soil by the parcel's growth stage."""
    lut = np.zeros((len(table["crop"]), len(LAND_COVER)), np.float32)
    for code, key in _CLASS_KEY.items():
        lut[:, code] = table[key]
    out = np.empty((lut.shape[0], *landcover.shape), np.float32)
    cropland = landcover == 2
    for i, (crop, soil) in enumerate(zip(table["crop"], table["soil"], strict=True)):
        out[i] = np.where(cropland, soil + growth * (crop - soil), lut[i][landcover])
    return out


def _hillshade(dem: np.ndarray, resolution: float, azimuth: float, elevation: float = 45.0) -> np.ndarray:
    dy, dx = np.gradient(dem, resolution)
    slope = np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    shade = np.sin(el) * np.cos(slope) + np.cos(el) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def _scene_shape(size: int | Sequence[int], cloud_cover: float) -> tuple[int, int]:
    """(height, width) in pixels from ``size``, after checking it and ``cloud_cover``."""
    h, w = (int(size), int(size)) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise ValueError(f"size: expected at least 8×8 pixels, found {h}×{w}")
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"cloud_cover: expected a fraction in [0, 1], found {cloud_cover}")
    return h, w


def _terrain(
    h: int, w: int, relief_rng: np.random.Generator, cover_rng: np.random.Generator, snow: bool
) -> tuple[np.ndarray, np.ndarray]:
    """DEM (float32 m: mean 400, standard deviation 180) and land cover (uint8, :data:`LAND_COVER`), both (h, w).

    Water fills the lowest 7 % of the ground, snow (optional) the highest 8 %; elsewhere a second noise field
    splits urban (8 %), bare soil (12 %), cropland (42 %) and forest (38 %).
    """
    big = max(h, w)
    relief = perlin_noise((h, w), relief_rng, scale=max(big / 2, 32.0), octaves=6)
    dem = (400.0 + 180.0 * relief).astype(np.float32)
    cover_noise = perlin_noise((h, w), cover_rng, scale=max(big / 5, 24.0), octaves=4)
    landcover = np.full((h, w), 2, np.uint8)
    q = np.quantile(cover_noise, [0.08, 0.2, 0.62])
    landcover[cover_noise < q[0]] = 3
    landcover[(cover_noise >= q[0]) & (cover_noise < q[1])] = 4
    landcover[cover_noise >= q[2]] = 1
    landcover[relief < np.quantile(relief, 0.07)] = 0
    if snow:
        landcover[relief > np.quantile(relief, 0.92)] = 5
    return dem, landcover


def _surface(
    landcover: np.ndarray,
    dem: np.ndarray,
    parcel_rng: np.random.Generator,
    texture_rng: np.random.Generator,
    *,
    resolution: float,
    sun_azimuth: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clear-sky TOA DN (13, h, w) float32, with the crop growth stage (h, w, 0.25–1) and illumination (h, w).

    Class spectra, crop growth per field parcel, a fine texture (±5 %) and hillshade (0.85–1.15, normalised to a
    scene mean of 1 in the DN).
    """
    h, w = landcover.shape
    parcels = _parcels(h, w, parcel_rng)
    growth = parcel_rng.uniform(0.25, 1.0, parcels.max() + 1).astype(np.float32)[parcels]
    surface = _by_class(landcover, growth, SPECTRA)
    texture = 1.0 + 0.05 * perlin_noise((h, w), texture_rng, scale=16.0, octaves=3)
    light = 0.85 + 0.3 * _hillshade(dem, resolution, sun_azimuth)
    surface = surface * (texture * light / float(light.mean()))[None]
    return surface, growth, light


def _backscatter(
    landcover: np.ndarray, growth: np.ndarray, light: np.ndarray, speckle_rng: np.random.Generator, looks: float
) -> np.ndarray:
    """S1 VV/VH (2, h, w) float32 dB: class backscatter, cropland between crop and soil, terrain, gamma speckle."""
    h, w = landcover.shape
    sigma0 = _by_class(landcover, growth, BACKSCATTER)
    sigma0 = sigma0 + 2.0 * (light - float(light.mean()))[None]
    speckle = speckle_rng.gamma(looks, 1.0 / looks, size=(2, h, w)).astype(np.float32)
    return linear_to_db(db_to_linear(sigma0) * speckle).astype(np.float32)


def _cloudy(
    surface: np.ndarray,
    cloud_rng: np.random.Generator,
    cloud_texture_rng: np.random.Generator,
    *,
    cloud_cover: float,
    sun_azimuth: float,
    shadow_offset: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cloudy observation (13, h, w) float32 DN, cloud opacity (h, w) 0–1 and shadow opacity (h, w) 0–0.8."""
    h, w = surface.shape[1:]
    opacity = perlin_clouds((h, w), cloud_rng, cloud_cover)
    shadow = cast_shadows(opacity, sun_azimuth=sun_azimuth, offset=shadow_offset)
    shaded = surface * (1.0 - _SHADOW_DEPTH[:, None, None] * shadow[None])
    cloud_texture = 1.0 + 0.08 * perlin_noise((h, w), cloud_texture_rng, scale=32.0, octaves=4)
    return blend_clouds(shaded, opacity, texture=cloud_texture), opacity, shadow


def _digitize(cloudy: np.ndarray, clear: np.ndarray, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Both observations as uint16 DN (13, h, w) with the same Gaussian sensor noise (:data:`_NOISE_DN`): they
    differ only by clouds and shadows."""
    noise = _NOISE_DN[:, None, None] * noise_rng.standard_normal(size=clear.shape, dtype=np.float32)

    def dn(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x + noise), 0, 65535).astype(np.uint16)

    return dn(cloudy), dn(clear)


def _assemble(
    *,
    cloudy_dn: np.ndarray,
    clear_dn: np.ndarray,
    s1: np.ndarray,
    dem: np.ndarray,
    landcover: np.ndarray,
    opacity: np.ndarray,
    cloud_truth: np.ndarray,
    shadow_truth: np.ndarray,
    resolution: float,
    crs: str,
    origin: tuple[float, float],
    attrs: dict,
) -> xr.Dataset:
    """The scene Dataset: pixel-centre coordinates from ``origin`` (upper-left corner, m), CRS and transform."""
    h, w = dem.shape
    x = origin[0] + resolution * (np.arange(w) + 0.5)
    y = origin[1] - resolution * (np.arange(h) + 0.5)
    coords = {"y": y, "x": x}
    band = {"band": list(S2_BAND_NAMES)}
    s2_attrs = {"product": "L1C", "units": "DN"}
    scene = make_scene(
        s2=xr.DataArray(cloudy_dn, dims=("band", "y", "x"), coords={**band, **coords}, attrs=s2_attrs),
        s2_clear=xr.DataArray(clear_dn, dims=("band", "y", "x"), coords={**band, **coords}, attrs=s2_attrs),
        s1=xr.DataArray(
            s1,
            dims=("polarization", "y", "x"),
            coords={"polarization": list(S1_POLARIZATIONS), **coords},
            attrs={"units": "dB"},
        ),
        dem=xr.DataArray(dem, dims=("y", "x"), coords=coords, attrs={"units": "m"}),
        attrs=attrs,
    )
    scene["cloud_truth"] = (("y", "x"), cloud_truth)
    scene["shadow_truth"] = (("y", "x"), shadow_truth)
    scene["cloud_opacity"] = (("y", "x"), opacity)
    scene["landcover"] = xr.DataArray(
        landcover, dims=("y", "x"), attrs={"classes": [f"{k}: {v}" for k, v in LAND_COVER.items()]}
    )
    scene.rio.write_crs(crs, inplace=True).rio.write_transform(inplace=True)
    return scene


def synthetic_scene(
    size: int | Sequence[int] = 512,
    seed: int = 0,
    cloud_cover: float = 0.5,
    *,
    snow: bool = False,
    sun_azimuth: float = 150.0,
    shadow_offset: float = 25.0,
    resolution: float = 10.0,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5100000.0),
    looks: float = 4.4,
    chunks: dict | str | None = None,
) -> xr.Dataset:
    """A synthetic scene with known truth.

    Parameters
    ----------
    size : int or (height, width)
        Pixels.
    seed : int
        Everything is a deterministic function of the seed.
    cloud_cover : float in [0, 1]
        Fraction of pixels under visible cloud (opacity ≥ 0.1).
    snow : bool
        Put snow on the highest ground.
    sun_azimuth : float
        Degrees clockwise from north; shadows fall the other way.
    shadow_offset : float
        Shadow displacement in pixels.
    resolution : float
        Pixel size in metres.
    crs, origin : the grid: CRS and the (x, y) of the upper-left corner, in metres.
    looks : float
        Equivalent number of looks of the S1 speckle (gamma distributed).
    chunks : optional Dask chunks for the returned Dataset.

    Returns
    -------
    xarray.Dataset with ``s2`` (cloudy, band × y × x, uint16 DN), ``s2_clear`` (uint16 DN), ``s1`` (polarization ×
    y × x, float32 dB), ``dem`` (float32 m), ``cloud_truth`` and ``shadow_truth`` (bool), ``cloud_opacity``
    (float32 0–1) and ``landcover`` (uint8, codes in :data:`LAND_COVER`); CRS in ``spatial_ref``.

    Examples
    --------
    >>> import numpy as np
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene((48, 64), seed=3, cloud_cover=0.4)
    >>> dict(scene.sizes), scene.s2.dtype, scene.rio.crs.to_epsg(), scene.rio.resolution()
    ({'band': 13, 'y': 48, 'x': 64, 'polarization': 2}, dtype('uint16'), 32633, (10.0, -10.0))
    >>> round(float(scene.cloud_truth.mean()), 2), round(float(scene.shadow_truth.mean()), 2)
    (0.4, 0.12)
    >>> np.bincount(scene.landcover.values.ravel(), minlength=6).tolist()  # pixels per LAND_COVER class
    [215, 1110, 1171, 246, 330, 0]
    >>> lazy = xcf.datasets.synthetic_scene(64, chunks={"x": 32, "y": 32})  # the same scene as Dask arrays
    >>> lazy.s2.chunks[1:]
    ((32, 32), (32, 32))
    """
    h, w = _scene_shape(size, cloud_cover)
    # One independent random stream per ingredient: changing one never shifts the others.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]
    dem, landcover = _terrain(h, w, rngs[0], rngs[1], snow)
    surface, growth, light = _surface(landcover, dem, rngs[2], rngs[3], resolution=resolution, sun_azimuth=sun_azimuth)
    s1 = _backscatter(landcover, growth, light, rngs[4], looks)
    cloudy, opacity, shadow = _cloudy(
        surface, rngs[5], rngs[6], cloud_cover=cloud_cover, sun_azimuth=sun_azimuth, shadow_offset=shadow_offset
    )
    cloudy_dn, clear_dn = _digitize(cloudy, surface, rngs[7])
    cloud_truth = opacity >= 0.1
    shadow_truth = (shadow >= 0.3) & ~cloud_truth
    scene = _assemble(
        cloudy_dn=cloudy_dn,
        clear_dn=clear_dn,
        s1=s1,
        dem=dem,
        landcover=landcover,
        opacity=opacity,
        cloud_truth=cloud_truth,
        shadow_truth=shadow_truth,
        resolution=resolution,
        crs=crs,
        origin=origin,
        attrs={
            "title": "xcloudfree synthetic scene",
            "seed": seed,
            "cloud_cover": float(cloud_truth.mean()),
            "sun_azimuth": sun_azimuth,
        },
    )
    return scene.chunk(chunks) if chunks is not None else scene
