"""Index of the SEN12MS-CR data set (Ebel et al. 2021): triplets paired by season, ROI and patch.

Files are paired by the ids in their names, never by listing order, and the official ROI split (shipped with the
package) is matched exactly: ``ROIs1970_fall_1`` is train while ``ROIs1970_fall_139`` is test.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import xarray as xr

__all__ = ["SEN12MSCR", "Triplet", "official_split", "SEASONS", "MODALITIES"]

SEASONS = ("spring", "summer", "fall", "winter")
#: Modalities by their SEN12MS-CR names and the scene variable each becomes.
MODALITIES = {"s1": "s1", "s2": "s2_clear", "s2_cloudy": "s2"}
_FLAT_FOLDERS = {"s1": "s1", "s2_cloudfree": "s2", "s2_cloudy": "s2_cloudy"}
_SPLITS = ("train", "val", "test")

_OFFICIAL = re.compile(
    r"^(?P<prefix>ROIs\d{4})_(?P<season>spring|summer|fall|winter)_(?P<modality>s1|s2_cloudy|s2)_(?P<roi>\d+)"
    r"_p(?P<patch>\d+)\.tif$"
)
_FLAT = re.compile(r"^(?P<prefix>ROIs\d{4})_(?P<season>spring|summer|fall|winter)_(?P<roi>\d+)_p(?P<patch>\d+)\.tif$")


@cache
def official_split() -> dict[str, str]:
    """ROI id → ``"train"``, ``"val"`` or ``"test"`` (the official SEN12MS-CR split, 155/10/10 ROIs).

    >>> from collections import Counter
    >>> from xcloudfree.io import official_split
    >>> official_split()["ROIs1158_spring_106"], Counter(official_split().values())
    ('test', Counter({'train': 155, 'val': 10, 'test': 10}))
    """
    text = resources.files("xcloudfree.data").joinpath("sen12mscr_splits.json").read_text()
    table = json.loads(text)
    return {roi: split for split in _SPLITS for roi in table[split]}


@dataclass(frozen=True)
class Triplet:
    """One SEN12MS-CR sample: its ids and the file of each modality found (``s1``, ``s2``, ``s2_cloudy``).

    >>> from xcloudfree.io.sen12mscr import Triplet
    >>> Triplet("ROIs1158_spring_106", 30, "spring", "test", files={}).name
    'ROIs1158_spring_106_p30'
    """

    roi: str
    patch: int
    season: str
    split: str | None
    files: dict[str, Path] = field(compare=False)

    @property
    def name(self) -> str:
        return f"{self.roi}_p{self.patch}"


class SEN12MSCR:
    """Index of SEN12MS-CR triplets on disk.

    Parameters
    ----------
    root : path
        Folder holding the 12 ``ROIs<id>_<season>_<modality>`` folders (``layout="official"``) or the three
        folders ``s1``, ``s2_cloudfree``, ``s2_cloudy`` (``layout="flat"``).
    split : {"train", "val", "test"}, optional
        Keep the ROIs of one official split (exact id match). ``"validation"`` is accepted for ``"val"``.
    seasons : iterable of {"spring", "summer", "fall", "winter"}, optional
    require : modalities a sample must have; samples missing any are counted in :meth:`summary` and skipped.
    chunks : passed on when reading (lazy Dask arrays).

    Examples
    --------
    On the downloaded data set: ``idx = SEN12MSCR("/data/SEN12MSCR", split="test")``, then ``ds = idx[0]``. Here a
    folder in the flat layout with one sample made from a synthetic scene:

    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64)
    >>> root = tempfile.TemporaryDirectory()
    >>> for folder, variable in [("s1", "s1"), ("s2_cloudfree", "s2_clear"), ("s2_cloudy", "s2")]:
    ...     _ = xcf.io.write_cog(scene[variable], f"{root.name}/{folder}/ROIs1158_spring_106_p30.tif")
    >>> idx = xcf.io.SEN12MSCR(root.name, split="test", layout="flat")
    >>> len(idx), idx.rois
    (1, ['ROIs1158_spring_106'])
    >>> ds = idx[0]  # s2 (cloudy), s2_clear, s1; attrs roi, patch, season, split
    >>> sorted(ds.data_vars), ds.attrs
    (['s1', 's2', 's2_clear'], {'roi': 'ROIs1158_spring_106', 'patch': 30, 'season': 'spring', 'split': 'test'})
    >>> root.cleanup()
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        seasons: Iterable[str] | None = None,
        require: Iterable[str] = ("s1", "s2", "s2_cloudy"),
        layout: str = "official",
        chunks: Any = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected a SEN12MS-CR folder, found no folder at {str(self.root)!r}")
        if split == "validation":
            split = "val"
        if split is not None and split not in _SPLITS:
            raise ValueError(f"split: expected one of {list(_SPLITS)} or None, found {split!r}")
        self.seasons = tuple(SEASONS if seasons is None else seasons)
        bad = [s for s in self.seasons if s not in SEASONS]
        if bad:
            raise ValueError(f"seasons: expected names from {list(SEASONS)}, found {bad}")
        self.require = tuple(require)
        bad = [m for m in self.require if m not in MODALITIES]
        if bad:
            raise ValueError(f"require: expected modalities from {list(MODALITIES)}, found {bad}")
        if layout not in ("official", "flat"):
            raise ValueError(f"layout: expected 'official' or 'flat', found {layout!r}")
        self.split, self.layout, self.chunks = split, layout, chunks

        groups = self._scan()
        lookup = official_split()
        self._incomplete: list[Triplet] = []
        samples = []
        for (roi, patch, season), files in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if season not in self.seasons:
                continue
            roi_split = lookup.get(roi)
            if split is not None and roi_split != split:
                continue
            triplet = Triplet(roi, patch, season, roi_split, files)
            if all(m in files for m in self.require):
                samples.append(triplet)
            else:
                self._incomplete.append(triplet)
        self.samples: list[Triplet] = samples
        if self._incomplete:
            warnings.warn(
                f"SEN12MSCR: skipped {len(self._incomplete)} incomplete sample(s) lacking one of {list(self.require)}, "
                f"e.g. {self._examples(self._incomplete)}; see .summary()",
                stacklevel=2,
            )

    def _scan(self) -> dict[tuple[str, int, str], dict[str, Path]]:
        groups: dict[tuple[str, int, str], dict[str, Path]] = {}
        if self.layout == "official":
            candidates = ((m, p) for p in self.root.glob("ROIs*_*_*/*/*.tif") if (m := _OFFICIAL.match(p.name)))
            entries = ((m, m["modality"], p) for m, p in candidates)
        else:
            entries = (
                (m, modality, p)
                for folder, modality in _FLAT_FOLDERS.items()
                for p in (self.root / folder).glob("*.tif")
                if (m := _FLAT.match(p.name))
            )
        for match, modality, path in entries:
            key = (f"{match['prefix']}_{match['season']}_{match['roi']}", int(match["patch"]), match["season"])
            groups.setdefault(key, {})[modality] = path
        return groups

    @staticmethod
    def _examples(triplets: list[Triplet], n: int = 3) -> str:
        return ", ".join(f"{t.name} (has {sorted(t.files)})" for t in triplets[:n])

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[xr.Dataset]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> xr.Dataset:
        """The ``i``-th sample as a scene: ``s2`` (cloudy), ``s2_clear``, ``s1`` — whichever exist."""
        from .geotiff import open_scene

        t = self.samples[i]
        paths = {MODALITIES[m]: path for m, path in t.files.items()}
        # SEN12MS-CR S1 holds a few NaNs (REFERENCE §2): accept them as nodata.
        return open_scene(
            **paths,
            chunks=self.chunks,
            max_nan_fraction=0.05,
            attrs={"roi": t.roi, "patch": t.patch, "season": t.season, "split": t.split or "unlisted"},
        )

    @property
    def rois(self) -> list[str]:
        """The ROI ids of the complete samples, sorted (example: :class:`SEN12MSCR`)."""
        return sorted({t.roi for t in self.samples})

    def summary(self) -> dict[str, Any]:
        """Counts of complete and incomplete samples (by missing modality, with examples) and per split/season.

        >>> import tempfile, warnings
        >>> import xcloudfree as xcf
        >>> scene = xcf.datasets.synthetic_scene(size=64)
        >>> root = tempfile.TemporaryDirectory()
        >>> for patch in (1, 2):
        ...     _ = xcf.io.write_cog(scene.s1, f"{root.name}/s1/ROIs1158_spring_106_p{patch}.tif")
        >>> _ = xcf.io.write_cog(scene.s2, f"{root.name}/s2_cloudy/ROIs1158_spring_106_p1.tif")
        >>> with warnings.catch_warnings(record=True):  # "skipped 1 incomplete sample(s) ..."
        ...     idx = xcf.io.SEN12MSCR(root.name, layout="flat", require=("s1", "s2_cloudy"))
        >>> summary = idx.summary()
        >>> summary["complete"], summary["missing"], summary["incomplete_examples"]
        (1, {'s2_cloudy': 1}, ['ROIs1158_spring_106_p2'])
        >>> root.cleanup()
        """
        missing = Counter("+".join(m for m in self.require if m not in t.files) for t in self._incomplete)
        return {
            "root": str(self.root),
            "layout": self.layout,
            "split": self.split,
            "require": list(self.require),
            "complete": len(self.samples),
            "incomplete": len(self._incomplete),
            "missing": dict(missing),
            "incomplete_examples": [t.name for t in self._incomplete[:5]],
            "by_split": dict(Counter(t.split or "unlisted" for t in self.samples)),
            "by_season": dict(Counter(t.season for t in self.samples)),
            "rois": len(self.rois),
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"SEN12MSCR(root={s['root']!r}, split={s['split']!r}, layout={s['layout']!r}): {s['complete']} samples "
            f"in {s['rois']} ROIs, {s['incomplete']} incomplete skipped {s['missing'] or ''}"
        )
