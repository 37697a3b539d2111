"""The block machinery every mask method runs on: input checks, halo blocks on Dask, exact filters, the result.

Every method computes its masks block by block with a function ``func(block, *, borders, origin, halo, ...)``:
``block`` is ``(layers, y, x)`` with ``halo`` pixels of the neighbouring blocks on its interior sides and nothing
on the sides that are image borders (``borders`` = top, bottom, left, right flags); ``origin`` is the global
(row, column) of its first pixel. The in-memory path calls the same function once with four borders, so Dask and
NumPy results agree, and the filters below compute every pixel from its neighbourhood alone, in a fixed order,
so the result does not depend on where the chunk edges fall.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers .rio: nodata and CRS here, nodata in to_classes)
import xarray as xr
from scipy import ndimage

from ..scene import name_s2_bands
from ..sensors import harmonize_s2

Borders = tuple[bool, bool, bool, bool]

#: Variables of every mask Dataset, in the order of the block functions' output layers.
LAYERS = ("cloud_probability", "cloud", "shadow", "mask")
_VAR_ATTRS = {
    "cloud_probability": {"long_name": "cloud probability", "units": "1"},
    "cloud": {"long_name": "cloud"},
    "shadow": {"long_name": "cloud shadow"},
    "mask": {"long_name": "cloud-or-shadow map (1 covered, 0 clear, NaN invalid)", "units": "1"},
}
# These describe the S2 values, not the masks.
_DROP_ATTRS = {"long_name", "units", "scale_factor", "add_offset", "_FillValue", "nodata", "description", "offset"}


# --------------------------------------------------------------------------------------------------- inputs
def as_s2(s2: Any) -> xr.DataArray:
    """Any accepted S2 input → DataArray ``(..., band, y, x)`` with band names.

    Accepts a scene Dataset (its ``s2``), a DataArray, or a bare NumPy/Dask array ``(13, y, x)`` in canonical order.
    """
    if isinstance(s2, xr.Dataset):
        if "s2" not in s2:
            raise ValueError(f"s2: expected a scene with an 's2' variable, found variables {list(s2.data_vars)}")
        s2 = s2["s2"]
    if not isinstance(s2, xr.DataArray):
        if getattr(s2, "ndim", None) != 3:
            raise ValueError(
                f"s2: expected a DataArray (band, y, x) or an array of shape (13, y, x), "
                f"found {type(s2).__name__} with shape {getattr(s2, 'shape', None)}"
            )
        s2 = xr.DataArray(s2, dims=("band", "y", "x"))
    if "y" not in s2.dims or "x" not in s2.dims or s2.ndim < 3:
        raise ValueError(f"s2: expected dims (band, y, x), found {s2.dims}")
    if not ("band" in s2.coords and s2["band"].dtype.kind in "UO"):
        if s2.ndim != 3:
            raise ValueError(f"s2: expected a 'band' coordinate with Sentinel-2 band names, found dims {s2.dims}")
        s2 = name_s2_bands(s2)
    return s2


def select_bands(s2: xr.DataArray, bands: Sequence[str], method: str) -> xr.DataArray:
    """The ``bands`` of ``s2`` in that order, offset harmonised (``xcloudfree.sensors.harmonize_s2``)."""
    present = [str(b) for b in s2["band"].values]
    missing = [b for b in bands if b not in present]
    if missing:
        hint = ""
        if "B10" in missing:
            hint = (
                "; Level-2A products have no B10 (cirrus): use method='scl' with the L2A scene classification, "
                "or method='s2cloudless' on the Level-1C product"
            )
        raise ValueError(f"s2: method {method!r} needs bands {list(bands)}, missing {missing}, found {present}{hint}")
    return harmonize_s2(s2.sel(band=list(bands)))


def nodata_of(s2: xr.DataArray) -> float | None:
    """The DN that marks missing pixels (rioxarray ``nodata`` / ``_FillValue``), after the baseline offset."""
    nodata = s2.rio.nodata if hasattr(s2, "rio") else None
    if nodata is None:
        nodata = s2.attrs.get("_FillValue", s2.attrs.get("nodata"))
    if nodata is None or np.isnan(nodata):
        return None  # NaN is caught as non-finite anyway
    return float(nodata) + float(s2.attrs.get("offset_applied", 0.0))


def valid_pixels(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """(y, x) bool: every layer finite and none equal to ``nodata``."""
    valid = np.isfinite(block).all(axis=0) if block.dtype.kind == "f" else np.ones(block.shape[1:], bool)
    if nodata is not None:
        valid &= ~(block == nodata).any(axis=0)
    return valid


def pixel_size(s2: xr.DataArray) -> float:
    """Ground pixel size in metres from the grid (10 m when the array carries no coordinates)."""
    if "x" not in s2.coords or s2.sizes["x"] < 2:
        return 10.0
    crs = s2.rio.crs if hasattr(s2, "rio") else None
    if crs is not None and crs.is_geographic:
        raise ValueError(f"s2: a resolution in metres needs a projected CRS, found {crs.to_string()}")
    return float(abs(s2["x"].values[1] - s2["x"].values[0]))


def check_params(method: str, params: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"params: method {method!r} accepts {sorted(allowed)}, found unknown {unknown}")


# ------------------------------------------------------------------------------------------------- blocks
def aligned_chunks(size: int, preferred: int, multiple: int = 1, minimum: int = 1) -> tuple[int, ...]:
    """Chunk sizes near ``preferred`` whose edges fall on multiples of ``multiple``, none under ``minimum``.

    A short remainder joins the last chunk, so every chunk can lend a halo of ``minimum`` pixels.
    """
    step = max(multiple, round(preferred / multiple) * multiple, math.ceil(minimum / multiple) * multiple)
    n = size // step
    if n == 0:
        return (size,)
    chunks = [step] * n
    rest = size - n * step
    if rest and rest >= minimum:
        chunks.append(rest)
    else:
        chunks[-1] += rest
    return tuple(chunks)


def align(data: Any, multiple: int = 1, minimum: int = 1) -> Any:
    """Dask ``data`` (layers, y, x) in one layer chunk, its (y, x) chunks made :func:`aligned_chunks`."""
    yx = [aligned_chunks(n, c[0], multiple, minimum) for n, c in zip(data.shape[1:], data.chunks[1:], strict=True)]
    return data.rechunk(((data.shape[0],), *yx))


def map_blocks_with_halo(
    func: Callable[..., np.ndarray],
    data: Any,
    depth: int,
    layers: int,
    *,
    multiple: int = 1,
    out_chunks: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    rows: int | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``func`` over ``data`` (layers, y, x) with ``depth`` pixels of halo between blocks.

    NumPy in → NumPy out (one block, four borders). Dask in → lazy Dask out: chunks are first aligned to
    ``multiple`` (and made at least ``depth`` wide), then each block sees its neighbours' ``depth`` pixels.
    ``out_chunks`` sets the (y, x) chunks of the result when they differ from the input's; the input chunks
    are then kept as they are (each at least ``depth`` wide). ``func`` returns ``(layers, core_y, core_x)``
    float32. Dask collections in ``kwargs`` become dependencies. ``rows`` (a multiple of ``multiple``, at least
    ``depth``): run ``func`` on strips of that many core rows (:func:`in_strips`), so its temporaries scale with
    the strip, not the block or the in-memory image.
    """
    if rows is not None:
        func = in_strips(func, rows, depth)
    if not hasattr(data, "dask"):
        return func(np.asarray(data), borders=(True,) * 4, origin=(0, 0), halo=0, **kwargs)
    import dask.array as da

    if out_chunks is None:
        data = align(data, multiple, depth)
    yx = list(data.chunks[1:])
    depths = {0: 0, 1: depth if len(yx[0]) > 1 else 0, 2: depth if len(yx[1]) > 1 else 0}
    haloed = da.overlap.overlap(data, depth=depths, boundary="none") if any(depths.values()) else data
    starts = [np.cumsum((0, *c[:-1])) for c in yx]
    counts = [len(c) for c in yx]

    def run(block: np.ndarray, block_id: tuple[int, int, int] | None = None, **kw: Any) -> np.ndarray:
        _, i, j = block_id
        borders = (i == 0, i == counts[0] - 1, j == 0, j == counts[1] - 1)
        origin = (int(starts[0][i]) - (0 if i == 0 else depth), int(starts[1][j]) - (0 if j == 0 else depth))
        return func(block, borders=borders, origin=origin, halo=depth, **kw)

    chunks = ((layers,), *(out_chunks or yx))
    return da.map_blocks(run, haloed, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32), **kwargs)


