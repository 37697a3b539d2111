"""Gap filling of S2 time series: each method's definition, provenance, combinations, the model fallback,
chunk invariance, laziness, bad input, and a reduced leave-one-out on the real Rome series."""

from __future__ import annotations

import re

import dask
import numpy as np
import pytest
import xarray as xr

import xcloudfree as xcf
from xcloudfree.datasets import blend_clouds, perlin_clouds
from xcloudfree.sensors import S2_BAND_NAMES
from xcloudfree.timeseries import MODEL, OBSERVED, TEMPORAL, UNFILLED, fill, leave_one_out

TEMPORAL_METHODS = ("least_cloudy", "mosaic", "linear", "nearest")


def _toy(days, values, cloudy):
    """A (time, 13, h, w) float32 series: ``values[t]`` (h, w) in every band (band b adds b), explicit mask."""
    values = np.asarray(values, np.float32)
    n, h, w = values.shape
    s2 = values[:, None] + np.arange(13, dtype=np.float32)[None, :, None, None]
    times = np.datetime64("2021-03-01", "ns") + np.asarray(days) * np.timedelta64(1, "D")
    ts = xr.Dataset(
        {"s2": (("time", "band", "y", "x"), s2, {"product": "L1C", "units": "DN"})},
        coords={"time": times, "band": list(S2_BAND_NAMES), "y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
    )
    return ts, xr.DataArray(np.asarray(cloudy, bool), dims=("time", "y", "x"))


def _b0(out, t):
    return out["s2_filled"].isel(time=t, band=0).values


@pytest.fixture(scope="module")
def series():
    """Six dates of one synthetic ground (slowly brightening) under different Perlin clouds, with S1 and DEM."""
    size, n = 48, 6
    base = xcf.datasets.synthetic_scene(size=size, seed=3, cloud_cover=0.0)
    clear = base["s2_clear"].values.astype(np.float32)
    s2, truth = [], []
    for t in range(n):
        opacity = perlin_clouds((size, size), 20 + t, cover=(0.2, 0.5, 0.35, 0.6, 0.25, 0.4)[t])
        s2.append(np.clip(blend_clouds(clear * (1 + 0.04 * t), opacity), 0, 65535).astype(np.uint16))
        truth.append(opacity >= 0.1)
    days = np.array([0, 10, 15, 35, 40, 60])
    ts = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), np.stack(s2), {"product": "L1C", "units": "DN"}),
            "s1": (("time", "polarization", "y", "x"), np.stack([base["s1"].values] * n), {"units": "dB"}),
            "dem": base["dem"],
        },
        coords={
            "time": np.datetime64("2020-04-01", "ns") + days * np.timedelta64(1, "D"),
            "band": base["band"],
            "polarization": base["polarization"],
            "y": base["y"],
            "x": base["x"],
            "s1_lag_days": ("time", np.array([0.5, np.nan, 1.0, -2.0, 0.0, 3.0])),
        },
    ).rio.write_crs(base.rio.crs)
    return ts, xr.DataArray(np.stack(truth), dims=("time", "y", "x"))


@pytest.fixture(scope="module")
def small_net():
    import torch

    torch.manual_seed(0)
    return xcf.models.create("dsen2cr", features=8, blocks=2)


# ------------------------------------------------------------------------------------------ definitions
def test_observed_pixels_are_kept_bit_for_bit(series):
    ts, cloudy = series
    rng = np.random.default_rng(0)
    noisy = ts.assign(s2=ts["s2"].astype(np.float32) + rng.random(ts["s2"].shape, np.float32))  # non-integer DN
    for data in (ts, noisy):
        clear = ~cloudy.values
        for method in TEMPORAL_METHODS:
            out = fill(data, method, mask=cloudy)
            observed = np.moveaxis(data["s2"].values.astype(np.float32), 1, -1)[clear]
            kept = np.moveaxis(out["s2_filled"].values, 1, -1)[clear]
            assert kept.dtype == np.float32
            assert np.array_equal(kept.view(np.uint32), observed.view(np.uint32)), method
            assert np.all(out["fill_source"].values[clear] == OBSERVED)
            assert np.all(out["fill_gap_days"].values[clear] == 0)
            assert np.array_equal(out["mask"].values, cloudy.values)


