"""The Dask cluster of the jobs that take ``workers`` or ``scheduler`` (:mod:`.remove`, :mod:`.fill`)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

__all__ = ["dask_cluster"]


@contextlib.contextmanager
def dask_cluster(workers: int = 0, *, scheduler: str | None = None) -> Iterator[str | None]:
    """Run the block on Dask workers: a running cluster, a new local one, or (neither) Dask's threads.

    Parameters
    ----------
    workers : start a local cluster of this many single-threaded worker processes (0: none)
    scheduler : the address of a running cluster's scheduler, e.g. ``"tcp://scheduler:8786"``; its workers need
        xcloudfree and torch installed, and the input and output paths readable and writable (checkpoints travel
        to them, see :func:`xcloudfree.parallel.ship_file`)

    Yields
    ------
    A line for the user naming the workers and the dashboard (``http://…/status``), or None on Dask's threads.

    Examples
    --------
    >>> with dask_cluster(0) as line:  # no cluster: Dask's threads
    ...     print(line)
    None
    """
    if workers < 0:
        raise ValueError(f"workers: expected 0 or more, found {workers}")
    if workers and scheduler:
        raise ValueError(f"workers: expected 0 with scheduler={scheduler!r} (a running cluster), found {workers}")
    if not workers and not scheduler:
        yield None
        return
    from distributed import Client, LocalCluster  # only here: distributed takes a second to import

    if scheduler:
        with Client(scheduler) as client:
            yield _describe(client)
        return
    # The dashboard needs bokeh (the `cluster` extra); without it the cluster runs all the same.
    address = "127.0.0.1:0" if importlib.util.find_spec("bokeh") is not None else None
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=address) as cluster:
        with Client(cluster) as client:
            yield _describe(client)


def _describe(client) -> str:
    """``dask: N workers at <scheduler>, dashboard <link>`` for the log."""
    info = client.scheduler_info()
    dashboard = "unavailable (pip install 'xcloudfree[cluster]')"
    if "dashboard" in info.get("services", {}):
        dashboard = client.dashboard_link
    return f"dask: {len(info['workers'])} workers at {info['address']}, dashboard {dashboard}"