def map_two_stages(
    first: Callable[..., np.ndarray],
    second: Callable[..., np.ndarray],
    data: Any,
    depth: int,
    layers: int,
    *,
    rows: int,
    first_kwargs: dict[str, Any],
    second_kwargs: dict[str, Any],
) -> Any:
    """``second`` with ``depth`` px of halo over the per-pixel ``first`` of Dask ``data``, in strips of ``rows``.

    The pixels of ``map_blocks_with_halo(second, map_blocks_with_halo(first, data, 0, …), depth, …)``, but what
    neighbours hand each other is ``first`` on their ``depth``-px edges alone, from a task of its own per chunk;
    the block's own task reads its chunk and runs ``first`` on it again. Through a Dask overlap a whole row of
    ``first``'s blocks waits for the next row, and memory grows with the scene's width (dsen2cr mask, 1024²
    chunks: 0.33 GB at 4096², 0.67 GB at 10980²). The price: every input chunk is read twice.
    """
    import dask
    import dask.array as da

    from ..parallel import Windows

    data = align(data, 1, depth)
    windows = Windows.of(data)
    ey, ex = ([int(v) for v in np.cumsum((0, *c))] for c in data.chunks[1:])
    ny, nx = len(ey) - 1, len(ex) - 1
    bounds = [[(ey[i], ey[i + 1], ex[j], ex[j + 1]) for j in range(nx)] for i in range(ny)]
    edge_task = dask.delayed(_first_on_edges, pure=True)
    edges = [[edge_task(windows, bounds[i][j], first, depth, first_kwargs) for j in range(nx)] for i in range(ny)]
    block_task = dask.delayed(_two_stages, pure=True)

    def block(i: int, j: int) -> Any:
        near = {
            (di, dj): edges[i + di][j + dj]
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            if (di or dj) and 0 <= i + di < ny and 0 <= j + dj < nx
        }
        y0, y1, x0, x1 = bounds[i][j]
        task = block_task(windows, bounds[i][j], near, first, second, depth, rows, first_kwargs, second_kwargs)
        return da.from_delayed(
            task, shape=(layers, y1 - y0, x1 - x0), dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
        )

    return da.block([[block(i, j) for j in range(nx)] for i in range(ny)])


