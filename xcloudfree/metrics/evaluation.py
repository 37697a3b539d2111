"""All scores at once: one image pair, a scene, or a whole data set (per-sample mean and pooled)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..sensors import reflectance
from ._inputs import Border, as_images, as_mask, check_choice, check_pair
from .accumulate import Stats, comparison_stats, concat, materialize, reduce

__all__ = ["METRICS", "evaluate", "evaluate_dataset", "evaluate_scene"]

#: The scalar scores, each also reported as ``<name>_reconstruction`` and ``<name>_reproduction``.
METRICS = ("mae", "rmse", "psnr", "sam", "ssim")
_ALL = frozenset({"sam", "ssim"})
_END = object()
_DEFINITIONS = {
    "per_sample_mean": "mean over samples of each sample's score (how UnCRtainTS reports a data set)",
    "pooled": "one score over all pixels of all samples together",
}


def _stats_by_group(
    pred: Any, target: Any, cloudy: Any, mask: Any, *, border: str, data_range: float
) -> tuple[dict[str, Stats], tuple[str, ...] | None]:
    """Statistics per group ("" = everything, "_reconstruction", "_reproduction") and the band names."""
    check_choice("border", border, ("zero", "valid"))
    p, names_p = as_images(pred, "pred")
    t, names_t = as_images(target, "target")
    check_pair(p, t, ("pred", "target"))
    if names_p is not None and names_t is not None and names_p != names_t:
        raise ValueError(f"target: expected the bands of pred {list(names_p)}, found {list(names_t)}")
    weights = [None]
    if mask is not None:
        weights.append(as_mask(mask, p.shape))
    comparisons = [(t, weights, ("pred", "target"))]
    if cloudy is not None:
        if mask is None:
            raise ValueError("cloudy: the reproduction scores need a mask too (outside the mask vs cloudy); none given")
        c, _ = as_images(cloudy, "cloudy")
        check_pair(p, c, ("pred", "cloudy"))
        comparisons.append((c, [1.0 - weights[1]], ("pred", "cloudy")))
    (results,) = materialize(comparison_stats(p, comparisons, parts=_ALL, border=border, data_range=data_range))
    suffixes = ("", "_reconstruction", "_reproduction")[: len(results)]
    return dict(zip(suffixes, results, strict=True)), names_t or names_p


def _report(
    groups: dict[str, Stats],
    reduction: str,
    *,
    data_range: float,
    radians: bool,
    stacklevel: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for suffix, stats in groups.items():
        what = f"scores{suffix or ' (unmasked)'}"
        values = reduce(stats, reduction, data_range=data_range, radians=radians, what=what, stacklevel=stacklevel)
        out.update({name + suffix: values[name] for name in METRICS})
        if not suffix:
            out["band_nrmse"] = values["band_nrmse"]
    nan = groups[""]["nan"]
    out["nan_count"] = nan if reduction == "none" else nan.sum()
    return out


def _names(band_names: Any, found: tuple[str, ...] | None, count: int) -> tuple[str, ...]:
    names = tuple(band_names) if band_names is not None else found or tuple(str(i) for i in range(count))
    if len(names) != count:
        raise ValueError(f"band_names: expected {count} names, found {len(names)}")
    return names


def _plain_dict(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out = {k: float(v) for k, v in values.items() if k not in ("band_nrmse", "nan_count")}
    out["band_nrmse"] = dict(zip(names, map(float, values["band_nrmse"]), strict=True))
    out["nan_count"] = int(values["nan_count"])
    return out


def evaluate(
    pred: Any,
    target: Any,
    *,
    cloudy: Any = None,
    mask: Any = None,
    border: Border = "zero",
    radians: bool = False,
    data_range: float = 1.0,
    reduction: str = "mean",
    band_names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Every score of ``pred`` against ``target``, in one pass over the data.

    Parameters
    ----------
    pred, target : (C, H, W) or (N, C, H, W), numpy, Dask, torch or xarray
        Reflectance in [0, 1].
    cloudy : same shape, optional
        The cloudy input; with ``mask``, adds the ``*_reproduction`` scores (outside the mask vs ``cloudy``).
    mask : (H, W) or (N, H, W), bool or weights in [0, 1], optional
        Cloud (and shadow) mask; adds the ``*_reconstruction`` scores (inside the mask vs ``target``).
    border, radians, data_range
        As in :func:`xcloudfree.metrics.ssim`, :func:`~xcloudfree.metrics.sam` and
        :func:`~xcloudfree.metrics.psnr`; the defaults reproduce UnCRtainTS.
    reduction : {"mean", "pooled"}
        For a batch: mean of the per-sample scores (UnCRtainTS) or one pooled score.
    band_names : names for the ``band_nrmse`` keys (default: the ``band`` coordinate, else "0", "1", ...).

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``psnr`` (dB), ``ssim``, ``sam`` (degrees unless ``radians``), their ``_reconstruction``
        and ``_reproduction`` variants when asked for, ``band_nrmse`` ({band: value}) and ``nan_count`` (values
        of ``pred`` or ``target`` left out as NaN).

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> target = xcf.sensors.reflectance(scene.s2_clear)
    >>> cloudy = xcf.sensors.reflectance(scene.s2)
    >>> scores = xcf.metrics.evaluate(cloudy, target, cloudy=cloudy, mask=scene.cloud_truth)  # identity baseline
    >>> round(scores["psnr"], 2), round(scores["psnr_reconstruction"], 2), scores["psnr_reproduction"]
    (13.85, 8.7, inf)
    >>> round(scores["band_nrmse"]["B04"], 2), scores["nan_count"]
    (1.42, 0)
    """
    check_choice("reduction", reduction, ("mean", "pooled"))
    groups, found = _stats_by_group(pred, target, cloudy, mask, border=border, data_range=data_range)
    names = _names(band_names, found, groups[""]["n"].shape[-1])
    values = _report(groups, reduction, data_range=data_range, radians=radians, stacklevel=4)
    return _plain_dict(values, names)


