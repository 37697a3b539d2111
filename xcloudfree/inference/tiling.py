"""One global tile grid per scene, blend windows, and the tile loop over an in-memory window.

The grid is anchored at the scene origin, so which tiles a pixel belongs to depends only on the scene size, the
tile size and the overlap, never on how the scene is chunked. Neighbouring tiles share ``overlap`` pixels.
Each tile side drops a ``margin`` (the model's halo: pixels whose receptive field reaches past the tile) and blends
over the rest of the overlap with a smooth window; the scene is reflect-padded by ``margin`` on every side so that
border pixels are covered like interior ones. With ``margin`` ≥ the receptive radius, every output pixel comes from
tile pixels that saw all their context, so a fully convolutional model reproduces its whole-image forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["TileGrid", "BLENDS", "blend_window", "reflect_index", "accumulate_tiles"]

BLENDS = ("cosine", "gaussian", "mean")


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile × tile`` px over a ``height × width`` scene.

    Parameters
    ----------
    height, width : scene size (px)
    tile : tile side (px), a multiple of the model's size multiple
    overlap : pixels shared by neighbouring tiles, ``0 ≤ overlap < tile``
    margin : pixels dropped on each tile side (``≤ overlap / 2``)

    Examples
    --------
    >>> grid = TileGrid(500, 300, tile=256, overlap=32, margin=8)
    >>> grid.shape, grid.stride, grid.starts(0).tolist()
    ((3, 2), 224, [-8, 216, 440])
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int = 0

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile: expected a positive size in pixels, found {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap: expected 0 ≤ overlap < tile ({self.tile}), found {self.overlap}")
        if not 0 <= 2 * self.margin <= self.overlap:
            raise ValueError(f"margin: expected 0 ≤ 2·margin ≤ overlap ({self.overlap}), found {self.margin}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def count(self, size: int) -> int:
        """Tiles along an axis of ``size`` px: the last tile's kept part reaches the last pixel."""
        return max(1, -(-(size + 2 * self.margin - self.tile) // self.stride) + 1)

    @cached_property
    def shape(self) -> tuple[int, int]:
        """Number of tiles (rows, columns)."""
        return self.count(self.height), self.count(self.width)

    def starts(self, axis: int) -> np.ndarray:
        """Scene coordinate of each tile's first pixel along ``axis`` (0: y, 1: x); negative at the border."""
        return np.arange(self.shape[axis]) * self.stride - self.margin

    def window(self, blend: str = "cosine") -> np.ndarray:
        """The 2-D blend weights of one tile, float64 ``(tile, tile)``."""
        w = blend_window(self.tile, self.overlap, self.margin, blend)
        return np.outer(w, w)


def blend_window(tile: int, overlap: int, margin: int, blend: str = "cosine") -> np.ndarray:
    """1-D weights over a tile side: 0 in the margin, a ramp over the rest of the overlap, then 1.

    ``cosine``: sin² ramp; ``gaussian``: a Gaussian of σ = tile/8 around the centre (as in MONAI), zero in the
    margin; ``mean``: 1 outside the margin (plain average).

    >>> blend_window(8, overlap=4, margin=1).round(2).tolist()
    [0.0, 0.15, 0.85, 1.0, 1.0, 0.85, 0.15, 0.0]
    """
    if blend not in BLENDS:
        raise ValueError(f"blend: expected one of {list(BLENDS)}, found {blend!r}")
    i = np.arange(tile, dtype=np.float64)
    d = np.minimum(i, tile - 1 - i)  # distance from the nearest tile edge (px)
    keep = d >= margin
    if blend == "mean":
        return keep.astype(np.float64)
    if blend == "gaussian":
        sigma = tile / 8.0
        return np.where(keep, np.exp(-0.5 * ((i - (tile - 1) / 2) / sigma) ** 2), 0.0)
    ramp = overlap - 2 * margin
    if ramp <= 0:
        return keep.astype(np.float64)
    t = np.clip((d - margin + 0.5) / ramp, 0.0, 1.0)
    return np.where(keep, np.sin(0.5 * np.pi * t) ** 2, 0.0)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map coordinates outside ``[0, size)`` back inside by mirror reflection (``numpy.pad`` mode ``reflect``)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    r = np.mod(index, period)
    return np.where(r < size, r, period - r)


def accumulate_tiles(
    window: np.ndarray,
    origin: tuple[int, int],
    parts: Sequence[Sequence[tuple[int, int]]],
    forward: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]],
    *,
    tile: int,
    weights: np.ndarray,
    batch_size: int,
    out_channels: int,
) -> Iterator[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """Run ``forward`` over tiles cut from ``window`` and accumulate their weighted outputs, part by part.

    Every part's batches go through one ``forward`` stream, so a pipelined device never drains between parts; a
    batch never mixes parts, so each part's sums do not depend on the others.

    Parameters
    ----------
    window : (C, h, w) model input covering every tile, NaN-free
    origin : scene coordinate (y, x) of ``window[:, 0, 0]``
    parts : groups of tile starts (y, x) in scene coordinates, each summed on its own
    forward : maps batches (N, C, tile, tile) float32 to outputs (N, out_channels, tile, tile), in order
    weights : (tile, tile) blend window

    Yields
    ------
    Per part, in order: ``(scene (y, x) of the part's first pixel, weighted sum (out_channels, h, w), weight sum
    (h, w))`` over the part's extent, float32 (a pixel sums at most four tiles).

    Examples
    --------
    >>> win = np.ones((1, 8, 12), np.float32)
    >>> [(o, a.shape) for o, a, _ in accumulate_tiles(win, (0, 0), [[(0, 0), (0, 4)], [(4, 4)]],
    ...     lambda bs: (b * 2 for b in bs), tile=4, weights=np.ones((4, 4)), batch_size=8, out_channels=1)]
    [((0, 0), (1, 4, 8)), ((4, 4), (1, 4, 4))]
    """
    weights = weights.astype(np.float32)
    parts = [list(p) for p in parts]

    def offsets(tiles: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(ty - origin[0], tx - origin[1]) for ty, tx in tiles]

    def batches() -> Iterator[np.ndarray]:
        for tiles in parts:
            for start in range(0, len(tiles), batch_size):
                batch = offsets(tiles[start : start + batch_size])
                yield np.ascontiguousarray(
                    np.stack([window[:, oy : oy + tile, ox : ox + tile] for oy, ox in batch]), dtype=np.float32
                )

    outputs = forward(batches())
    for tiles in parts:
        py0, px0 = min(t[0] for t in tiles), min(t[1] for t in tiles)
        h, w = max(t[0] for t in tiles) + tile - py0, max(t[1] for t in tiles) + tile - px0
        acc = np.zeros((out_channels, h, w), np.float32)
        wsum = np.zeros((h, w), np.float32)
        for start in range(0, len(tiles), batch_size):
            y = next(outputs)
            for (ty, tx), pred in zip(tiles[start : start + batch_size], y, strict=True):
                oy, ox = ty - py0, tx - px0
                pred *= weights  # in place: the batch output is ours
                acc[:, oy : oy + tile, ox : ox + tile] += pred
                wsum[oy : oy + tile, ox : ox + tile] += weights
        yield (py0, px0), acc, wsum
    # Run ``forward`` to its end: a device it holds is handed back now, not when the generator is collected.
    if next(outputs, None) is not None:
        raise ValueError("forward: expected one output per batch, found more")