def _first_on_edges(
    windows: Any, bounds: tuple[int, int, int, int], first: Callable[..., np.ndarray], depth: int, kwargs: dict
) -> dict[str, np.ndarray]:
    """``first`` on the ``depth``-px top, bottom, left and right edges of one chunk (per pixel: as its slices)."""
    y0, y1, x0, x1 = bounds
    chunk = windows.read(slice(y0, y1), slice(x0, x1))
    h, w = chunk.shape[-2:]
    cuts = {
        "top": (slice(0, depth), slice(None)),
        "bottom": (slice(h - depth, h), slice(None)),
        "left": (slice(None), slice(0, depth)),
        "right": (slice(None), slice(w - depth, w)),
    }
    return {
        side: first(chunk[(Ellipsis, *cut)], borders=(True,) * 4, origin=(y0, x0), halo=0, **kwargs)
        for side, cut in cuts.items()
    }


def _two_stages(
    windows: Any,
    bounds: tuple[int, int, int, int],
    near: dict[tuple[int, int], dict[str, np.ndarray]],
    first: Callable[..., np.ndarray],
    second: Callable[..., np.ndarray],
    depth: int,
    rows: int,
    first_kwargs: dict[str, Any],
    second_kwargs: dict[str, Any],
) -> np.ndarray:
    """One block: ``first`` on its chunk, framed by its neighbours' edges, then ``second`` on that."""
    y0, y1, x0, x1 = bounds
    own = in_strips(first, rows, 0)(
        windows.read(slice(y0, y1), slice(x0, x1)), borders=(True,) * 4, origin=(y0, x0), halo=0, **first_kwargs
    )
    d = depth
    top, bottom, left, right = ((k in near) * d for k in ((-1, 0), (1, 0), (0, -1), (0, 1)))
    layers, h, w = own.shape
    frame = np.empty((layers, top + h + bottom, left + w + right), own.dtype)
    frame[:, top : top + h, left : left + w] = own
    del own
    # The neighbours' edges: sides, then corners (a diagonal neighbour's edge strip, its last or first d columns).
    if top:
        frame[:, :d, left : left + w] = near[-1, 0]["bottom"]
    if bottom:
        frame[:, top + h :, left : left + w] = near[1, 0]["top"]
    if left:
        frame[:, top : top + h, :d] = near[0, -1]["right"]
    if right:
        frame[:, top : top + h, left + w :] = near[0, 1]["left"]
    for (di, dj), (ys, strip) in {
        (-1, -1): (slice(0, d), "bottom"),
        (-1, 1): (slice(0, d), "bottom"),
        (1, -1): (slice(top + h, None), "top"),
        (1, 1): (slice(top + h, None), "top"),
    }.items():
        if (di, dj) in near:
            edge = near[di, dj][strip]
            if dj < 0:
                frame[:, ys, :d] = edge[..., -d:]
            else:
                frame[:, ys, left + w :] = edge[..., :d]
    borders = (not top, not bottom, not left, not right)
    return in_strips(second, rows, depth)(
        frame, borders=borders, origin=(y0 - top, x0 - left), halo=depth, **second_kwargs
    )


