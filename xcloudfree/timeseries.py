"""Gap filling of Sentinel-2 time series: per-date cloud masks, then temporal filling, then a network.

A time series is the scene Dataset with a leading ``time`` dimension (``s2 (time, band, y, x)`` DN, optional
``s1 (time, polarization, y, x)`` dB with coordinate ``s1_lag_days``, ``scl (time, y, x)``, ``dem (y, x)``).
:func:`fill` masks every date, keeps the clear observations as they are and fills the rest with the first of
the requested methods that can fill a pixel:

=================  ================================================================================================
method             value of a masked pixel of date *t*
=================  ================================================================================================
``least_cloudy``   AllClear's *LeastCloudy* baseline: the scene with the lowest cloud fraction (cloud-or-shadow
                   share of its pixels). Where that scene is masked too, the next least cloudy one, and so
                   on: the pixel takes the least cloudy scene *that is clear there* (AllClear copies the least
                   cloudy image whole, clouds included). Ties go to the earlier date.
``mosaic``         AllClear's *Mosaicing* baseline: the mean of all clear observations of the pixel.
``linear``         per-pixel linear interpolation in time between the previous and the next clear observation,
                   weighted by day distance: ``prev + (next − prev)·(t − t_prev)/(t_next − t_prev)``. With a clear
                   observation on one side only (series ends, or the other side beyond ``max_gap_days``) that one
                   is held, as ``pandas.Series.interpolate(limit_direction="both")`` does.
``nearest``        the closer of the previous and the next clear observation (a tie goes to the previous one).
``model``          the mono-temporal network (:func:`xcloudfree.inference.predict`) on date *t* with that date's
                   S1 and the DEM; NaN (hence ``unfilled``) where its input is NaN, e.g. dates without S1.
=================  ================================================================================================

``max_gap_days`` limits every temporal method: only clear observations at most that many days from *t* count
(for ``linear`` each side separately). The candidates of ``least_cloudy`` and ``mosaic`` are all dates within the
gap (all dates without one); a date's own masked pixels are never a candidate.

The fill is lazy on Dask and built from one date at a time: the previous/next clear observation comes from
a forward/backward scan over the dates (a forward- and backward-fill of the clear values and of their dates),
sums run over the dates in a fixed order, so the pixels do not depend on the chunking. A mask *method* on Dask
is computed when the fill is built (with ``shadow_stats="scene"`` after a first pass for every date's shadow
statistics), in one streaming pass over all dates, and kept as booleans (1 byte a pixel and date): a mask reads
its chunk's neighbours, and in one graph with the fill the input chunks of every date would wait for it. Memory
is then that of the chunks in flight with, for each, one input chunk per date that waits for the scans or
composites over the dates (uint16: 6.5 MiB per date for 13 bands × 512²). ``model`` runs the network on every
date that has S1, whatever remains to be filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .sensors import harmonize_s2

__all__ = ["fill", "leave_one_out", "METHODS", "FILL_SOURCES", "OBSERVED", "TEMPORAL", "MODEL", "UNFILLED"]

#: Fill methods of :func:`fill`, temporal first.
METHODS = ("least_cloudy", "mosaic", "linear", "nearest", "model")
OBSERVED, TEMPORAL, MODEL, UNFILLED = 0, 1, 2, 3
#: Codes of ``fill_source``.
FILL_SOURCES: dict[int, str] = {OBSERVED: "observed", TEMPORAL: "temporal", MODEL: "model", UNFILLED: "unfilled"}
#: Options of :func:`fill` that go to the network (:func:`xcloudfree.inference.predict`); the others go to the mask.
MODEL_OPTIONS = ("tile", "overlap", "blend", "batch_size", "device", "precision")
_DAY = np.timedelta64(1, "D")


def fill(
    ts: xr.Dataset,
    method: str | Sequence[str] = "linear",
    *,
    mask: str | xr.DataArray = "dsen2cr",
    max_gap_days: float | None = None,
    model: Any = None,
    **options: Any,
) -> xr.Dataset:
    """Fill the cloudy pixels of a Sentinel-2 time series; observed clear pixels stay as they are.

    Parameters
    ----------
    ts : xarray.Dataset
        Time series scene: ``s2 (time, band, y, x)`` DN (uint16, or float with NaN for nodata), ``time``
        datetime64 sorted strictly increasing; ``s1 (time, polarization, y, x)`` dB and ``dem (y, x)`` m for
        ``model``; ``scl (time, y, x)`` for ``mask="scl"``. A DataArray ``(time, band, y, x)`` is taken as ``s2``.
    method : str or sequence of str
        One of :data:`METHODS` or several in order of preference, e.g. ``["linear", "model"]``: each pixel
        takes the first method that can fill it.
    mask : str or xarray.DataArray
        A mask method of :func:`xcloudfree.masking.detect` (``dsen2cr``, ``s2cloudless``, ``scl``, ...), run
        date by date (cloud or shadow = masked); or a boolean DataArray ``(time, y, x)``, True = cloudy/shadow.
    max_gap_days : float, optional
        Use clear observations at most this many days away (default: any distance).
    model : optional
        For ``method="model"``: a model name, checkpoint path or ``nn.Module`` of :mod:`xcloudfree.models`
        that predicts every band of ``s2``.
    **options
        ``tile``, ``overlap``, ``blend``, ``batch_size``, ``device``, ``precision`` go to
        :func:`xcloudfree.inference.predict`; anything else to the mask method.

    Returns
    -------
    xarray.Dataset
        ``ts`` plus ``s2_filled (time, band, y, x)`` (float32 DN, float64 for float64 input; observed clear
        pixels bit for bit, NaN where unfilled), ``mask (time, y, x)`` bool (cloud or shadow),
        ``fill_source (time, y, x)`` uint8 (0 observed, 1 temporal, 2 model, 3 unfilled; CF ``flag_values`` /
        ``flag_meanings``) and ``fill_gap_days (time, y, x)`` float32 (days to the farthest clear observation
        used; 0 observed, NaN for model and unfilled). Pixels that are NaN or nodata in ``s2`` count as not
        observed and are filled too. Lazy on Dask input (a mask method is computed first, see the module
        docstring); chunks of ``s2`` kept.

    Examples
    --------
    Three dates of one synthetic field, cloudy on the middle one, with the true clouds and shadows as the mask:

    >>> import numpy as np, xarray as xr
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=32, cloud_cover=0.3)
    >>> time = np.array(["2024-06-01", "2024-06-11", "2024-06-21"], dtype="datetime64[ns]")
    >>> ts = xr.Dataset({"s2": xr.concat([scene.s2_clear, scene.s2, scene.s2_clear], dim="time")})
    >>> ts = ts.assign_coords(time=time)
    >>> cloudy = scene.cloud_truth | scene.shadow_truth
    >>> mask = xr.concat([cloudy & False, cloudy, cloudy & False], dim="time").assign_coords(time=time)
    >>> out = xcf.timeseries.fill(ts, "linear", mask=mask)
    >>> out.s2_filled.dims, np.bincount(out.fill_source.values.ravel()).tolist()  # pixels: observed, temporal
    (('time', 'band', 'y', 'x'), [2757, 315])
    >>> float(abs(out.s2_filled[1] - scene.s2_clear).where(mask[1]).max())  # the clear ground restored
    0.0

    On real series: ``xcf.timeseries.fill(ts, ["linear", "model"], mask="scl", max_gap_days=30,
    model="dsen2cr")``, or ``ts.cloudfree.fill("nearest", mask="s2cloudless", max_gap_days=20)``.
    """
    if isinstance(ts, xr.DataArray):
        ts = ts.to_dataset(name="s2")
    methods = _methods(method)
    s2, days = _check_series(ts)
    if max_gap_days is not None and not (np.isscalar(max_gap_days) and float(max_gap_days) >= 0):
        raise ValueError(f"max_gap_days: expected a number of days ≥ 0 or None, found {max_gap_days!r}")
    max_gap = None if max_gap_days is None else float(max_gap_days)
    model_options = {k: options.pop(k) for k in list(options) if k in MODEL_OPTIONS}
    if ("model" in methods) != (model is not None):
        raise ValueError(
            "model: expected a network exactly when method includes 'model' "
            f"(method {list(methods)}, model {'None' if model is None else type(model).__name__})"
        )

    data = s2.data
    out_dtype = np.dtype(data.dtype) if np.dtype(data.dtype).kind == "f" else np.dtype(np.float32)
    yx_chunks = None if s2.chunks is None else data.chunks[2:]
    cloudy = _cloud_mask(ts, s2, mask, options, yx_chunks)
    valid = _valid(s2)
    clear = [valid[t] & ~cloudy[t] for t in range(len(days))]
    # Scene cloud fractions from the masks alone: with a mask given as an array, no S2 chunk waits for them.
    fraction = _cloud_fractions(cloudy) if "least_cloudy" in methods else None
    series = _Series(data, valid, clear, days, out_dtype, max_gap, fraction)
    fillers = [_model_filler(ts, s2, cloudy, model, model_options, yx_chunks) if m == "model" else m for m in methods]

    filled, source, gap = [], [], []
    for t in range(len(days)):
        value = _choose(clear[t], data[t], out_dtype.type(np.nan), out_dtype)
        src = np.where(clear[t], np.uint8(OBSERVED), np.uint8(UNFILLED))
        g = np.where(clear[t], np.float32(0), np.float32(np.nan))
        todo = ~clear[t]
        for filler in fillers:
            if isinstance(filler, str):
                v, ok, dist, code = *series.fill(filler, t), TEMPORAL
            else:
                found = filler(t)
                if found is None:  # no S1 on this date: the network cannot run
                    continue
                v, ok, dist, code = *found, MODEL
            use = todo & ok
            value = np.where(use[None], v.astype(out_dtype, copy=False), value)
            src = np.where(use, np.uint8(code), src)
            g = np.where(use, dist.astype(np.float32), g)
            todo = todo & ~ok
        filled.append(value)
        source.append(src)
        gap.append(g)

    template = s2.isel(band=0, drop=True)
    template.attrs = {}
    grid = {"grid_mapping": "spatial_ref"} if "spatial_ref" in ts.coords else {}
    describe = {"fill_methods": ",".join(methods), "max_gap_days": "none" if max_gap is None else max_gap}
    s2_filled = s2.copy(data=_stack(filled, data)).astype(out_dtype)
    # Unfilled pixels are NaN: an integer nodata value of the input does not describe the output.
    s2_filled.attrs = {k: v for k, v in s2.attrs.items() if k not in ("_FillValue", "nodata")} | describe | grid
    result = ts.assign(
        s2_filled=s2_filled,
        mask=template.copy(data=_stack(cloudy, template.data)).assign_attrs(
            long_name="cloud or cloud shadow (True = masked)",
            mask_method=mask if isinstance(mask, str) else "user",
            **grid,
        ),
        fill_source=template.copy(data=_stack(source, template.data)).assign_attrs(
            long_name="source of each pixel of s2_filled",
            flag_values=list(FILL_SOURCES),
            flag_meanings=" ".join(FILL_SOURCES.values()),
            **describe,
            **grid,
        ),
        fill_gap_days=template.copy(data=_stack(gap, template.data)).assign_attrs(
            long_name="days to the farthest clear observation used (0 observed, NaN model or unfilled)",
            units="days",
            **grid,
        ),
    )
    return result


def leave_one_out(
    ts: xr.Dataset,
    holes: Mapping[int, Any],
    methods: Sequence[str | Sequence[str]],
    *,
    mask: str | xr.DataArray = "dsen2cr",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Accuracy of gap filling on real data: hide pixels of clear dates, fill them from the others, score them.

    Parameters
    ----------
    ts : time series Dataset as for :func:`fill` (loaded into memory here)
    holes : {date index: (y, x) bool}
        The pixels to hide on that date (e.g. the real cloud mask of another image). They become NaN and
        masked, so no method can see them; the scores cover the hidden pixels that were clear on that date.
    methods : what to compare, each a ``method`` of :func:`fill` (a name or a list in order of preference)
    mask : the masks of every date (a method name, run once, or a boolean DataArray (time, y, x))
    **kwargs : more arguments of :func:`fill` (``max_gap_days``, ``model``, ...)

    Returns
    -------
    list of dict, one per (date, method): ``date``, ``method``, ``pixels`` (scored), ``filled`` (share of them
    filled), and the ``*_reconstruction`` scores of :func:`xcloudfree.metrics.evaluate` (reflectance 0–1; MAE,
    RMSE, PSNR dB, SAM degrees, SSIM) of the filled against the true values, inside the hidden pixels.

    Examples
    --------
    Three clear dates 10 days apart, each 100 DN (0.01) brighter than the one before; a 16 × 16 hole on the
    middle one:

    >>> import numpy as np, xarray as xr
    >>> import xcloudfree as xcf
    >>> clear = xcf.datasets.synthetic_scene(size=32).s2_clear
    >>> time = np.array(["2024-06-01", "2024-06-11", "2024-06-21"], dtype="datetime64[ns]")
    >>> ts = xr.Dataset({"s2": xr.concat([clear, clear + 100, clear + 200], dim="time").assign_coords(time=time)})
    >>> hole = np.zeros((32, 32), bool)
    >>> hole[8:24, 8:24] = True
    >>> no_clouds = xr.zeros_like(ts.s2.isel(band=0), dtype=bool)
    >>> rows = xcf.timeseries.leave_one_out(ts, {1: hole}, ["linear", "nearest"], mask=no_clouds)
    >>> [(r["method"], r["pixels"], round(r["mae_reconstruction"], 3)) for r in rows]
    [('linear', 256, 0.0), ('nearest', 256, 0.01)]
    """
    from .metrics import evaluate
    from .sensors import reflectance

    ts = ts.load()
    s2, _ = _check_series(ts)
    cloudy = np.stack([np.asarray(c) for c in _cloud_mask(ts, s2, mask, {}, None)])
    truth = s2.astype(np.float32)
    rows = []
    for t, hole in holes.items():
        hole = np.asarray(hole, bool)
        if hole.shape != cloudy.shape[1:]:
            raise ValueError(f"holes[{t}]: expected a (y, x) mask of shape {cloudy.shape[1:]}, found {hole.shape}")
        scored = hole & ~cloudy[t] & np.isfinite(truth.values[t]).all(axis=0)
        values = truth.values.copy()
        values[t][:, hole] = np.nan
        hidden = ts.assign(s2=truth.copy(data=values))
        masks = cloudy.copy()
        masks[t] |= hole
        masks = xr.DataArray(masks, dims=("time", "y", "x"))
        for method in methods:
            pred = fill(hidden, method, mask=masks, **kwargs)["s2_filled"].isel(time=t)
            filled = np.isfinite(pred.values).all(axis=0)
            scores = evaluate(reflectance(pred), reflectance(truth.isel(time=t)), mask=scored)
            rows.append(
                {
                    "date": str(ts["time"].values[t])[:10],
                    "method": method if isinstance(method, str) else ",".join(method),
                    "pixels": int(scored.sum()),
                    "filled": float(filled[scored].mean()) if scored.any() else float("nan"),
                    **{k: v for k, v in scores.items() if k.endswith("_reconstruction")},
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------- inputs
def _methods(method: str | Sequence[str]) -> tuple[str, ...]:
    methods = (method,) if isinstance(method, str) else tuple(method)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise ValueError(f"method: expected one of {list(METHODS)} or a list of them without repeats, found {method!r}")
    return methods


def _check_series(ts: xr.Dataset) -> tuple[xr.DataArray, np.ndarray]:
    """``s2`` as (time, band, y, x) with the offset applied, and each date in days since the first (float64)."""
    if not isinstance(ts, xr.Dataset) or "s2" not in ts:
        found = list(ts.data_vars) if isinstance(ts, xr.Dataset) else type(ts).__name__
        raise ValueError(f"ts: expected a time series Dataset with s2 (time, band, y, x), found {found}")
    s2 = ts["s2"]
    if set(s2.dims) != {"time", "band", "y", "x"}:
        raise ValueError(f"ts: expected s2 with dims (time, band, y, x), found {s2.dims}")
    if "time" not in s2.coords or not np.issubdtype(s2["time"].dtype, np.datetime64):
        raise ValueError(f"ts: expected a datetime64 'time' coordinate, found {s2.coords.get('time')!r}")
    times = s2["time"].values.astype("datetime64[ns]")
    days = (times - times[0]) / _DAY
    if len(days) > 1 and not np.all(np.diff(days) > 0):
        raise ValueError(
            f"ts: expected the 'time' coordinate sorted in increasing order without repeats, found "
            f"{[str(t)[:19] for t in times]}"
        )
    return harmonize_s2(s2).transpose("time", "band", "y", "x"), days.astype(np.float64)


def _cloud_mask(ts: xr.Dataset, s2: xr.DataArray, mask: Any, options: dict, yx_chunks: tuple | None) -> list[Any]:
    """Per date: (y, x) bool, True = cloud or shadow; chunked like ``s2``."""
    from .masking import METHODS as MASK_METHODS
    from .masking import detect

    n, h, w = s2.sizes["time"], s2.sizes["y"], s2.sizes["x"]
    if isinstance(mask, xr.DataArray):
        if options:
            raise ValueError(f"options: a mask DataArray takes no mask options, found {sorted(options)}")
        if set(mask.dims) != {"time", "y", "x"} or mask.transpose("time", "y", "x").shape != (n, h, w):
            raise ValueError(
                f"mask: expected a boolean DataArray (time, y, x) of shape {(n, h, w)}, found dims {mask.dims} "
                f"and shape {mask.shape}"
            )
        if mask.dtype.kind not in "bui":
            raise ValueError(f"mask: expected booleans (True = cloudy), found dtype {mask.dtype}")
        data = mask.transpose("time", "y", "x").data.astype(bool)
        if yx_chunks is not None:
            import dask.array as da

            data = da.asarray(data).rechunk((1, *yx_chunks))
        return [data[t] for t in range(n)]
    if not isinstance(mask, str) or mask not in MASK_METHODS:
        raise ValueError(
            f"mask: expected a mask method {list(MASK_METHODS)} or a boolean DataArray (time, y, x), found "
            f"{repr(mask) if isinstance(mask, str) else type(mask).__name__}"
        )
    if mask == "scl":  # the classification of each date (no statistics to gather)
        dates = [detect(ts.isel(time=t), method=mask, **options) for t in range(n)]
    else:
        # One call over (time, band, y, x): scene statistics of every date are computed in one pass.
        masks = detect(ts["s2"], method=mask, **options)
        dates = [masks.isel(time=t) for t in range(n)]
    out = []
    for m in dates:
        cloudy = (m["cloud"] | m["shadow"]).transpose("y", "x").data
        if yx_chunks is not None:
            cloudy = cloudy.rechunk(yx_chunks)
        out.append(cloudy)
    if mask != "scl" and any(hasattr(c, "dask") for c in out):
        import dask

        # A mask reads its date with a halo of the neighbouring chunks: in one graph with the fill, the input
        # chunks of every date and chunk would wait in memory for the masks (measured: 3.7 GB for 20 dates of
        # 2048²). Computed first in one streaming pass and kept as booleans (1 byte a pixel and date, on the
        # workers of a cluster), they leave the fill holding only the chunks it works on.
        out = list(dask.persist(*out))
    return out


def _valid(s2: xr.DataArray) -> list[Any]:
    """Per date: (y, x) bool, every band finite and none at the nodata value."""
    from .masking.blocks import nodata_of

    data = s2.data
    nodata = nodata_of(s2)
    out = []
    for t in range(s2.sizes["time"]):
        x = data[t]
        ok = np.isfinite(x).all(axis=0) if x.dtype.kind == "f" else np.ones_like(x[0], dtype=bool)
        if nodata is not None:
            ok = ok & ~(x == nodata).any(axis=0)
        out.append(ok)
    return out


def _cloud_fractions(cloudy: list[Any]) -> list[Any]:
    """Per date: the masked share of its pixels, as AllClear counts it (integer counts: exact on any chunking)."""
    return [c.sum(dtype=np.int64) / c.size for c in cloudy]


def _choose(keep: Any, values: Any, other: Any, dtype: np.dtype) -> Any:
    """``values`` (band, y, x) where ``keep`` (y, x), else ``other``, as ``dtype``.

    The input is cast in the task that chooses (not in a cast of its own that several dates' tasks share), so
    what waits in memory for the later dates is the input chunk itself (uint16: half a float32 copy). Integer
    DN are exact in the promoted type, so the values are those of casting first.
    """
    return np.where(keep[None], values, other).astype(dtype, copy=False)


def _stack(parts: list[Any], like: Any) -> Any:
    """Per-date arrays → one array on the time axis, chunked like ``like`` (Dask) or a plain stack (NumPy)."""
    stacked = np.stack(parts)
    if hasattr(like, "chunks") and hasattr(stacked, "dask"):
        stacked = stacked.rechunk(like.chunks)
    return stacked


# ------------------------------------------------------------------------------------------------- temporal
class _Series:
    """The clear observations of a series and what each temporal method makes of them, date by date."""

    def __init__(
        self,
        data: Any,
        valid: list[Any],
        clear: list[Any],
        days: np.ndarray,
        dtype: np.dtype,
        max_gap: float | None,
        fraction: list[Any] | None,
    ) -> None:
        self.data, self.valid, self.clear, self.days = data, valid, clear, days
        self.dtype, self.max_gap, self.fraction = dtype, max_gap, fraction
        self._scans: tuple | None = None
        self._composites: dict[tuple, tuple] = {}

    def fill(self, method: str, t: int) -> tuple[Any, Any, Any]:
        """(value (band, y, x), fillable (y, x), gap in days (y, x)) of ``method`` on date ``t``."""
        if method in ("linear", "nearest"):
            return self._interpolate(method, t)
        return self._composite(method, t)

    def _near(self, gap: Any) -> Any:
        return np.isfinite(gap) if self.max_gap is None else gap <= self.max_gap  # NaN compares False

    # previous / next clear observation: a forward and a backward fill over the dates
    def _scan(self) -> tuple[list, list, list, list]:
        if self._scans is None:
            n, nan = len(self.days), self.dtype.type(np.nan)
            prev_v, prev_d, next_v, next_d = [None] * n, [None] * n, [None] * n, [None] * n
            for order, values, dates in ((range(n), prev_v, prev_d), (range(n - 1, -1, -1), next_v, next_d)):
                v = d = None
                for s in order:
                    c = self.clear[s]
                    v = _choose(c, self.data[s], nan if v is None else v, self.dtype)
                    d = np.where(c, self.days[s], np.nan if d is None else d)
                    values[s], dates[s] = v, d
            self._scans = (prev_v, prev_d, next_v, next_d)
        return self._scans

    def _interpolate(self, method: str, t: int) -> tuple[Any, Any, Any]:
        prev_v, prev_d, next_v, next_d = (scan[t] for scan in self._scan())
        gp, gn = self.days[t] - prev_d, next_d - self.days[t]
        hp, hn = self._near(gp), self._near(gn)
        ok = hp | hn
        if method == "nearest":
            take_prev = hp & (~hn | (gp <= gn))
            return np.where(take_prev[None], prev_v, next_v), ok, np.where(take_prev, gp, gn)
        both = hp & hn
        # Masked pixels have t_prev < t < t_next; observed ones (t_prev = t_next = t, weight unused) divide by 1.
        span = gp + gn
        weight = np.where(both, gp, 0.0) / np.where(both & (span > 0), span, 1.0)
        blend = prev_v.astype(np.float64) + (next_v.astype(np.float64) - prev_v) * weight[None]
        value = np.where(both[None], blend, np.where(hp[None], prev_v, next_v))
        return value, ok, np.where(both, np.fmax(gp, gn), np.where(hp, gp, gn))

    # least cloudy scene / mean of the clear views, over the dates within the gap
    def _candidates(self, t: int) -> tuple[int, ...]:
        if self.max_gap is None:
            return tuple(range(len(self.days)))
        return tuple(int(s) for s in np.flatnonzero(np.abs(self.days - self.days[t]) <= self.max_gap))

    def _composite(self, method: str, t: int) -> tuple[Any, Any, Any]:
        candidates = self._candidates(t)
        key = (method, candidates)
        if key not in self._composites:
            self._composites[key] = (self._least_cloudy if method == "least_cloudy" else self._mosaic)(candidates)
        value, ok, first, last = self._composites[key]
        d = self.days[t]
        # Farthest clear view used: for least_cloudy first = last = the chosen date.
        return value, ok, np.fmax(np.abs(d - first), np.abs(last - d))

    def _least_cloudy(self, candidates: tuple[int, ...]) -> tuple[Any, Any, Any, Any]:
        fraction = self.fraction
        value = best = day = None
        for s in candidates:
            c = self.clear[s]
            better = c if best is None else c & (fraction[s] < best)  # strict: ties keep the earlier date
            value = _choose(better, self.data[s], self.dtype.type(np.nan) if value is None else value, self.dtype)
            best = np.where(better, fraction[s], np.inf if best is None else best)
            day = np.where(better, self.days[s], np.nan if day is None else day)
        return value, np.isfinite(day), day, day

    def _mosaic(self, candidates: tuple[int, ...]) -> tuple[Any, Any, Any, Any]:
        total = count = first = last = None
        for s in candidates:  # a fixed order of float64 sums: the same on any chunking
            c = self.clear[s]
            part = _choose(c, self.data[s], np.float64(0.0), np.dtype(np.float64))
            total = part if total is None else total + part
            count = c.astype(np.int32) if count is None else count + c
            day = np.where(c, self.days[s], np.nan)
            first = day if first is None else np.fmin(first, day)
            last = np.where(c, self.days[s], np.nan if last is None else last)
        ok = count > 0
        return total / np.maximum(count, 1)[None], ok, first, last


# ---------------------------------------------------------------------------------------------------- model
def _model_filler(
    ts: xr.Dataset, s2: xr.DataArray, cloudy: list[Any], model: Any, options: dict, yx_chunks: tuple | None
) -> Any:
    """A function date → (value, fillable, gap) from the network, or None for a date it cannot run on."""
    from .inference import predict, resolve_model
    from .inference.inputs import required_variables

    _, spec = resolve_model(model, device=options.get("device", "auto"), precision=options.get("precision", "auto"))
    bands = [str(b) for b in s2["band"].values]
    missing = [b for b in bands if b not in spec.output_bands]
    if missing:
        raise ValueError(
            f"model: expected a network predicting every band of s2 {bands}, found outputs "
            f"{list(spec.output_bands)} (missing {missing})"
        )
    needs = [v for v in required_variables(spec) if v in ("s1", "dem")]
    absent = [v for v in needs if v not in ts]
    if absent:
        raise ValueError(f"ts: the model needs {absent} (S1 dB (time, polarization, y, x), DEM m (y, x)), not found")
    lag = None
    if "s1" in needs and "s1_lag_days" in ts.coords and ts["s1_lag_days"].chunks is None:
        # Skip the dates without S1 when that is known without computing; else their NaN S1 gives NaN anyway.
        lag = ts["s1_lag_days"].values
    variables = ["s2", *needs]

    def run(t: int) -> tuple[Any, Any, Any] | None:
        if lag is not None and np.isnan(lag[t]):
            return None
        date = ts[variables].isel(time=t).drop_vars("s1_lag_days", errors="ignore")
        # Networks conditioned on a cloud map get the date's binary mask.
        cloud_map = None
        if spec.cloud_map:
            cloud_map = date["s2"].isel(band=0, drop=True).copy(data=cloudy[t]).astype(np.float32)
        # The raw network output: which pixels keep their observation is decided here, not by the engine.
        out = predict(date, model, keep_clear=False, cloud_map=cloud_map, **options)["s2_cloudfree"]
        out = out.sel(band=bands).transpose("band", "y", "x").data
        if yx_chunks is not None:
            out = out.rechunk((len(bands), *yx_chunks))
        return out, np.isfinite(out).all(axis=0), np.float32(np.nan)

    return run