def test_linear_is_the_day_weighted_blend_and_holds_at_the_ends():
    # Pixel (0, 0): clear 100 on day 0, masked on day 4 and day 6, clear 400 on day 10.
    # Pixel (0, 1): masked on the last date only → the previous clear value is held.
    values = [[[100, 7]], [[999, 8]], [[999, 9]], [[400, 11]]]
    cloudy = [[[0, 0]], [[1, 0]], [[1, 0]], [[0, 1]]]
    ts, mask = _toy([0, 4, 6, 10], values, cloudy)
    out = fill(ts, "linear", mask=mask)
    assert _b0(out, 1)[0, 0] == np.float32(100 + 300 * 4 / 10)
    assert _b0(out, 2)[0, 0] == np.float32(100 + 300 * 6 / 10)
    assert out["s2_filled"].values[1, 12, 0, 0] == np.float32(112 + 300 * 4 / 10)  # every band
    assert out["fill_gap_days"].values[1, 0, 0] == 6  # farthest observation used: day 10 from day 4
    assert out["fill_gap_days"].values[2, 0, 0] == 6
    assert _b0(out, 3)[0, 1] == 9 and out["fill_gap_days"].values[3, 0, 1] == 4
    assert np.all(out["fill_source"].values[[1, 2, 3], 0, [0, 0, 1]] == TEMPORAL)


def test_nearest_takes_the_closer_observation_ties_to_the_previous():
    values = [[[100, 100]], [[999, 999]], [[400, 999]], [[500, 500]]]
    cloudy = [[[0, 0]], [[1, 1]], [[0, 1]], [[0, 0]]]
    ts, mask = _toy([0, 4, 10, 18], values, cloudy)
    out = fill(ts, "nearest", mask=mask)
    assert _b0(out, 1)[0, 0] == 100 and out["fill_gap_days"].values[1, 0, 0] == 4  # day 0 (4 d) beats day 10 (6 d)
    assert _b0(out, 2)[0, 1] == 500 and out["fill_gap_days"].values[2, 0, 1] == 8  # day 18 (8 d) beats day 0 (10 d)
    ts, mask = _toy([0, 5, 10], [[[100]], [[999]], [[300]]], [[[0]], [[1]], [[0]]])
    assert _b0(fill(ts, "nearest", mask=mask), 1)[0, 0] == 100  # a tie goes to the previous observation


def test_least_cloudy_takes_the_least_cloudy_scene_clear_at_the_pixel():
    # Scene cloud fractions: date 0 50 %, date 1 25 % (target), date 2 0 %, date 3 25 %; 2×2 pixels.
    values = [np.full((2, 2), 10.0), np.full((2, 2), 20.0), np.full((2, 2), 30.0), np.full((2, 2), 40.0)]
    cloudy = np.zeros((4, 2, 2), bool)
    cloudy[0, 0] = True  # date 0: top row
    cloudy[1, 0, 0] = True  # the target pixel
    cloudy[3, 1, 1] = True
    ts, mask = _toy([0, 10, 30, 50], values, cloudy)
    out = fill(ts, "least_cloudy", mask=mask)
    assert _b0(out, 1)[0, 0] == 30 and out["fill_gap_days"].values[1, 0, 0] == 20  # date 2, the clearest scene
    # Where the clearest scene is masked too, the next least cloudy one clear there: date 3 beats date 0.
    cloudy[2, 0, 0] = True
    ts, mask = _toy([0, 10, 30, 50], values, cloudy)
    out = fill(ts, "least_cloudy", mask=mask)
    assert _b0(out, 1)[0, 0] == 40 and out["fill_gap_days"].values[1, 0, 0] == 40


def test_mosaic_is_the_mean_of_the_clear_views():
    values = [[[10.0, 10.0]], [[999.0, 999.0]], [[40.0, 40.0]], [[70.0, 70.0]]]
    cloudy = [[[0, 0]], [[1, 1]], [[0, 1]], [[0, 0]]]
    ts, mask = _toy([0, 10, 20, 45], values, cloudy)
    out = fill(ts, "mosaic", mask=mask)
    assert _b0(out, 1)[0, 0] == 40 and _b0(out, 1)[0, 1] == 40  # (10 + 40 + 70) / 3 and (10 + 70) / 2
    assert _b0(out, 2)[0, 1] == 40  # date 2's masked pixel: (10 + 70) / 2
    assert out["fill_gap_days"].values[1, 0, 0] == 35  # farthest view used: day 45 from day 10


