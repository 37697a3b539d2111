"""The Dask graph of the metrics: one task per chunk, and seam tasks for SSIM along the chunk boundaries.

Each chunk task reads its blocks of the prediction, the references and the weights once, adds every pixel-wise
sum and the SSIM of the pixels whose window lies inside the chunk (:func:`.accumulate.block_sums`), and hands on
copies of its 10-pixel strips along the boundaries it shares with other chunks. A horizontal seam task scores
the 10 rows around a boundary between two chunk rows, one chunk wide, from the strips of the (up to) six chunks
around that stretch; a vertical seam task scores the 10 columns around a boundary inside one chunk row from two
strips. No task waits for a neighbouring chunk, so memory is the chunks in flight plus the strips still waiting
for a seam (20 pixels per chunk side), whatever the scene size; the seams add about 20 / chunk size to the SSIM
work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._inputs import is_dask
from .accumulate import Spec, block_sums, counted, empty_stats, flat, layout, pack, ssim_sums, unpack
from .structural import HALO

#: Rows (columns) of a strip: the seam pixels (5 each side of the boundary) and the 5 of context beyond them.
_STRIP = 2 * HALO
_SIDES = ("top", "bottom", "left", "right")
Strips = dict[str, list[np.ndarray]]


def lazy_stats(spec: Spec, pred: Any, refs: Sequence[Any], given: Sequence[Any]) -> Any:
    """The statistics of :func:`.accumulate.comparison_stats` for Dask input, as a Delayed.

    ``pred`` and ``refs`` are (N, C, H, W), ``given`` the weights (N or 1, H, W); numpy among them is cut into
    the chunks of the first Dask image (or into ~128 MiB chunks when only a weight is lazy).
    """
    import dask
    import dask.array as da

    n, c = pred.shape[:2]
    base = next((a for a in (pred, *refs) if is_dask(a)), None)
    if base is None:  # only a weight is lazy
        base = da.asarray(pred, chunks=(1, c, "auto", "auto"))
    rows, cols = base.chunks[2], base.chunks[3]
    if "ssim" in spec.parts:  # a seam takes 10 pixels from each side of a boundary
        rows, cols = _merged(rows, _STRIP), _merged(cols, _STRIP)
    chunks = (base.chunks[0], (c,), rows, cols)

    def chunked(a: Any, sizes: tuple) -> Any:
        return a.rechunk(sizes) if is_dask(a) else da.from_array(a, chunks=sizes)

    arrays = [chunked(a, chunks) for a in (pred, *refs)]
    arrays += [chunked(wt, (chunks[0] if len(wt) == n else (1,), rows, cols)) for wt in given]
    # Not optimised: fusing the graph of each input into its own tasks would make a chunk that two inputs derive
    # from (a mask and its complement, the target of a synthetic pair) once per input.
    blocks = [a.to_delayed(optimize_graph=False) for a in arrays]
    chunk_task = dask.delayed(_chunk_task, pure=True, nout=2)
    origins = [np.cumsum((0, *sizes))[:-1].tolist() for sizes in (chunks[0], rows, cols)]
    ni, nj, nk = len(chunks[0]), len(rows), len(cols)
    parts, strips = [], {}
    for i, j, k in np.ndindex(ni, nj, nk):
        inputs = [b[i, 0, j, k] for b in blocks[: 1 + len(refs)]]
        inputs += [b[i if b.shape[0] == ni else 0, j, k] for b in blocks[1 + len(refs) :]]
        inner = (j > 0, j < nj - 1, k > 0, k < nk - 1)
        packed, strips[i, j, k] = chunk_task(spec, (origins[1][j], origins[2][k]), inner, len(refs), *inputs)
        parts.append((origins[0][i], packed))
    if "ssim" in spec.parts:
        seam = dask.delayed(_seam_task, pure=True)
        for i, j, k in np.ndindex(ni, nj - 1, nk):  # horizontal: below chunk row j
            near = [[strips.get((i, j + dj, k + dk)) for dk in (-1, 0, 1)] for dj in (0, 1)]
            origin = (origins[1][j + 1] - _STRIP, origins[2][k] - HALO)
            parts.append((origins[0][i], seam(spec, "horizontal", origin, (cols[k], j, nj), len(refs), near)))
        for i, j, k in np.ndindex(ni, nj, nk - 1):  # vertical: right of chunk column k, inside chunk row j
            near = [[strips[i, j, k], strips[i, j, k + 1]]]
            origin = (origins[1][j], origins[2][k + 1] - _STRIP)
            parts.append((origins[0][i], seam(spec, "vertical", origin, (rows[j], j, nj), len(refs), near)))
    shape = layout(flat(empty_stats(spec, 1, c)))
    offsets = [offset for offset, _ in parts]
    return dask.delayed(_total, pure=True)(shape, n, offsets, *[p for _, p in parts])


def _merged(sizes: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Chunk sizes with neighbours merged until each is at least ``minimum`` (or the whole axis)."""
    out: list[int] = []
    for size in sizes:
        if out and out[-1] < minimum:
            out[-1] += size
        else:
            out.append(size)
    if len(out) > 1 and out[-1] < minimum:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def _chunk_task(
    spec: Spec,
    origin: tuple[int, int],
    inner: tuple[bool, bool, bool, bool],
    nrefs: int,
    pred: np.ndarray,
    *rest: np.ndarray,
) -> tuple[np.ndarray, Strips]:
    """Packed sums of one chunk (n, size) and copies of its strips along the boundaries in ``inner``."""
    refs, weights = rest[:nrefs], rest[nrefs:]
    packed = pack(flat(block_sums(spec, pred, refs, weights, origin=origin, inner=inner)))
    if "ssim" not in spec.parts:
        return packed, {}
    cut = {
        "top": (slice(0, _STRIP), slice(None)),
        "bottom": (slice(-_STRIP, None), slice(None)),
        "left": (slice(None), slice(0, _STRIP)),
        "right": (slice(None), slice(-_STRIP, None)),
    }
    # copies: a view would keep the whole chunk in memory until the seams are done
    strips = {side: [a[..., r, c].copy() for a in (pred, *rest)] for side, (r, c) in cut.items()}
    return packed, {side: strips[side] for side, edge in zip(_SIDES, inner, strict=True) if edge}


