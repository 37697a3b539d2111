"""Training data: torch Datasets of (input, target, cloudy, mask) patches built from scenes by a ModelSpec.

Sources: a :class:`~xcloudfree.io.SEN12MSCR` index (or any list of scenes), endless seeded synthetic scenes, and
the user's GeoTIFF files. Random crops, flips and rot90 are applied identically to every tensor of a sample, and
every random choice derives from ``(seed, index)``, so a sample is the same whenever it is drawn (resume exactness).
Clear-only data get synthetic clouds (Perlin or copy-paste, REFERENCE §4 cyclecr). :class:`TrainingData` builds
what a trainer needs from the ``data`` section of a configuration (like a datamodule): the training set, the
validation samples and the batches of each step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from ..datasets import blend_clouds, copy_paste_clouds, perlin_clouds, synthetic_scene
from ..inference.inputs import model_input
from ..sensors import normalize_s2

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "TrainingData",
    "curated",
    "SceneDataset",
    "SyntheticDataset",
    "GeoTiffScenes",
    "make_sample",
    "augment",
    "with_synthetic_clouds",
    "StepBatches",
    "batch_indices",
    "collate",
]

Sample = dict[str, torch.Tensor]


def _rng(*keys: int) -> np.random.Generator:
    """A generator that is a pure function of its integer keys (seed, index, stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def make_sample(
    scene: xr.Dataset, spec: Any, *, mask: str | xr.DataArray | None = "dsen2cr", cloud_map: str = "cyclecr"
) -> Sample:
    """One training sample from a scene, on the network's scale.

    Returns
    -------
    dict of float32 tensors: ``input`` (C_in, H, W) in ``spec.input_order``; ``target`` (C_out, H, W) from
    ``s2_clear``; ``cloudy`` (C_out, H, W), the output bands of the cloudy ``s2`` (for CARL); ``mask`` (1, H, W) in
    [0, 1], the cloud-or-shadow map (``mask`` = a masking method, a DataArray, or None: the scene's ``mask``
    variable, else zeros). Invalid mask pixels (NaN) become 0.
    """
    from ..masking import detect

    if isinstance(mask, str):
        mask_da = detect(scene, method=mask)["mask"]
    elif isinstance(mask, xr.DataArray):
        mask_da = mask
    else:
        mask_da = scene.get("mask")
    cmap = None
    if spec.cloud_map:
        if "cloud_map" in scene:
            cmap = scene["cloud_map"]
        elif mask == cloud_map and mask_da is not None:
            cmap = mask_da  # the same detector: run it once
        else:
            cmap = detect(scene, method=cloud_map)["mask"]
    x = model_input(scene, spec, cloud_map=cmap).values
    bands = list(spec.output_bands)
    target = normalize_s2(scene["s2_clear"].sel(band=bands).astype("float32"), spec.normalization).values
    cloudy = normalize_s2(scene["s2"].sel(band=bands).astype("float32"), spec.normalization).values
    m = np.zeros(x.shape[1:], np.float32) if mask_da is None else np.nan_to_num(np.asarray(mask_da.values, np.float32))
    arrays = {"input": x, "target": target, "cloudy": cloudy, "mask": m[None]}
    # SAR NaN (nodata) would poison the gradients: zero on the network's scale (REFERENCE §3: treat as invalid).
    return {k: torch.from_numpy(np.nan_to_num(v).astype(np.float32)) for k, v in arrays.items()}


def augment(sample: Sample, rng: np.random.Generator, *, crop: int | None = None, flips: bool = True) -> Sample:
    """The same random crop, flips and rot90 on every tensor of a sample (all (C, H, W))."""
    h, w = sample["input"].shape[-2:]
    if crop is not None:
        if crop > h or crop > w:
            raise ValueError(f"crop: expected at most the sample size {h}×{w}, found {crop}")
        y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        sample = {k: v[..., y0 : y0 + crop, x0 : x0 + crop] for k, v in sample.items()}
    if flips:
        k = int(rng.integers(0, 4))
        flip_y, flip_x = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        dims = [d for d, f in ((-2, flip_y), (-1, flip_x)) if f]

        def transform(v: torch.Tensor) -> torch.Tensor:
            v = torch.flip(v, dims) if dims else v
            return torch.rot90(v, k, (-2, -1)) if k and v.shape[-1] == v.shape[-2] else v

        sample = {key: transform(v) for key, v in sample.items()}
    return {k: v.contiguous() for k, v in sample.items()}


def with_synthetic_clouds(
    scene: xr.Dataset,
    rng: np.random.Generator,
    *,
    method: str = "perlin",
    cover: tuple[float, float] = (0.1, 0.7),
    donor: xr.Dataset | None = None,
) -> xr.Dataset:
    """Make a cloudy ``s2`` from ``s2_clear`` with a known ``mask`` (REFERENCE §4 cyclecr augmentations).

    ``perlin``: Perlin opacity alpha-blended into all bands with the cloud spectrum; ``copy_paste``: the clouds of a
    real cloudy ``donor`` scene (its ``s2`` and a cyclecr map) pasted into the clear image. The opacity map is the mask.
    """
    clear = scene["s2_clear"].astype("float32")
    if method == "perlin":
        alpha = perlin_clouds(clear.shape[-2:], rng, float(rng.uniform(*cover)))
        bands = [str(b) for b in clear["band"].values]
        cloudy = blend_clouds(clear.values, alpha, bands=bands)
    elif method == "copy_paste":
        if donor is None:
            raise ValueError("donor: expected a cloudy scene to copy clouds from, found None")
        from ..masking import detect

        alpha = np.nan_to_num(detect(donor, method="cyclecr")["mask"].values).astype(np.float32)
        cloudy = copy_paste_clouds(clear.values, donor["s2"].astype("float32").values, alpha)
    else:
        raise ValueError(f"method: expected 'perlin' or 'copy_paste', found {method!r}")
    return scene.assign(s2=clear.copy(data=cloudy.astype(np.float32)), mask=(("y", "x"), alpha.astype(np.float32)))


class _Base(torch.utils.data.Dataset):
    """Common machinery: scene i → sample → augmentation seeded by (seed, i)."""

    def __init__(
        self,
        spec: Any,
        *,
        crop: int | None,
        flips: bool,
        mask: str | None,
        seed: int,
        synthetic_clouds: str | None = None,
        cache: bool = False,
    ) -> None:
        self.spec, self.crop, self.flips, self.mask, self.seed = spec, crop, flips, mask, int(seed)
        self.synthetic_clouds = synthetic_clouds
        self._cache: dict[int, Sample] | None = {} if cache else None

    def scene(self, index: int) -> xr.Dataset:
        raise NotImplementedError

    def _sample(self, index: int) -> Sample:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        scene = self.scene(index)
        mask: str | None = self.mask
        if self.synthetic_clouds is not None:
            scene = with_synthetic_clouds(scene, _rng(self.seed, index, 1), method=self.synthetic_clouds)
            mask = None  # the known opacity is the mask
        sample = make_sample(scene, self.spec, mask=mask)
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def sample(self, index: int, epoch_seed: int = 0) -> Sample:
        """Sample ``index`` with the augmentation of draw ``epoch_seed`` (deterministic)."""
        rng = _rng(self.seed * 1_000_003 + epoch_seed, index)
        return augment(self._sample(index % len(self)), rng, crop=self.crop, flips=self.flips)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """``dataset[i]``, or ``dataset[i, draw]`` for the augmentation of a given draw (the training step)."""
        index, draw = key if isinstance(key, tuple) else (key, 0)
        return self.sample(index, draw)


class SceneDataset(_Base):
    """Samples from scenes: a :class:`~xcloudfree.io.SEN12MSCR` index or any sequence of scene Datasets.

    Parameters
    ----------
    scenes : indexable of scenes with ``s2`` (cloudy), ``s2_clear`` and what the spec needs
    spec : the network's ModelSpec
    crop : random crop side (e.g. 128 from 256 patches), None for the whole scene
    mask : masking method computed on the cloudy ``s2`` (cached with ``cache=True``)
    synthetic_clouds : ``"perlin"`` to make the cloudy input from ``s2_clear`` (clear-only data)
    """

    def __init__(
        self,
        scenes: Sequence[xr.Dataset],
        spec: Any,
        *,
        crop: int | None = 128,
        flips: bool = True,
        mask: str | None = "dsen2cr",
        seed: int = 0,
        synthetic_clouds: str | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__(
            spec, crop=crop, flips=flips, mask=mask, seed=seed, synthetic_clouds=synthetic_clouds, cache=cache
        )
        self.scenes = scenes
        if len(scenes) == 0:
            raise ValueError("scenes: expected at least one scene, found none")

    def __len__(self) -> int:
        return len(self.scenes)

    def scene(self, index: int) -> xr.Dataset:
        return self.scenes[index]


class SyntheticDataset(_Base):
    """Endless seeded synthetic scenes (:func:`xcloudfree.datasets.synthetic_scene`).

    Item ``i`` is a crop of scene ``(seed, i // crops_per_scene)``: the same on every call, a new scene every
    ``crops_per_scene`` items (generating a scene costs more than cropping several samples from it).

    Parameters
    ----------
    size : scene side generated (px); ``crop`` samples are cut from it
    crops_per_scene : samples cut from each scene
    cloud_cover : (low, high) cover drawn per scene
    length : nominal length (samplers need one); indices beyond it are still valid
    """

    def __init__(
        self,
        spec: Any,
        *,
        size: int = 160,
        crop: int | None = 128,
        flips: bool = True,
        mask: str | None = "dsen2cr",
        seed: int = 0,
        cloud_cover: tuple[float, float] = (0.1, 0.8),
        crops_per_scene: int = 1,
        length: int = 1_000_000,
    ) -> None:
        super().__init__(spec, crop=crop, flips=flips, mask=mask, seed=seed)
        self.size, self.cloud_cover, self.length = size, cloud_cover, length
        self.crops_per_scene = max(1, int(crops_per_scene))
        self._last: tuple[int, Sample] | None = None

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> xr.Dataset:
        rng = _rng(self.seed, index)
        return synthetic_scene(
            self.size,
            seed=int(rng.integers(2**31)),
            cloud_cover=float(rng.uniform(*self.cloud_cover)),
            sun_azimuth=float(rng.uniform(90, 270)),
            snow=bool(rng.random() < 0.1),
        )

    def sample(self, index: int, epoch_seed: int = 0) -> Sample:
        # Each index is new data: no modulo over the nominal length.
        scene_id = index // self.crops_per_scene
        if self._last is None or self._last[0] != scene_id:
            self._last = (scene_id, self._sample(scene_id))
        rng = _rng(self.seed * 1_000_003 + epoch_seed, index)
        return augment(self._last[1], rng, crop=self.crop, flips=self.flips)


class GeoTiffScenes(Sequence):
    """The user's GeoTIFF files as a sequence of scenes, opened on access: one dict per sample with paths for
    ``s2`` (cloudy), ``s2_clear``, ``s1`` and optionally ``dem`` (keys of :func:`xcloudfree.io.open_scene`).
    Train on them with :class:`SceneDataset`."""

    def __init__(self, files: Sequence[dict[str, str | Path]]) -> None:
        self.files = list(files)
        if not self.files:
            raise ValueError("files: expected at least one dict of GeoTIFF paths, found none")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> xr.Dataset:
        from ..io import open_scene

        return open_scene(**self.files[index], max_nan_fraction=0.05)


def collate(samples: Sequence[Sample]) -> Sample:
    """Stack samples into a batch (B, C, H, W) per key."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def batch_indices(step: int, batch_size: int, length: int, seed: int, *, endless: bool = False) -> list[int]:
    """The sample indices of training step ``step``: a seeded permutation per epoch, a function of the step alone."""
    if endless:
        return [step * batch_size + i for i in range(batch_size)]
    out = []
    for j in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(j, length)
        out.append(int(_rng(seed, epoch).permutation(length)[pos]))
    return out


class StepBatches(torch.utils.data.Sampler):
    """Batches of ``(index, step)`` keys for steps ``start … end − 1``: what a DataLoader's workers load is a
    function of the step alone, so loading in parallel changes nothing and resuming continues the sequence."""

    def __init__(self, start: int, end: int, batch_size: int, length: int, seed: int, endless: bool) -> None:
        self.start, self.end, self.batch_size, self.length, self.seed, self.endless = (
            start,
            end,
            batch_size,
            length,
            seed,
            endless,
        )

    def __iter__(self):
        for step in range(self.start, self.end):
            yield [
                (i, step) for i in batch_indices(step, self.batch_size, self.length, self.seed, endless=self.endless)
            ]

    def __len__(self) -> int:
        return self.end - self.start


def curated(scenes: Any, output: str | Path) -> torch.utils.data.Subset:
    """The samples of ``scenes`` pix2pix5's curation rules accept; the report goes to ``<output>/curation.json``."""
    from ..io.jsonfile import write_json
    from .curation import curate

    report = curate(scenes)
    Path(output).mkdir(parents=True, exist_ok=True)
    write_json(report.to_dict(), Path(output) / "curation.json")
    if not report.kept_indices:
        raise ValueError(f"data.curate: expected samples that pass the curation rules, found none ({report})")
    return torch.utils.data.Subset(scenes, report.kept_indices)


class TrainingData:
    """What a trainer trains and validates on: a data set keyed ``(index, step)``, validation samples, batches.

    Build it from a configuration with :meth:`from_config`; the batches of a step are a function of the step alone.

    Parameters
    ----------
    train : :class:`SyntheticDataset` (endless) or :class:`SceneDataset`
    val : validation samples, whole scenes without augmentation (dicts of (C, H, W) tensors)
    batch_size : samples per step
    seed : the seed of the sample order (and of the loader's own generator)
    workers : DataLoader worker processes (0: load in the calling process)

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> spec = xcf.models.create("dsen2cr", features=4, blocks=1).spec
    >>> cfg = xcf.training.load_config(
    ...     {"data": {"size": 32, "val_samples": 1}, "crop": 16, "batch_size": 2, "output": "unused"}
    ... )
    >>> data = TrainingData.from_config(cfg, spec)
    >>> batch = next(data.batches(0, 1, device="cpu"))
    >>> tuple(batch["input"].shape), len(data.val), data.steps_per_epoch
    ((2, 15, 16, 16), 1, 500000)
    """

    def __init__(
        self, train: torch.utils.data.Dataset, val: list[Sample], *, batch_size: int, seed: int, workers: int = 0
    ) -> None:
        self.train, self.val = train, val
        self.batch_size, self.seed, self.workers = batch_size, seed, workers

    @classmethod
    def from_config(cls, cfg: TrainConfig, spec: Any) -> TrainingData:
        """The data of ``cfg.data`` for a network of ModelSpec ``spec`` (crop, seed, batch size from ``cfg``).

        ``synthetic``: endless seeded scenes, validated on other seeded scenes; ``sen12mscr`` / ``geotiff``: the
        (curated, with ``data.curate``: report in ``<output>/curation.json``) scenes, validated on their first
        ``data.val_samples``.
        """
        build = _synthetic_data if cfg.data.source == "synthetic" else _scene_data
        train, val = build(cfg, spec)
        return cls(train, val, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in an epoch, ``len(train) // batch_size`` (at least 1): schedules in epochs need it."""
        return max(1, len(self.train) // self.batch_size)

    def batches(self, start: int, end: int, device: str | torch.device = "cpu") -> Iterator[Sample]:
        """The batches (dicts of (B, C, H, W) tensors on ``device``) of steps ``start … end − 1``."""
        device = torch.device(device)
        endless = isinstance(self.train, SyntheticDataset)
        sampler = StepBatches(start, end, self.batch_size, len(self.train), self.seed, endless)
        loader = torch.utils.data.DataLoader(
            self.train,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            # Its own generator: a loader draws a base seed when iterated, which from the global generator would
            # shift the dropout and image-pool draws of a resumed run by one (resume must be bit for bit).
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _synthetic_data(cfg: TrainConfig, spec: Any) -> tuple[SyntheticDataset, list[Sample]]:
    d = cfg.data
    common = {"size": d.size, "mask": d.mask, "cloud_cover": tuple(d.cloud_cover)}
    train = SyntheticDataset(spec, crop=cfg.crop, seed=cfg.seed, crops_per_scene=d.crops_per_scene, **common)
    val_data = SyntheticDataset(spec, crop=None, flips=False, seed=cfg.seed + 7919, **common)
    return train, [val_data.sample(i) for i in range(d.val_samples)]


def _scene_data(cfg: TrainConfig, spec: Any) -> tuple[SceneDataset, list[Sample]]:
    d = cfg.data
    if d.source == "sen12mscr":
        from ..io import SEN12MSCR

        scenes: Any = SEN12MSCR(d.root, split=d.split, seasons=d.seasons)
    else:
        scenes = GeoTiffScenes(d.files)
    if d.curate:
        scenes = curated(scenes, cfg.output)
    train = SceneDataset(
        scenes, spec, crop=cfg.crop, seed=cfg.seed, cache=d.cache, mask=d.mask, synthetic_clouds=d.synthetic_clouds
    )
    # Validation scores whole scenes: the samples before augmentation, which training reads (and caches) anyway.
    return train, [train._sample(i) for i in range(min(d.val_samples, len(train)))]
