"""Strict JSON: the one writer for reports, curation logs, configs and checkpoint metadata.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no other JSON reader accepts. Here non-finite
numbers become the strings ``"nan"``, ``"inf"``, ``"-inf"``; numpy and torch scalars and arrays, tuples and paths
become plain JSON values; anything else is a ``TypeError`` naming its type.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePath
from typing import Any

__all__ = ["plain", "to_json", "write_json"]


def plain(value: Any) -> Any:
    """``value`` as plain JSON types: dicts with string keys, lists, str, int, finite float, bool, None.

    >>> import numpy as np
    >>> plain({"psnr": np.float32("inf"), "size": (256, 256), 1: np.arange(2)})
    {'psnr': 'inf', 'size': [256, 256], '1': [0, 1]}
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any, *, indent: int | None = None) -> str:
    """``data`` as strict JSON text (see :func:`plain`).

    >>> to_json({"rmse": float("nan")})
    '{"rmse": "nan"}'
    """
    return json.dumps(plain(data), indent=indent, allow_nan=False)


def write_json(data: Any, path: str | os.PathLike, *, indent: int = 1) -> Path:
    """Write ``data`` as strict JSON to ``path``, atomically (a staging sibling, then a rename); the path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_json({"psnr": float("inf"), "bands": ("B04", "B03")}, f"{tmp}/metrics.json", indent=None)
    ...     print(path.name, path.read_text())
    metrics.json {"psnr": "inf", "bands": ["B04", "B03"]}
    """
    from .geotiff import atomic_path

    final, tmp = atomic_path(path)
    tmp.write_text(to_json(data, indent=indent))
    os.replace(tmp, final)
    return final