def evaluate_dataset(
    preds: Iterable[Any],
    targets: Iterable[Any],
    *,
    cloudy: Iterable[Any] | None = None,
    masks: Iterable[Any] | None = None,
    border: Border = "zero",
    radians: bool = False,
    data_range: float = 1.0,
    band_names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The scores of a data set, both ways: mean of per-sample scores and pooled over all pixels.

    ``preds``, ``targets`` (and ``cloudy``, ``masks`` if given) are iterables of matching items, each an image
    ``(C, H, W)`` or a batch ``(N, C, H, W)`` as :func:`evaluate` takes them (a ``(N, C, H, W)`` array is such an
    iterable); sizes may differ between items. Items are scored one at a time, so a generator streams.

    Returns
    -------
    dict
        ``per_sample_mean`` (the UnCRtainTS figure) and ``pooled``, each a dict as :func:`evaluate` returns;
        ``per_sample``, the list of per-image dicts; ``n_samples``; ``definitions``, saying which figure is which.

    Examples
    --------
    >>> import numpy as np
    >>> import xcloudfree as xcf
    >>> targets = [np.full((3, 8, 8), 0.2), np.full((3, 16, 16), 0.4)]  # sizes may differ
    >>> preds = [targets[0] + 0.1, targets[1]]
    >>> result = xcf.metrics.evaluate_dataset(preds, targets)
    >>> result["n_samples"], round(result["per_sample_mean"]["mae"], 3), round(result["pooled"]["mae"], 3)
    (2, 0.05, 0.02)
    """
    extras = {name: None if it is None else iter(it) for name, it in (("cloudy", cloudy), ("masks", masks))}
    collected: list[dict[str, Stats]] = []
    found = None
    for pred, target in zip(preds, targets, strict=True):
        cloudy_item, mask = (None if it is None else next(it, _END) for it in extras.values())
        for name, item in zip(extras, (cloudy_item, mask), strict=True):
            if item is _END:
                raise ValueError(f"{name}: expected one item per sample, found only {len(collected)}")
        groups, found_item = _stats_by_group(pred, target, cloudy_item, mask, border=border, data_range=data_range)
        if collected and groups.keys() != collected[0].keys():
            raise ValueError("masks: expected a mask for every sample or for none, found some missing")
        if collected and groups[""]["n"].shape[-1] != collected[0][""]["n"].shape[-1]:
            raise ValueError(
                f"preds: expected {collected[0]['']['n'].shape[-1]} bands in every sample (as in the first), "
                f"found {groups['']['n'].shape[-1]} in sample {len(collected)}"
            )
        found = found or found_item
        collected.append(groups)
    if not collected:
        raise ValueError("preds: expected at least one sample, found none")
    groups = {key: concat([[g[key]] for g in collected])[0] for key in collected[0]}
    names = _names(band_names, found, groups[""]["n"].shape[-1])
    kwargs = {"data_range": data_range, "radians": radians, "stacklevel": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # said once below, by the mean and the pooled figure
        per_sample = _report(groups, "none", **kwargs)
    count = len(groups[""]["n"])
    return {
        "per_sample_mean": _plain_dict(_report(groups, "mean", **kwargs), names),
        "pooled": _plain_dict(_report(groups, "pooled", **kwargs), names),
        "per_sample": [_plain_dict({k: np.asarray(v)[i] for k, v in per_sample.items()}, names) for i in range(count)],
        "n_samples": count,
        "definitions": dict(_DEFINITIONS),
    }


def evaluate_scene(
    ds: Any,
    target: str = "s2_clear",
    prediction: str = "s2_cloudfree",
    cloudy: str | None = "s2",
    mask: Any = None,
    *,
    border: Border = "zero",
    radians: bool = False,
    reduction: str = "mean",
) -> dict[str, Any]:
    """:func:`evaluate` on the Sentinel-2 variables of a scene Dataset, values in DN.

    Each variable is turned into reflectance (processing-baseline offset, clip to 0..10000, /10000:
    :func:`xcloudfree.sensors.reflectance`). The variables of one Dataset share its band coordinate; bands that a
    variable lacks (all NaN) are left out for in-memory data, while lazy data are scored on all bands in one pass.
    ``cloudy`` is used, for the ``*_reproduction`` scores, only when a ``mask`` ((y, x) bool or
    weights in [0, 1], or (time, y, x)) is given. A ``time`` dimension makes a batch (see ``reduction``). Lazy (Dask)
    variables are scored chunk by chunk, in one pass.

    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, cloud_cover=0.3)
    >>> scene["s2_cloudfree"] = scene.s2_clear + 100  # a prediction 0.01 too bright everywhere
    >>> scores = xcf.metrics.evaluate_scene(scene, mask=scene.cloud_truth)
    >>> round(scores["mae"], 3), round(scores["mae_reconstruction"], 3), round(scores["psnr"], 1)
    (0.01, 0.01, 40.0)
    """
    use = [prediction, target] + ([cloudy] if cloudy is not None and mask is not None else [])
    for var in use:
        if var not in ds.data_vars:
            raise ValueError(f"{var!r}: expected a variable of the scene, found {sorted(map(str, ds.data_vars))}")
        if "band" not in ds[var].coords:
            raise ValueError(f"{var!r}: expected a 'band' coordinate, found dims {ds[var].dims}")
    # Variables of one Dataset share one band coordinate, so a band a variable lacks reads as all NaN there.
    # Finding those bands reads the data: done for in-memory variables only, since on Dask it would compute a lazy
    # prediction twice (the inference engine keeps only the bands it predicts, so its output has none).
    bands = [str(b) for b in ds[target]["band"].values]
    if all(ds[var].chunks is None for var in use):
        has_data = {var: ds[var].notnull().any([d for d in ds[var].dims if d != "band"]).values for var in use}
        bands = [b for i, b in enumerate(bands) if all(bool(has_data[var][i]) for var in use)]
    if not bands:
        raise ValueError(f"{prediction!r}: expected bands with data in common with {target!r}, found none")
    arrays = [reflectance(ds[var].sel(band=bands)) for var in use]
    return evaluate(
        arrays[0],
        arrays[1],
        cloudy=arrays[2] if len(arrays) > 2 else None,
        mask=mask,
        border=border,
        radians=radians,
        reduction=reduction,
    )