def test_max_gap_days_limits_every_method():
    values = [[[100, 100]], [[999, 999]], [[400, 400]]]
    cloudy = [[[0, 1]], [[1, 1]], [[0, 0]]]
    ts, mask = _toy([0, 6, 30], values, cloudy)
    for method in TEMPORAL_METHODS:
        out = fill(ts, method, mask=mask, max_gap_days=10)
        # (0, 0) of date 1: only day 0 is within 10 days; (0, 1): nothing is.
        assert _b0(out, 1)[0, 0] == 100, method
        assert out["fill_gap_days"].values[1, 0, 0] == 6
        assert np.isnan(_b0(out, 1)[0, 1]) and np.isnan(out["fill_gap_days"].values[1, 0, 1])
        assert out["fill_source"].values[1, 0, 1] == UNFILLED
        assert out["fill_source"].attrs["flag_values"] == [0, 1, 2, 3]
        assert out["fill_source"].attrs["flag_meanings"] == "observed temporal model unfilled"


def test_combinations_follow_the_order_of_preference(series):
    ts, cloudy = series
    alone = {m: fill(ts, m, mask=cloudy, max_gap_days=12) for m in ("mosaic", "linear")}
    filled = alone["linear"]["fill_source"].values == TEMPORAL
    assert filled.any()
    first_values = np.moveaxis(alone["mosaic"]["s2_filled"].values, 1, -1)[filled]
    assert not np.array_equal(first_values, np.moveaxis(alone["linear"]["s2_filled"].values, 1, -1)[filled])
    for first, second in (("mosaic", "linear"), ("linear", "mosaic")):
        # Every temporal method fills the same pixels (a clear view within the gap): the first one wins all.
        out = fill(ts, [first, second], mask=cloudy, max_gap_days=12)
        for name in ("s2_filled", "fill_source", "fill_gap_days"):
            assert np.array_equal(out[name].values, alone[first][name].values, equal_nan=True), (first, name)


def test_model_fills_what_the_temporal_methods_cannot(series, small_net):
    ts, cloudy = series
    temporal = fill(ts, "linear", mask=cloudy, max_gap_days=6)
    out = fill(ts, ["linear", "model"], mask=cloudy, max_gap_days=6, model=small_net, tile=48)
    src, before = out["fill_source"].values, temporal["fill_source"].values
    assert (src == MODEL).any()
    assert np.array_equal(src == MODEL, (before == UNFILLED) & (np.arange(6) != 1)[:, None, None])  # day 1: no S1
    assert not (src[1] == MODEL).any() and (src[1] == UNFILLED).any()
    assert np.all(np.isnan(out["fill_gap_days"].values[src == MODEL]))
    t = 3
    date = ts[["s2", "s1", "dem"]].isel(time=t).drop_vars("s1_lag_days")
    pred = xcf.inference.predict(date, small_net, tile=48, keep_clear=False)["s2_cloudfree"].values
    where = src[t] == MODEL
    assert np.array_equal(out["s2_filled"].values[t][:, where], pred[:, where])
    keep = src != MODEL
    assert np.array_equal(
        np.moveaxis(out["s2_filled"].values, 1, -1)[keep],
        np.moveaxis(temporal["s2_filled"].values, 1, -1)[keep],
        equal_nan=True,
    )
    # Model first: it fills every masked pixel of the dates with S1; linear only those of date 1.
    first = fill(ts, ["model", "linear"], mask=cloudy, max_gap_days=6, model=small_net, tile=48)["fill_source"].values
    masked = cloudy.values
    assert np.all(first[np.arange(6) != 1][masked[np.arange(6) != 1]] == MODEL)
    assert np.array_equal(first[1], before[1])


# ------------------------------------------------------------------------------------------- Dask
def test_the_result_does_not_depend_on_the_chunks(series):
    ts, cloudy = series
    cases = [
        ("linear", None, {"time": 2, "y": 20, "x": 30}),
        ("nearest", 12, {"time": 5, "y": 48, "x": 17}),
        ("least_cloudy", 20, {"time": 2, "y": 20, "x": 30}),
        ("mosaic", None, {"time": 5, "y": 48, "x": 17}),
    ]
    for method, gap, chunks in cases:
        ref = fill(ts, method, mask=cloudy, max_gap_days=gap)
        out = fill(ts.chunk(chunks), method, mask=cloudy.chunk({"time": 3}), max_gap_days=gap)
        assert out["s2_filled"].chunks == ts.chunk(chunks)["s2"].chunks
        computed = dask.compute(*(out[name] for name in ("s2_filled", "fill_source", "fill_gap_days")))
        for name, value in zip(("s2_filled", "fill_source", "fill_gap_days"), computed, strict=True):
            assert np.array_equal(value.values, ref[name].values, equal_nan=True), (method, chunks, name)
    ref = fill(ts, "linear", mask="dsen2cr", shadow_stats="window")
    out = fill(ts.chunk({"time": 4, "y": 24, "x": 32}), "linear", mask="dsen2cr", shadow_stats="window")
    assert np.array_equal(out["mask"].values, ref["mask"].values)
    assert np.array_equal(out["s2_filled"].values, ref["s2_filled"].values, equal_nan=True)


