"""Improved precision and recall (Kynkäänniemi et al. 2019): how much of the generated images lies on the manifold
of the real ones (precision) and how much of the real manifold the generated ones cover (recall).

Each set's manifold is the union of balls around its feature vectors, with the radius of each ball the distance
to its k-th nearest neighbour in the same set (k = 10, as in the cyclecr evaluation). The paper's features are
VGG16 fc2 activations (:class:`~xcloudfree.metrics.vgg.VGG16Features`, weights supplied by the user); without
weights the built-in :func:`band_statistics` descriptor is used, and its numbers are *not* comparable with
published ones (the result says so in ``comparable_to_paper``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..sensors import S2_BAND_NAMES, S2_RGB
from ._inputs import as_images, is_dask, unwrap

__all__ = ["improved_precision_recall", "precision_recall", "band_statistics"]

_HIST_BINS = 8
_PERCENTILES = (5, 25, 50, 75, 95)


def _features(x: Any, name: str) -> np.ndarray:
    data, _ = unwrap(x, ())
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or not np.isfinite(data).all():
        raise ValueError(
            f"{name}: expected finite features (N, D), found shape {data.shape}"
            + ("" if data.ndim != 2 else " with NaN or inf")
        )
    return data


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _radii(x: np.ndarray, k: int, batch: int) -> np.ndarray:
    """Squared distance of every row to its k-th nearest other row (index 0 of the sorted row is itself)."""
    return np.concatenate(
        [np.partition(_squared_distances(x[s : s + batch], x), k, axis=1)[:, k] for s in range(0, len(x), batch)]
    )


def _coverage(query: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray, batch: int) -> float:
    """Fraction of ``query`` rows inside at least one ball of ``ref``."""
    inside = [
        (_squared_distances(query[s : s + batch], ref) <= ref_radii[None, :]).any(axis=1)
        for s in range(0, len(query), batch)
    ]
    return float(np.concatenate(inside).mean())


def improved_precision_recall(real: Any, fake: Any, *, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
    """Improved precision, recall and F1 = 2PR / (P + R) of two feature sets.

    Parameters
    ----------
    real, fake : (N, D) and (M, D), numpy or torch
        Feature vectors of real (target) and generated (predicted) images; N and M must exceed ``k``.
    k : int
        Neighbourhood size of the manifold estimate.
    batch_size : int
        Rows per block of the distance matrix (memory ``batch_size × max(N, M)`` floats).
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"fake: expected {real.shape[1]} features per row like real, found {fake.shape[1]}")
    for name, x in (("real", real), ("fake", fake)):
        if len(x) <= k:
            raise ValueError(f"{name}: expected more than k = {k} samples, found {len(x)}")
    precision = _coverage(fake, real, _radii(real, k, batch_size), batch_size)
    recall = _coverage(real, fake, _radii(fake, k, batch_size), batch_size)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "k": k}


def band_statistics(images: Any) -> np.ndarray:
    """The built-in image descriptor: 17 numbers per band, shape (N, 17·C), float64.

    Per band: mean, standard deviation, the 5/25/50/75/95th percentiles, mean absolute gradient along x and y, and
    the fractions of pixels in 8 equal bins over [0, 1] (values clipped). NaNs are ignored. A descriptor of
    radiometry and texture chosen here, not a learnt embedding: scores on it are not comparable with papers.
    """
    x, _ = as_images(images, "images")
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    parts = [np.nanmean(flat, axis=-1), np.nanstd(flat, axis=-1)]
    parts += list(np.nanpercentile(flat, _PERCENTILES, axis=-1))
    parts += [
        np.nanmean(np.abs(np.diff(x, axis=-1)), axis=(-2, -1)),
        np.nanmean(np.abs(np.diff(x, axis=-2)), axis=(-2, -1)),
    ]
    finite = np.isfinite(flat).sum(axis=-1)
    bins = np.minimum((np.clip(flat, 0.0, 1.0) * _HIST_BINS).astype(np.int64), _HIST_BINS - 1)
    bins = np.where(np.isfinite(flat), bins, -1)
    parts += [(bins == b).sum(axis=-1) / np.maximum(finite, 1) for b in range(_HIST_BINS)]
    return np.stack(parts, axis=-1).reshape(n, -1)


def _rgb(x: Any, names: tuple[str, ...] | None) -> Any:
    """The red, green, blue bands of (N, C, H, W) images: by name, by the S2 band order (13 bands), or as given."""
    if names is not None and set(S2_RGB) <= set(names):
        return x[:, [names.index(b) for b in S2_RGB]]
    if x.shape[1] == len(S2_BAND_NAMES) and names is None:
        return x[:, [S2_BAND_NAMES.index(b) for b in S2_RGB]]
    if x.shape[1] == 3:
        return x
    raise ValueError(
        f"images: expected RGB (3 bands), the 13 Sentinel-2 bands or named bands with {list(S2_RGB)} for VGG16, "
        f"found {x.shape[1]} bands" + (f" {list(names)}" if names else "")
    )


def _vgg_extractor(weights: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from .vgg import VGG16Features

    model = VGG16Features.from_safetensors(weights)

    def extract(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.clip(np.nan_to_num(batch), 0.0, 1.0).astype(np.float32))
            return model(tensor).double().numpy()

    return extract


def precision_recall(
    real: Any,
    fake: Any,
    *,
    k: int = 10,
    weights: str | Path | None = None,
    extractor: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Improved precision, recall and F1 of generated images against real ones.

    Parameters
    ----------
    real, fake : (N, C, H, W) and (M, C, H, W), numpy, Dask, torch or xarray
        Reflectance in [0, 1]; read ``batch_size`` images at a time.
    k : int
        Neighbourhood size (10 in the papers).
    weights : path, optional
        A safetensors file of ImageNet VGG16 weights in torchvision's layout: features are then VGG16 fc2 on the
        RGB bands (B04, B03, B02 for Sentinel-2), as in the cyclecr paper.
    extractor : callable, optional
        Any ``(n, C, H, W) float numpy → (n, D)`` feature function instead.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``k``, ``extractor`` (its name) and ``comparable_to_paper``: True only for
        VGG16 with user weights (the scores are then only as comparable as the weights are ImageNet's).
    """
    if weights is not None and extractor is not None:
        raise ValueError("extractor: expected either weights (VGG16) or an extractor, found both")
    sets = [as_images(images, name) for images, name in ((real, "real"), (fake, "fake"))]
    if weights is not None:
        extract, label, comparable = _vgg_extractor(weights), "vgg16_fc2", True
        sets = [(_rgb(x, names), names) for x, names in sets]
    elif extractor is not None:
        extract, label, comparable = extractor, getattr(extractor, "__name__", type(extractor).__name__), False
    else:
        extract, label, comparable = band_statistics, "band_statistics", False

    def features(x: Any) -> np.ndarray:
        chunks = []
        for s in range(0, x.shape[0], batch_size):
            batch = x[s : s + batch_size]
            chunks.append(np.asarray(extract(np.asarray(batch.compute() if is_dask(batch) else batch))))
        return np.concatenate(chunks)

    result: dict[str, Any] = improved_precision_recall(features(sets[0][0]), features(sets[1][0]), k=k)
    result.update(extractor=label, comparable_to_paper=comparable)
    return result
