"""Argument checks shared by the library, the CLI and training: one message shape everywhere.

Every check raises ``ValueError("<name>: expected <what>, found <value> (<type>)")`` and returns the value in its
canonical type, so that a caller writes ``tile = check_positive_int("tile", tile)`` and moves on.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["check_int", "check_positive_int", "check_number", "check_choice", "check_device", "describe"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def describe(value: Any) -> str:
    """``repr`` of ``value`` with its type, shortened: what an error message says was found.

    >>> from xcloudfree.checks import describe
    >>> describe(64.0), describe("x" * 100)[-12:]
    ('64.0 (float)', 'xxx... (str)')
    """
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; floats (even ``64.0``), strings and bools are refused.

    >>> import numpy as np
    >>> from xcloudfree.checks import check_int
    >>> check_int("overlap", np.int64(32), minimum=0)
    32
    >>> check_int("overlap", 32.0, minimum=0)
    Traceback (most recent call last):
    ValueError: overlap: expected an integer ≥ 0, found 32.0 (float)
    """
    bounds = _bounds(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an integer{bounds}, found {describe(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected an integer{bounds}, found {value}")
    return value


def check_positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """``value`` as an ``int`` ≥ 1 (and ≤ ``maximum`` when given).

    >>> from xcloudfree.checks import check_positive_int
    >>> check_positive_int("tile", 0)
    Traceback (most recent call last):
    ValueError: tile: expected an integer ≥ 1, found 0
    """
    return check_int(name, value, minimum=1, maximum=maximum)


def check_number(
    name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None, positive: bool = False
) -> float:
    """``value`` as a finite ``float`` in ``[minimum, maximum]`` (``> 0`` with ``positive``); no strings, no bools.

    >>> from xcloudfree.checks import check_number
    >>> check_number("cloud_cover", 1, minimum=0, maximum=1)
    1.0
    >>> check_number("resolution", float("nan"), positive=True)
    Traceback (most recent call last):
    ValueError: resolution: expected a finite number > 0, found nan
    """
    bounds = " > 0" if positive else _bounds(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number{bounds}, found {describe(value)}")
    value = float(value)
    if (
        not math.isfinite(value)
        or (positive and value <= 0)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name}: expected a finite number{bounds}, found {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` when it is one of ``choices``.

    >>> from xcloudfree.checks import check_choice
    >>> check_choice("precision", "bfloat16", ["auto", "float32", "bfloat16", "float16"])
    'bfloat16'
    >>> check_choice("precision", "fp8", ["auto", "float32", "bfloat16", "float16"])
    Traceback (most recent call last):
    ValueError: precision: expected one of ['auto', 'float32', 'bfloat16', 'float16'], found 'fp8' (str)
    """
    choices = list(choices)
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, found {describe(value)}")
    return value


def check_device(name: str, value: Any) -> str:
    """A torch device string this package runs on: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    >>> from xcloudfree.checks import check_device
    >>> check_device("device", "cuda:1")
    'cuda:1'
    >>> check_device("device", "mps")
    Traceback (most recent call last):
    ValueError: device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'mps' (str)
    """
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {describe(value)}")
    return value


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" ≥ {minimum}"
    if maximum is not None:
        return f" ≤ {maximum}"
    return ""