def in_strips(func: Callable[..., np.ndarray], rows: int, depth: int) -> Callable[..., np.ndarray]:
    """``func`` run on row strips of its block, each with ``depth`` rows of context on its interior sides.

    Strip starts keep the block's alignment (``rows`` is a multiple of the grid the block lies on), and a
    block function computes every pixel from its neighbourhood, so the result is the block's, row for row.
    """
    if rows < depth:
        raise ValueError(f"rows: expected at least the halo of {depth} pixels, found {rows}")

    def run(block: np.ndarray, *, borders: Borders, origin: tuple[int, int], halo: int, **kw: Any) -> np.ndarray:
        top, bottom, left, right = borders
        h = block.shape[-2]
        first, last = (0 if top else halo), h - (0 if bottom else halo)
        if last - first <= rows:
            return func(block, borders=borders, origin=origin, halo=halo, **kw)
        # halo 0 means four image borders (the in-memory path): strips then take ``depth`` rows from the image.
        assert halo in (0, depth), (halo, depth)
        out = None
        for a in range(first, last, rows):
            b = min(a + rows, last)
            lo, hi = max(a - depth, 0), min(b + depth, h)
            sides = (top and a == 0, bottom and b == h, left, right)
            part = func(block[..., lo:hi, :], borders=sides, origin=(origin[0] + lo, origin[1]), halo=depth, **kw)
            if out is None:  # filled in place: no second copy of the block's result
                out = np.empty((*part.shape[:-2], last - first, part.shape[-1]), part.dtype)
            out[..., a - first : b - first, :] = part
        return out

    return run


def with_margin(a: np.ndarray, borders: Borders, halo: int, margin: int, mode: str = "constant") -> np.ndarray:
    """Give a block a uniform ``margin``: keep ``margin`` of its ``halo`` on interior sides, pad border sides.

    ``mode`` is NumPy's pad mode for the border sides ("symmetric" = SciPy's and OpenCV's "reflect").
    """
    top, bottom, left, right = borders
    h, w = a.shape[-2:]
    cut = halo - margin
    a = a[..., (0 if top else cut) : (h if bottom else h - cut), (0 if left else cut) : (w if right else w - cut)]
    pad = [(0, 0)] * (a.ndim - 2) + [(margin * top, margin * bottom), (margin * left, margin * right)]
    return np.pad(a, pad, mode=mode)


def outside(shape: tuple[int, ...], borders: Borders, margin: int) -> np.ndarray:
    """(y, x) bool of a margined block: True on the padding beyond the image border."""
    top, bottom, left, right = borders
    out = np.zeros(shape[-2:], bool)
    h, w = out.shape
    if top:
        out[:margin] = True
    if bottom:
        out[h - margin :] = True
    if left:
        out[:, :margin] = True
    if right:
        out[:, w - margin :] = True
    return out


