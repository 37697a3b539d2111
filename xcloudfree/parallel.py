"""Dask scheduling helpers: the active ``dask.distributed`` client if any, locks, progress bars, worker threads.

The library never starts a cluster by itself (the CLI's ``--workers N`` does); it adapts to whatever scheduler is
active: the threaded scheduler by default, a distributed client when one is set.
"""

from __future__ import annotations

import sys
import threading
import uuid
from typing import Any

__all__ = ["active_client", "write_lock", "compute", "worker_threads"]


def active_client() -> Any:
    """The current ``dask.distributed`` client, or None (without importing distributed when unused)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def write_lock(client: Any = None) -> Any:
    """A lock for writing one file from many tasks: a threading lock, or a distributed lock under a client."""
    if client is None:
        return threading.Lock()
    from distributed import Lock

    return Lock(f"xcloudfree-write-{uuid.uuid4().hex}", client=client)


def compute(obj: Any, *, client: Any = None, progress: bool = False) -> Any:
    """Compute a Dask collection, with a progress bar (tqdm, or distributed's) when asked."""
    if client is not None:
        future = client.compute(obj)
        if progress:
            from distributed import progress as show

            show(future)
        return future.result()
    if progress:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc="computing"):
            return obj.compute()
    return obj.compute()


def worker_threads() -> int | None:
    """Threads of the Dask worker running this code, or None outside a distributed worker."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return int(get_worker().state.nthreads)
    except (ValueError, AttributeError):
        return None
