"""Composite a prediction into the observation: prediction where the mask says covered, observation where clear.

A hard mask edge (a fully covered pixel next to a fully clear one) is feathered outwards over ``feather`` pixels:
the weight of the prediction falls from 1 on the mask to 0 at ``feather + 1`` px away with a raised cosine of the
distance, so no seam shows and every covered pixel keeps the full prediction. A soft (continuous) mask is used as
it is: it has no hard edge to hide. Pixels further than ``feather`` px from the mask are the observed values,
bit for bit. Lazy on Dask, with a halo of ``feather + 1`` px, and the same pixels for any chunking (each weight
is the maximum over a fixed neighbourhood).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["composite", "feather_weights"]


def _ramp(feather: int) -> list[tuple[int, int, float]]:
    """(dy, dx, weight) of every offset within ``feather`` px: raised cosine of the distance, 0 at feather + 1."""
    out = []
    for dy in range(-feather, feather + 1):
        for dx in range(-feather, feather + 1):
            d = float(np.hypot(dy, dx))
            if 0 < d <= feather:
                out.append((dy, dx, 0.5 * (1.0 + np.cos(np.pi * d / (feather + 1)))))
    return out


def _weights_block(m: np.ndarray, feather: int) -> np.ndarray:
    """Weights of a block padded by ``feather + 1`` px on every side (NaN outside the image), same shape out.

    The padding ring of the result is left at 0: the caller crops it.
    """
    r = feather + 1
    h, w = m.shape[0] - 2 * r, m.shape[1] - 2 * r
    covered = m >= 1.0
    clear = m <= 0.0  # NaN (invalid or outside the image) is neither
    # A hard edge: a fully covered pixel with a fully clear 8-neighbour.
    near_clear = np.zeros_like(clear)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                near_clear[1:-1, 1:-1] |= clear[1 + dy : m.shape[0] - 1 + dy, 1 + dx : m.shape[1] - 1 + dx]
    edge = (covered & near_clear).astype(np.float32)
    core = np.nan_to_num(m[r : r + h, r : r + w], nan=0.0).astype(np.float32)
    for dy, dx, weight in _ramp(feather):
        np.maximum(core, weight * edge[r + dy : r + dy + h, r + dx : r + dx + w], out=core)
    out = np.zeros(m.shape, np.float32)
    out[r : r + h, r : r + w] = core
    return out


def _check(mask: Any, feather: Any) -> int:
    """``feather`` as an int, after checking it and ``mask``."""
    if not isinstance(mask, xr.DataArray) or mask.dims != ("y", "x"):
        raise ValueError(f"mask: expected a (y, x) DataArray, found {getattr(mask, 'dims', type(mask).__name__)}")
    if int(feather) != feather or feather < 0:
        raise ValueError(f"feather: expected a whole number of pixels >= 0, found {feather!r}")
    return int(feather)


def feather_weights(mask: xr.DataArray, feather: int = 3) -> xr.DataArray:
    """Weight of the prediction per pixel: the mask, with hard edges feathered outwards.

    Parameters
    ----------
    mask : (y, x) cloud-or-shadow map in [0, 1] (1 covered, 0 clear, NaN invalid), NumPy or Dask.
    feather : width of the transition outside a hard mask edge, px (0: no feathering).

    Returns
    -------
    (y, x) float32 weights in [0, 1], 1 on covered pixels, 0 on clear pixels further than ``feather`` px from a
    hard edge and on invalid pixels; coords and attrs of ``mask``.
    """
    feather = _check(mask, feather)
    r = feather + 1
    data = mask.data.astype(np.float32)
    if hasattr(data, "dask"):
        import dask.array as da

        weights: Any = da.map_overlap(
            _weights_block, data, depth=r, boundary=np.nan, trim=True, dtype=np.float32, feather=feather
        )
    else:
        weights = _weights_block(np.pad(np.asarray(data), r, constant_values=np.nan), feather)[r:-r, r:-r]
    return mask.copy(data=weights).rename("composite_weight").assign_attrs(feather=feather)


def composite(observed: xr.DataArray, prediction: xr.DataArray, mask: xr.DataArray, feather: int = 3) -> xr.DataArray:
    """``prediction`` where ``mask`` says covered, ``observed`` where clear, feathered at hard mask edges.

    Parameters
    ----------
    observed, prediction : (band, y, x) on the same grid and scale (e.g. float32 DN); NaN stays NaN.
    mask : (y, x) in [0, 1]: 1 covered (cloud or shadow), 0 clear, NaN invalid.
    feather : see :func:`feather_weights`.

    Returns
    -------
    (band, y, x) with the coords and attrs of ``prediction``: exactly ``observed`` where the weight is 0, exactly
    ``prediction`` where it is 1, ``w·prediction + (1 − w)·observed`` in between.
    """
    if observed.chunks is None or prediction.chunks is None or prediction.dims[1:] != ("y", "x"):
        w = feather_weights(mask, feather)
        out = xr.apply_ufunc(
            _composite_block, observed, prediction, w, dask="parallelized", output_dtypes=[prediction.dtype]
        )
        return out.transpose(*prediction.dims).rename(prediction.name).assign_attrs(prediction.attrs)
    import dask.array as da

    from ..parallel import Windows

    feather = _check(mask, feather)
    r = feather + 1
    # Each block reads its observed window in its own task: read by a task of their own, the observed chunks (13
    # float32 bands, 4 MiB a band at 1024²) would wait in memory for the prediction and the mask (measured: a whole
    # row of chunks, +0.4 GB from 4096² to 10980²), and the mask reads the same input chunks, earlier. The mask runs
    # ahead of the slow prediction blocks and its chunks wait for them (the whole mask, measured up to 10980²): a
    # hard mask waits as one byte a pixel, and the weights are made in the block's task from its overlapped chunk.
    m = mask.data
    m = m if hasattr(m, "dask") else da.from_array(np.asarray(m))
    if _is_hard(mask):
        m, outside = da.where(da.isnan(m), _INVALID, m).astype(np.uint8), _INVALID
    else:
        m, outside = m.astype(np.float32), np.nan
    observed = observed.transpose(*prediction.dims)
    halo = da.overlap.overlap(m.rechunk(prediction.data.chunks[-2:]), depth=r, boundary=outside)
    data = da.map_blocks(
        _composite_window,
        prediction.data,
        halo[None],
        source=Windows.of(observed.data),
        feather=feather,
        dtype=prediction.dtype,
        meta=np.empty((0, 0, 0), prediction.dtype),
        chunks=prediction.data.chunks,
    )
    return prediction.copy(data=data).rename(prediction.name).assign_attrs(prediction.attrs)


#: A hard mask's invalid pixels, moved as uint8.
_INVALID = 255


def _is_hard(mask: xr.DataArray) -> bool:
    """Whether ``mask`` says (CF ``flag_values``) that it holds 0 and 1 alone, with NaN for invalid pixels."""
    flags = mask.attrs.get("flag_values")
    return flags is not None and set(np.atleast_1d(flags).tolist()) <= {0, 1}


def _composite_window(
    prediction: np.ndarray, mask: np.ndarray, source: Any, feather: int, block_info: Any = None
) -> np.ndarray:
    """:func:`_composite_block` on one block: weights from its mask chunk with a ``feather + 1`` px halo (uint8 with
    :data:`_INVALID`, or float), observed values read here from ``source``."""
    (b0, b1), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    m = mask[0].astype(np.float32)
    if mask.dtype == np.uint8:
        m[mask[0] == _INVALID] = np.nan
    r = feather + 1
    weight = _weights_block(m, feather)[r:-r, r:-r]
    observed = source.read(slice(y0, y1), slice(x0, x1))[b0:b1]
    return _composite_block(observed, prediction, weight)


def _composite_block(observed: np.ndarray, prediction: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``observed + w·(prediction − observed)``, exactly ``prediction`` where ``w ≥ 1``, ``observed`` where ``w ≤ 0``.

    One output buffer, computed in place: the same operations as the expression, so the same bits, without its
    temporaries of a chunk's size each.
    """
    out = np.subtract(prediction, observed)
    np.multiply(weight, out, out=out)
    np.add(observed, out, out=out)
    np.copyto(out, prediction, where=weight >= 1)
    np.copyto(out, observed, where=weight <= 0)
    return out.astype(prediction.dtype, copy=False)
