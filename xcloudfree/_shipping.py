"""A worker plugin that puts a file into every worker's local directory (imported only under a client)."""

from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


class ShippedFile(WorkerPlugin):
    """``data`` written as ``name`` into the local directory of every worker, present and future.

    The scheduler keeps registered plugins and runs them on each worker that joins, so a worker started after the
    registration (a nanny's restart after a crash, an adaptive scale-up) receives the file too.
    """

    idempotent = True  # registering the same name again keeps the first copy: the name identifies the content

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def setup(self, worker) -> None:
        target = Path(worker.local_directory) / self.name
        if target.is_file() and target.stat().st_size == len(self.data):
            return
        # Write under a private name, then rename: a task never sees half a file.
        partial = target.with_name(f".{self.name}.{os.getpid()}.part")
        partial.write_bytes(self.data)
        os.replace(partial, target)