def _seam_task(
    spec: Spec,
    kind: str,
    origin: tuple[int, int],
    extent: tuple[int, int, int],
    nrefs: int,
    near: list[list[Strips | None]],
) -> np.ndarray:
    """Packed SSIM sums (n, size) of the seam pixels along one boundary stretch.

    ``horizontal``: ``near`` holds the strips of the chunks (j, k−1), (j, k), (j, k+1) above the boundary and
    (j+1, ·) below it; ``extent`` is (width of chunk column k, j, number of chunk rows). ``vertical``: the strips of
    (j, k) and (j, k+1); ``extent`` is (height of chunk row j, j, number of chunk rows). ``origin`` is the scene
    position of the assembled window.
    """
    size, j, nj = extent
    if kind == "horizontal":
        sides = ("bottom", "top")
        cells = [
            [_piece(row[0], side, -HALO), _piece(row[1], side, None), _piece(row[2], side, HALO)]
            for row, side in zip(near, sides, strict=True)
        ]
        widths, heights = (HALO, size, HALO), (_STRIP, _STRIP)
        rows, cols = (HALO, 3 * HALO), (HALO, HALO + size)
    else:
        cells = [[near[0][0]["right"], near[0][1]["left"]]]
        widths, heights = (_STRIP, _STRIP), (size,)
        rows, cols = (HALO * (j > 0), size - HALO * (j < nj - 1)), (HALO, 3 * HALO)
    window = _assemble(cells, heights, widths)
    pred, refs, weights = window[0], window[1 : 1 + nrefs], window[1 + nrefs :]
    n, c = pred.shape[:2]
    stats = empty_stats(spec, n, c)
    rows, cols = counted(spec, origin, rows, cols)
    for i in range(n):
        wts = [wt[i if len(wt) == n else 0] for wt in weights]
        ssim_sums(spec, pred[i], [ref[i] for ref in refs], wts, rows, cols, stats, i)
    return pack(flat(stats))


def _piece(strips: Strips | None, side: str, columns: int | None) -> list[np.ndarray] | None:
    """The ``side`` strips of a chunk, only their last (``columns`` < 0) or first ``columns`` columns if given."""
    if strips is None:
        return None
    if columns is None:
        return strips[side]
    index = slice(columns, None) if columns < 0 else slice(0, columns)
    return [a[..., index] for a in strips[side]]


def _assemble(
    cells: list[list[list[np.ndarray] | None]], heights: Sequence[int], widths: Sequence[int]
) -> list[np.ndarray]:
    """One array per input from a grid of pieces (rows of cells, each a list of arrays, or None for zeros)."""
    present = next(cell for row in cells for cell in row if cell is not None)
    edges_r, edges_c = np.cumsum((0, *heights)), np.cumsum((0, *widths))
    out = [np.zeros(a.shape[:-2] + (edges_r[-1], edges_c[-1]), dtype=a.dtype) for a in present]
    for a, row in enumerate(cells):
        for b, cell in enumerate(row):
            if cell is not None:
                for target, piece in zip(out, cell, strict=True):
                    target[..., edges_r[a] : edges_r[a + 1], edges_c[b] : edges_c[b + 1]] = piece
    return out


def _total(shape: list, n: int, offsets: Sequence[int], *parts: np.ndarray) -> list:
    """The statistics (:func:`.accumulate.unpack`) of ``n`` samples from packed parts, each at a sample offset."""
    size = parts[0].shape[1]
    total, low, high = np.zeros((n, size)), np.full((n, size), np.inf), np.full((n, size), -np.inf)
    for offset, part in zip(offsets, parts, strict=True):
        index = slice(offset, offset + len(part))
        total[index] += part
        np.minimum(low[index], part, out=low[index])
        np.maximum(high[index], part, out=high[index])
    return unpack(shape, total, low, high)