def crop(a: np.ndarray, margin: int) -> np.ndarray:
    return a[..., margin : a.shape[-2] - margin, margin : a.shape[-1] - margin] if margin else a


def box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum over the size×size box around each pixel (zero outside), each pixel's own fixed-order sum."""
    ones = np.ones(size, a.dtype)
    # correlate1d sums each pixel's taps directly, unlike uniform_filter's running sum that depends on the chunk.
    return ndimage.correlate1d(ndimage.correlate1d(a, ones, axis=-2, mode="constant"), ones, axis=-1, mode="constant")


def stack_layers(prob: np.ndarray, cloud: np.ndarray, shadow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The block functions' output: (4, y, x) float32 in :data:`LAYERS` order; NaN probability = invalid."""
    invalid = np.isnan(prob)
    return np.stack(
        [
            prob.astype(np.float32),
            cloud & ~invalid,
            shadow & ~invalid,
            np.where(invalid, np.float32(np.nan), mask.astype(np.float32)),
        ]
    ).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------- output
def to_dataset(layers: Any, template: xr.DataArray, method: str, params: dict, *, hard: bool = True) -> xr.Dataset:
    """(4, y, x) layers → the mask Dataset on the grid of ``template`` (coords, CRS, attrs kept).

    ``hard``: the mask takes the values 0 and 1 alone (and NaN); its attrs then say so the CF way
    (``flag_values``), which lets the composite move it as one byte a pixel.
    """
    coords = {k: v for k, v in template.coords.items() if "band" not in v.dims}
    dims = ("y", "x")
    data = {
        "cloud_probability": layers[0],
        "cloud": layers[1] > 0.5,
        "shadow": layers[2] > 0.5,
        "mask": layers[3],
    }
    attrs = {k: v for k, v in template.attrs.items() if k not in _DROP_ATTRS and k != "offset_applied"}
    attrs["mask_method"] = method
    attrs["mask_parameters"] = json.dumps(params, default=str)
    ds = xr.Dataset(
        {k: xr.DataArray(v, dims=dims, attrs=_VAR_ATTRS[k]) for k, v in data.items()}, coords=coords, attrs=attrs
    )
    if hard:
        ds["mask"].attrs.update(flag_values=[0.0, 1.0], flag_meanings="clear covered")
    if "spatial_ref" in ds.coords:
        for name in ds.data_vars:
            ds[name].attrs["grid_mapping"] = "spatial_ref"
    return ds


def per_leading(
    func: Callable[..., xr.Dataset],
    s2: xr.DataArray,
    batch: Callable[[list[xr.DataArray]], list[Any]] | None = None,
) -> xr.Dataset:
    """Apply ``func`` to each (band, y, x) slice of ``s2`` along its extra leading dims (e.g. ``time``).

    ``batch`` maps the list of every slice to one value per slice, passed to ``func`` as its second argument:
    what the slices need from a pass over all of them (e.g. the scene statistics of every date in one compute).
    """
    extra = [d for d in s2.dims if d not in ("band", "y", "x")]
    core = s2.transpose(*extra, "band", "y", "x")
    index = list(np.ndindex(*(s2.sizes[d] for d in extra)))
    slices = [core.isel(dict(zip(extra, i, strict=True))) for i in index]
    if batch is None:
        parts = [func(a) for a in slices]
    else:
        parts = [func(a, v) for a, v in zip(slices, batch(slices), strict=True)]
    for dim in reversed(extra):  # innermost dim first: groups of consecutive slices
        n = s2.sizes[dim]
        # "minimal" + "override": no coordinate is compared, which would compute lazy ones (e.g. chunked ones).
        parts = [
            xr.concat(
                parts[i : i + n], dim, data_vars="all", coords="minimal", compat="override", combine_attrs="override"
            )
            for i in range(0, len(parts), n)
        ]
    # The coordinates along the leading dims, as they were (the slices carried them as scalars).
    return parts[0].assign_coords(
        {k: v for k, v in s2.coords.items() if "band" not in v.dims and set(v.dims) & set(extra)}
    )
