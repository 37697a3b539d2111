"""Dask scheduling helpers: the active ``dask.distributed`` client if any, locks, progress bars, worker threads,
files shipped to the workers.

The library never starts a cluster by itself (the CLI's ``--workers N`` does); it adapts to whatever scheduler is
active: the threaded scheduler by default, a distributed client when one is set.
"""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["active_client", "write_lock", "compute", "worker_threads", "ship_file", "shipped_file"]

#: ``(client id, name)`` of the files this process has shipped (one upload per file and client).
_SHIPPED: set[tuple[str, str]] = set()


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
    """A lock for writing one file from many tasks: a threading lock, or a distributed lock under a client.

    The distributed lock is a lease on the scheduler: one held by a worker that dies is released after
    ``distributed.scheduler.locks.lease-timeout`` (30 s by default), so the other writers go on.
    """
    if client is None:
        return threading.Lock()
    from distributed import Lock

    # Tasks find the scheduler through their worker's client; the name alone identifies the lock.
    return Lock(f"xcloudfree-write-{uuid.uuid4().hex}")


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


def ship_file(client: Any, path: str | Path, name: str) -> None:
    """Copy the file at ``path`` on this machine into every worker's local directory as ``name``.

    For files the workers need but may not reach (a checkpoint on the client's disk): the file travels through the
    scheduler, which keeps it and hands it to workers that join later (restarts included). ``name`` must identify
    the content (e.g. carry its SHA-256); each name is sent once per client.
    """
    key = (client.id, name)
    if key in _SHIPPED:
        return
    from ._shipping import ShippedFile

    client.register_plugin(ShippedFile(name, Path(path).read_bytes()), name=f"xcloudfree-file-{name}")
    _SHIPPED.add(key)


def shipped_file(name: str) -> Path | None:
    """The local copy of a file shipped with :func:`ship_file`, inside a distributed worker; None elsewhere."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        path = Path(get_worker().local_directory) / name
    except ValueError:  # not inside a worker
        return None
    return path if path.is_file() else None
