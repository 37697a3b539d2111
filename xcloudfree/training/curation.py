"""Data curation of pix2pix5: drop training samples with empty SAR or flat optical images (REFERENCE §4).

The seed paper rejects a triplet when the SAR standard deviation is below 0.0001 or its maximum below 0.001, and
keeps it only when the mean standard deviation of its R, G, B channels on the 8-bit display scale exceeds 10
(summer) or 3 (winter). It states neither the SAR scale nor the 8-bit conversion; the choices made here are:

SAR scale
    Linear power ``10^(dB/10)`` by default (``CurationRules.sar_scale``). On dB as stored the rule cannot be
    meant: SEN12MS-CR backscatter is capped at 0 dB, so "maximum < 0.001" would reject every patch. On the linear
    scale the thresholds have a physical reading: a patch whose brightest pixel is below 0.001 (−30 dB, under the
    Sentinel-1 IW noise floor of about −22 dB) or whose backscatter is constant to 1e-4 holds no signal (zero
    fill, nodata, a dead channel). ``"db"`` applies the rule to the dB values literally; a normalisation preset
    name (``"dsen2cr"``, ``"unit"``, ``"tanh"``, :mod:`xcloudfree.sensors`) applies it to what the network sees.
    Each polarisation is tested on its own (a dead VH next to a good VV is caught); NaN pixels are ignored.
8-bit display scale
    ``clip(DN / 10000 · 255 · gain, 0, 255)`` with ``gain = 2.5`` (the Sentinel Hub true-colour stretch), not
    rounded (rounding would move the standard deviation by under 0.3). The rule is the mean over R, G, B of each
    channel's standard deviation over the patch.
Which optical image
    The cloud-free target ``s2_clear`` when the scene has one, else the cloudy ``s2`` (``rgb_source``). A flat
    target is a bad label (haze, a missed cloud, a uniform surface); a flat cloudy input is usually a thick cloud,
    exactly the case cloud removal must learn, so testing the input would bias training towards thin clouds.
Seasons
    Spring and fall use the summer threshold (10): the paper only curated summer and winter, and 3 was its
    exception for dark, low-contrast winter scenes. A scene without a season uses the summer threshold too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import xarray as xr

from ..sensors import PRESETS, S2_RGB, S2_SCALE, db_to_linear, harmonize_s2, normalize_s1

__all__ = ["CurationRules", "CurationResult", "CurationReport", "check", "curate", "REASONS"]

#: Rejection reasons and what they mean.
REASONS: dict[str, str] = {
    "no_s1": "no SAR image in the scene",
    "no_optical": "none of the optical images named by rgb_source",
    "sar_std": "SAR standard deviation below sar_std_min in a polarisation",
    "sar_max": "SAR maximum below sar_max_min in a polarisation",
    "rgb_std": "mean RGB standard deviation (8-bit display scale) not above the season's threshold",
}
_SEASONS = ("spring", "summer", "fall", "winter")
_SAR_SCALES = ("linear", "db", *PRESETS)
_OPTICAL = ("s2_clear", "s2")


@dataclass(frozen=True)
class CurationRules:
    """Thresholds of the pix2pix5 curation (module docstring for the reasoning behind the defaults).

    Parameters
    ----------
    sar_std_min, sar_max_min : a polarisation is rejected when its standard deviation is below ``sar_std_min`` or
        its maximum below ``sar_max_min``, on ``sar_scale``.
    sar_scale : ``"linear"`` (power), ``"db"`` (as stored) or a normalisation preset name.
    rgb_std_min_spring, rgb_std_min_summer, rgb_std_min_fall, rgb_std_min_winter : the mean RGB standard
        deviation on the 8-bit display scale must exceed this; scenes without a season use the summer value.
    rgb_gain : the display stretch, ``clip(DN / 10000 · 255 · rgb_gain, 0, 255)``.
    rgb_source : optical variables in order of preference; the first one the scene has is tested.
    """

    sar_std_min: float = 1e-4
    sar_max_min: float = 1e-3
    sar_scale: str = "linear"
    rgb_std_min_spring: float = 10.0
    rgb_std_min_summer: float = 10.0
    rgb_std_min_fall: float = 10.0
    rgb_std_min_winter: float = 3.0
    rgb_gain: float = 2.5
    rgb_source: tuple[str, ...] = _OPTICAL

    def __post_init__(self) -> None:
        if self.sar_scale not in _SAR_SCALES:
            raise ValueError(f"sar_scale: expected one of {list(_SAR_SCALES)}, found {self.sar_scale!r}")
        source = (self.rgb_source,) if isinstance(self.rgb_source, str) else tuple(self.rgb_source)
        if not source or any(s not in _OPTICAL for s in source):
            raise ValueError(f"rgb_source: expected names from {list(_OPTICAL)}, found {self.rgb_source!r}")
        object.__setattr__(self, "rgb_source", source)
        if not self.rgb_gain > 0:
            raise ValueError(f"rgb_gain: expected a positive display gain, found {self.rgb_gain}")

    def rgb_std_min(self, season: str | None) -> float:
        """The RGB threshold of a season (``None``: the summer one)."""
        return float(getattr(self, f"rgb_std_min_{_season(season) or 'summer'}"))


@dataclass
class CurationResult:
    """The verdict on one scene: ``kept``, the ``reasons`` it was rejected (:data:`REASONS` keys) and ``stats``.

    ``stats``: ``season``, ``sar_scale``, ``sar_std_<pol>`` and ``sar_max_<pol>`` per polarisation,
    ``rgb_source`` (the variable tested), ``rgb_std`` and the threshold ``rgb_std_min``.
    """

    kept: bool
    reasons: list[str]
    stats: dict[str, Any]


@dataclass
class CurationReport:
    """Outcome of :func:`curate`: counts, reasons, examples and per-sample statistics.

    ``by_reason`` counts rejected samples per reason (a sample rejected for two reasons counts in both, so the
    counts can sum to more than ``rejected``). ``kept_indices`` are positions in the input, for ``Subset``.
    ``skipped_incomplete`` is the number of samples a :class:`~xcloudfree.io.SEN12MSCR` index left out for
    missing modalities (never checked here).
    """

    rules: CurationRules
    total: int = 0
    kept: int = 0
    by_reason: Counter = field(default_factory=Counter)
    by_season: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kept_indices: list[int] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped_incomplete: int = 0

    @property
    def rejected(self) -> int:
        return self.total - self.kept

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (rules, counts, examples, kept indices, per-sample stats)."""
        return {
            "rules": asdict(self.rules),
            "total": self.total,
            "kept": self.kept,
            "rejected": self.rejected,
            "by_reason": dict(self.by_reason),
            "by_season": self.by_season,
            "examples": self.examples,
            "kept_indices": self.kept_indices,
            "skipped_incomplete": self.skipped_incomplete,
            "samples": self.samples,
        }

    def __str__(self) -> str:
        lines = [f"curation: kept {self.kept} of {self.total} samples, rejected {self.rejected}"]
        if self.skipped_incomplete:
            lines.append(f"  ({self.skipped_incomplete} incomplete samples skipped by the index, not checked)")
        for reason, count in self.by_reason.most_common():
            shown = ", ".join(self.examples.get(reason, []))
            lines.append(f"  {reason:<10} {count:>7}  {REASONS[reason]}; e.g. {shown}")
        for season, counts in sorted(self.by_season.items()):
            lines.append(f"  {season:<10} kept {counts['kept']} of {counts['total']}")
        return "\n".join(lines)


