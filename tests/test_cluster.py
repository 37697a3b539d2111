"""A real Dask cluster: processes with a memory limit, open → mask → remove → COG + Zarr, a worker killed mid-run."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
import stac_server as server
import torch
import xarray as xr
from typer.testing import CliRunner

import xcloudfree as xcf
from xcloudfree.cli import app
from xcloudfree.inference import load_count

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """S2 and S1 GeoTIFFs of a 256² synthetic scene, and the checkpoint of a small untrained dsen2cr."""
    folder = tmp_path_factory.mktemp("inputs")
    scene = xcf.datasets.synthetic_scene(256, seed=3, cloud_cover=0.4)
    paths = {v: xcf.io.write_cog(scene[v], folder / f"{v}.tif", blocksize=64) for v in ("s2", "s1")}
    torch.manual_seed(0)
    paths["model"] = xcf.models.save(xcf.models.create("dsen2cr", features=8, blocks=2), folder / "model.safetensors")
    return paths


def removal(files) -> xr.Dataset:
    """open → mask → remove, lazy: the cloud-free bands and the mask."""
    scene = xcf.io.open_scene(s2=files["s2"], s1=files["s1"], chunks={"x": 64, "y": 64})
    mask = scene.cloudfree.mask()["mask"]
    return scene.cloudfree.remove(files["model"], mask=mask, tile=32, device="cpu")[["s2_cloudfree", "mask"]]


def write(result: xr.Dataset, out) -> tuple:
    """The COG of the cloud-free bands and the Zarr store of both, under whatever scheduler is active."""
    return xcf.io.write_cog(result["s2_cloudfree"], out / "cloudfree.tif", blocksize=64), xcf.io.write_zarr(
        result, out / "cloudfree.zarr"
    )


def read(cog, store) -> tuple[np.ndarray, xr.Dataset]:
    with rasterio.open(cog) as src:
        pixels = src.read()
    return pixels, xr.open_zarr(store).load()


@pytest.fixture(scope="module")
def threaded(files, tmp_path_factory):
    """The reference: Dask's threaded scheduler, torch on one thread as on a one-thread worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return read(*write(removal(files), tmp_path_factory.mktemp("threaded")))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes of 2 GB each, with a dashboard; shared by this module's tests."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="2GB", dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def assert_same_outputs(paths, threaded) -> None:
    pixels, cube = read(*paths)
    np.testing.assert_array_equal(pixels, threaded[0])
    xr.testing.assert_identical(cube, threaded[1])


def test_local_cluster_end_to_end_equals_threads(files, threaded, client, tmp_path):
    limits = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
    assert list(limits.values()) == [2e9, 2e9]
    result = removal(files)  # the graph ships the checkpoint to the workers
    # Workers never read the client's copy (on a real cluster it lies on another machine): take it away.
    hidden = files["model"].rename(files["model"].with_suffix(".hidden"))
    try:
        paths = write(result, tmp_path)
    finally:
        hidden.rename(files["model"])
    assert list(client.run(load_count).values()) == [1, 1]  # one load per worker process, for two computations
    assert_same_outputs(paths, threaded)


def executed(client) -> int:
    """Tasks the cluster's workers have run so far (a restarted worker counts from 0)."""
    return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def test_a_worker_killed_mid_remove_changes_nothing(files, threaded, client, tmp_path):
    pids = client.run(os.getpid)
    result = removal(files)
    start = executed(client)
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(write, result, tmp_path)
        # Kill a worker a third of the way through the COG's computation, when the network runs (a bounded poll:
        # no event says so). The scheduler holds only this computation's tasks.
        deadline, tasks = time.monotonic() + 60, 0
        while not job.done() and time.monotonic() < deadline:
            tasks = tasks or client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            if tasks and executed(client) - start >= tasks // 3:
                break
            time.sleep(0.02)
        busy = client.processing()
        assert not job.done() and any(busy.values()), "the job ended before the kill"
        victim = max(busy, key=lambda addr: len(busy[addr]))
        os.kill(pids[victim], signal.SIGKILL)
        paths = job.result(timeout=120)
    client.wait_for_workers(2, timeout=60)  # the nanny starts a new process (maybe after the job ended) ...
    new_pids = client.run(os.getpid)
    assert pids[victim] not in new_pids.values() and len(new_pids) == 2
    survivor = next(addr for addr in pids if addr != victim)
    loads = client.run(load_count)
    assert loads.pop(survivor) == 1 and list(loads.values()) in ([0], [1])  # ... with its own cache, loaded ≤ once
    assert_same_outputs(paths, threaded)


def assert_cluster_printed(output: str) -> None:
    """The cluster's line with the dashboard's address, then distributed's progress bar run to its end."""
    assert re.search(r"dask: 2 workers at tcp://127\.0\.0\.1:\d+, dashboard http://127\.0\.0\.1:\d+/status", output)
    assert "[########################################] | 100% Completed" in output


def test_cli_remove_on_workers_prints_dashboard_and_progress(files, threaded, tmp_path):
    args = ["remove", "--s2", str(files["s2"]), "--s1", str(files["s1"]), "--model", str(files["model"])]
    args += ["--out", str(tmp_path / "free.tif"), "--tile", "32", "--chunk", "64", "--device", "cpu", "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_cluster_printed(result.output)
    with rasterio.open(tmp_path / "free.tif") as src:
        np.testing.assert_array_equal(src.read(), threaded[0])
    both = CliRunner().invoke(app, [*args, "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "workers: expected 0 with scheduler='tcp://127.0.0.1:1'" in both.output


def test_cli_fill_on_a_running_cluster_prints_dashboard_and_progress(shared_data, client, tmp_path):
    items = server.write_item_collection(server.rome_items(tmp_path, shared_data, dates=3), tmp_path / "rome.json")
    out = tmp_path / "cube.zarr"
    args = ["fill", "--collections", "sentinel-2-l1c", "--bbox", "12.716,42.056,12.72,42.06", "--out", str(out)]
    args += ["--datetime", "2018-01-01/2018-12-31", "--chunk", "32"]
    with server.serve(items) as url:
        on_workers = CliRunner().invoke(app, [*args, "--stac", url, "--scheduler", client.scheduler.address])
        on_threads = CliRunner().invoke(app, [*args, "--stac", url, "--out", str(tmp_path / "threads.zarr")])
    assert on_workers.exit_code == 0 and on_threads.exit_code == 0, on_workers.output + on_threads.output
    assert_cluster_printed(on_workers.output)
    assert "dask:" not in on_threads.output
    xr.testing.assert_identical(xr.open_zarr(out).load(), xr.open_zarr(tmp_path / "threads.zarr").load())