def test_a_fill_task_reads_its_s2_itself_one_per_input_chunk(series):
    # Memory flat in the number of dates: S2 chunks are never handed from task to task through the graph (the
    # scans over the dates did, one chunk per date waiting in each chunk column), only the 1-byte clear flags.
    from dask.core import get_dependencies

    ts, cloudy = series
    for time_chunk in (1, 3):
        lazy = ts.chunk({"time": time_chunk, "y": 24, "x": 32})
        out = fill(lazy, ["least_cloudy", "linear"], mask=cloudy)
        graph = dict(out["s2_filled"].data.__dask_graph__())
        tasks = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("_fill_block")]
        assert len(tasks) == np.prod(lazy["s2"].data.numblocks)  # one per input chunk (all bands in one)
        s2_name = lazy["s2"].data.name
        for key in tasks:
            deps = get_dependencies(graph, key)
            assert not any(isinstance(d, tuple) and d[0] == s2_name for d in deps)
            assert deps, key  # the clear flags of every date


def test_invalid_pixels_on_dask_are_found_as_on_numpy(series):
    # NaN and nodata are known only once a date is read: each lazy task reads again until its dates are settled.
    ts, cloudy = series
    rng = np.random.default_rng(1)
    s2 = ts["s2"].values.astype(np.float32)
    holes = rng.random((s2.shape[0], *s2.shape[2:])) < 0.3
    s2 = np.where(holes[:, None], np.nan, s2)
    s2[:, 3][rng.random(holes.shape) < 0.1] = np.nan  # one band alone: the pixel is invalid
    nan_series = ts.assign(s2=ts["s2"].copy(data=s2))
    dn = ts["s2"].values.copy()
    dn[:, :, :, 5:9] = 0  # a nodata strip on every date
    nodata_series = ts.assign(s2=ts["s2"].copy(data=dn).rio.write_nodata(0, encoded=False))
    for data in (nan_series, nodata_series):
        for method in ("linear", "nearest", "least_cloudy", "mosaic"):
            ref = fill(data, method, mask=cloudy, max_gap_days=30)
            out = fill(data.chunk({"time": 1, "y": 16, "x": 24}), method, mask=cloudy, max_gap_days=30)
            for name in ("s2_filled", "fill_source", "fill_gap_days"):
                assert np.array_equal(out[name].values, ref[name].values, equal_nan=True), (method, name)
    # NaN pixels under a clear mask are not observations: they are filled from other dates
    nan_clear = np.isnan(s2).any(axis=1) & ~cloudy.values
    source = fill(nan_series, "linear", mask=cloudy)["fill_source"].values
    assert nan_clear.any() and not (source[nan_clear] == OBSERVED).any()
    assert (source[nan_clear] == TEMPORAL).mean() > 0.9