def _season(season: str | None) -> str | None:
    if season is not None and season not in _SEASONS:
        raise ValueError(f"season: expected one of {list(_SEASONS)} or None, found {season!r}")
    return season


def _sar_on_scale(s1: xr.DataArray, scale: str) -> xr.DataArray:
    if scale == "db":
        return s1
    if scale == "linear":
        return db_to_linear(s1)
    return normalize_s1(s1, scale)


def check(scene: xr.Dataset, rules: CurationRules | None = None, season: str | None = None) -> CurationResult:
    """Apply the curation rules to one scene.

    Parameters
    ----------
    scene : xarray.Dataset
        A scene (:mod:`xcloudfree.scene`) without a ``time`` dimension: ``s1`` (dB) and ``s2_clear`` and/or ``s2``
        (DN; a processing-baseline offset in attrs is applied). Dask-backed data are computed (one pass).
    rules : CurationRules, optional (the defaults)
    season : ``"spring"``, ``"summer"``, ``"fall"`` or ``"winter"``; defaults to ``scene.attrs["season"]``.
    """
    if not isinstance(scene, xr.Dataset):
        raise ValueError(f"scene: expected an xarray.Dataset scene, found {type(scene).__name__}")
    if "time" in scene.dims:
        raise ValueError(f"scene: expected one date (no 'time' dimension), found dims {dict(scene.sizes)}")
    rules = rules or CurationRules()
    season = _season(season if season is not None else scene.attrs.get("season"))
    stats: dict[str, Any] = {"season": season, "sar_scale": rules.sar_scale}
    lazy: dict[str, xr.DataArray] = {}
    if "s1" in scene:
        sar = _sar_on_scale(scene["s1"].astype("float64"), rules.sar_scale)
        lazy["sar_std"] = sar.std(("y", "x"), skipna=True)
        lazy["sar_max"] = sar.max(("y", "x"), skipna=True)
    source = next((name for name in rules.rgb_source if name in scene), None)
    if source is not None:
        optical = harmonize_s2(scene[source])
        missing = [b for b in S2_RGB if b not in optical["band"].values]
        if missing:
            raise ValueError(f"{source}: expected the RGB bands {list(S2_RGB)}, found no {missing}")
        rgb = optical.sel(band=list(S2_RGB)).astype("float64")
        display = (rgb * (255.0 * rules.rgb_gain / S2_SCALE)).clip(0.0, 255.0)
        lazy["rgb_std"] = display.std(("y", "x"), skipna=True).mean("band")
    values = xr.Dataset(lazy).compute() if lazy else xr.Dataset()

    reasons: list[str] = []
    if "sar_std" in values:
        for pol in values["polarization"].values:
            stats[f"sar_std_{pol}"] = float(values["sar_std"].sel(polarization=pol))
            stats[f"sar_max_{pol}"] = float(values["sar_max"].sel(polarization=pol))
        # `not x >= t` also rejects NaN (a polarisation without a single valid pixel).
        if any(not float(v) >= rules.sar_std_min for v in values["sar_std"].values):
            reasons.append("sar_std")
        if any(not float(v) >= rules.sar_max_min for v in values["sar_max"].values):
            reasons.append("sar_max")
    else:
        reasons.append("no_s1")
    stats["rgb_source"] = source
    if source is not None:
        stats["rgb_std"] = float(values["rgb_std"])
        stats["rgb_std_min"] = rules.rgb_std_min(season)
        if not stats["rgb_std"] > stats["rgb_std_min"]:
            reasons.append("rgb_std")
    else:
        reasons.append("no_optical")
    return CurationResult(kept=not reasons, reasons=reasons, stats=stats)


