"""A local Dask cluster for the jobs that take ``workers`` (:mod:`.remove`, :mod:`.fill`)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

__all__ = ["local_cluster"]


@contextlib.contextmanager
def local_cluster(workers: int, *, dashboard: bool = False) -> Iterator[str | None]:
    """Run the block under a local cluster of ``workers`` single-threaded processes; 0: none (Dask's threads).

    Yields, with ``dashboard``, the dashboard's address (or why there is none); else None.

    Examples
    --------
    >>> with local_cluster(0) as link:  # no cluster: Dask's threads
    ...     print(link)
    None
    """
    if workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster  # only here: distributed takes a second to import

    has_dashboard = dashboard and importlib.util.find_spec("bokeh") is not None
    address = "127.0.0.1:0" if has_dashboard else None
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=address) as cluster, Client(cluster):
        if not dashboard:
            yield None
        else:
            yield cluster.dashboard_link if has_dashboard else "unavailable (pip install bokeh)"