def test_building_the_fill_computes_only_the_masks(series, small_net):
    ts, cloudy = series
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return dask.get(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("fill() computed while building the graph")

    lazy = ts.chunk({"time": 2, "y": 24, "x": 24})
    with dask.config.set(scheduler=refuse):  # a mask given as an array: nothing to compute
        given = fill(lazy, ["least_cloudy", "linear", "model"], mask=cloudy.chunk({"time": 1}), model=small_net)
    # A mask method: one pass for the masks of every date (window statistics), two with the scene statistics.
    with dask.config.set(scheduler=counting):
        out = fill(lazy, ["least_cloudy", "linear", "model"], mask="dsen2cr", shadow_stats="window", model=small_net)
        assert len(calls) == 1
        out2 = lazy.cloudfree.fill(["mosaic", "nearest"], max_gap_days=15)
        assert len(calls) == 3
    for o in (given, out, out2):
        assert all(o[v].chunks is not None for v in ("s2_filled", "mask", "fill_source", "fill_gap_days"))


# ---------------------------------------------------------------------------------------- interfaces
def test_accessor_masks_from_scl_and_a_bare_dataarray():
    values = [np.full((3, 3), 100.0), np.full((3, 3), 300.0), np.full((3, 3), 500.0)]
    ts, _ = _toy([0, 10, 20], values, np.zeros((3, 3, 3), bool))
    scl = np.full((3, 3, 3), 4, np.uint8)
    scl[1, 1, 1] = 9  # cloud, high probability
    scl[1, 0, 2] = 3  # cloud shadow
    out = ts.assign(scl=(("time", "y", "x"), scl)).cloudfree.fill("linear", mask="scl")
    assert out["mask"].values.sum() == 2 and out["mask"].values[1, 1, 1] and out["mask"].values[1, 0, 2]
    assert _b0(out, 1)[1, 1] == 300 and out["fill_source"].values[1, 1, 1] == TEMPORAL
    cloudy = xr.DataArray(scl != 4, dims=("time", "y", "x"))
    bare = ts["s2"].cloudfree.fill("nearest", mask=cloudy)  # (time, band, y, x) DataArray → the series' s2
    assert _b0(bare, 1)[1, 1] == 100


def test_bad_input_names_the_argument(series, small_net):
    ts, cloudy = series
    cases = [
        ({"method": "spline"}, "method"),
        ({"method": ["linear", "linear"]}, "method"),
        ({"mask": cloudy.isel(y=slice(0, 10))}, "mask"),
        ({"mask": cloudy.astype(np.float32)}, "mask"),
        ({"mask": "fog"}, "mask"),
        ({"max_gap_days": -3}, "max_gap_days"),
        ({"method": "model"}, "model"),
        ({"method": "linear", "model": small_net}, "model"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=f"^{name}:"):
            fill(ts, **{"mask": cloudy, **kwargs})
    with pytest.raises(ValueError, match="^ts:.*time"):
        fill(ts.isel(time=0), mask=cloudy.isel(time=0))
    with pytest.raises(ValueError, match="^ts:.*sorted"):
        fill(ts.isel(time=[0, 2, 1, 3, 4, 5]), mask=cloudy)
    with pytest.raises(ValueError, match="^model:.*every band"):
        fill(ts, "model", mask=cloudy, model=xcf.models.create("pix2pix", num_downs=5, ngf=8))
    with pytest.raises(ValueError, match="^ts:.*s1"):
        fill(ts.drop_vars("s1"), "model", mask=cloudy, model=small_net)


def test_timeseries_strip_writes_a_small_png(series, tmp_path):
    ts, cloudy = series
    out = fill(ts, "linear", mask=cloudy, max_gap_days=6)
    path = xcf.plot.timeseries_strip(out, tmp_path / "strip.png", dates=[0, 1, 2])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 0 < path.stat().st_size < 300_000


# ------------------------------------------------------------------------------------------ real data
def test_linear_beats_the_allclear_baselines_on_the_real_rome_series(shared_data):
    """Reduced leave-one-out: the first five consecutive clear dates (May–Sept 2018), top-left 128² quarter, the
    three inner dates each hidden under the real cloud mask of another image, filled from the others, scored
    inside the hole (bench/bench_timeseries.py runs the whole series)."""
    files = sorted(
        (shared_data / "s2_timeseries_rome").glob("*.tif"), key=lambda p: re.search(r"\d{4}-\d{2}-\d{2}", p.name)[0]
    )
    assert len(files) == 15
    files = files[6:11]  # 2018-05-31 … 2018-09-03, each < 1 % cloud by the dsen2cr detector
    s2 = xr.concat([xcf.io.read_s2(p).load() for p in files], dim="time")
    times = [np.datetime64(re.search(r"\d{4}-\d{2}-\d{2}", p.name)[0], "ns") for p in files]
    ts = xr.Dataset({"s2": s2.assign_coords(time=("time", np.array(times)))}).isel(y=slice(128), x=slice(128))
    holes = []
    for path in sorted((shared_data / "reference" / "masks").glob("*_cloudy_*.npz")):
        m = np.load(path, allow_pickle=False)["dsen2cr_cloud_shadow_mask"]
        if (m == 1).mean() >= 0.05:
            holes.append(m[:128, :128] != 0)
    rows = leave_one_out(ts, {1: holes[0], 2: holes[1], 3: holes[2]}, ["least_cloudy", "mosaic", "linear"])
    mae = {
        m: np.mean([r["mae_reconstruction"] for r in rows if r["method"] == m])
        for m in ("least_cloudy", "mosaic", "linear")
    }
    assert all(r["filled"] > 0.99 and r["pixels"] > 500 for r in rows)  # a few are masked on every other date
    assert mae["linear"] < mae["least_cloudy"] and mae["linear"] < mae["mosaic"], mae