def _name(scene: xr.Dataset, i: int) -> str:
    attrs = scene.attrs
    return f"{attrs['roi']}_p{attrs['patch']}" if "roi" in attrs and "patch" in attrs else f"#{i}"


def curate(scenes: Iterable[xr.Dataset], rules: CurationRules | None = None, max_examples: int = 5) -> CurationReport:
    """Check every scene of a data set and report what the rules keep.

    Parameters
    ----------
    scenes : :class:`xcloudfree.io.SEN12MSCR` index or any iterable of scene Datasets
        Seasons come from ``scene.attrs["season"]`` when present; sample names from ``roi`` and ``patch``
        attrs (else ``#<position>``).
    rules : CurationRules, optional (the defaults)
    max_examples : sample names kept per rejection reason.

    Returns
    -------
    CurationReport; ``report.kept_indices`` select the kept samples.
    """
    rules = rules or CurationRules()
    report = CurationReport(rules=rules)
    summary = getattr(scenes, "summary", None)
    if callable(summary):
        report.skipped_incomplete = int(summary().get("incomplete", 0))
    for i, scene in enumerate(scenes):
        result = check(scene, rules)
        name = _name(scene, i)
        season = result.stats["season"] or "unknown"
        counts = report.by_season.setdefault(season, {"total": 0, "kept": 0})
        counts["total"] += 1
        report.total += 1
        if result.kept:
            report.kept += 1
            counts["kept"] += 1
            report.kept_indices.append(i)
        for reason in result.reasons:
            report.by_reason[reason] += 1
            shown = report.examples.setdefault(reason, [])
            if len(shown) < max_examples:
                shown.append(name)
        report.samples.append({"name": name, "kept": result.kept, "reasons": result.reasons, **result.stats})
    return report
