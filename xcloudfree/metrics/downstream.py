"""Downstream agreement: does a land-cover classifier see the prediction as it sees the real image? (acgan)"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import as_images, check_pair, unwrap

__all__ = ["lulc_agreement"]


def lulc_agreement(
    pred: Any,
    target: Any,
    labels: Any,
    *,
    nodata: int = -1,
    test_fraction: float = 0.3,
    n_estimators: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Land-use / land-cover classification of the target and of the prediction with one random forest.

    The labelled pixels are split into a training and a test part (stratified when every class has two pixels
    or more); a scikit-learn ``RandomForestClassifier`` learns the labels from the target's spectra on the
    training part and then classifies the test part of both images.

    Parameters
    ----------
    pred, target : (C, H, W), numpy, Dask, torch or xarray
        Reflectance in [0, 1].
    labels : (H, W) integers
        Class of each pixel; ``nodata`` marks unlabelled ones.
    test_fraction : float
        Share of the labelled pixels held out for scoring.

    Returns
    -------
    dict
        ``target`` and ``prediction``, each with ``overall_accuracy`` and ``f1`` ({class: F1}) on the test pixels;
        ``agreement``, the share of test pixels given the same class on both; ``classes``; ``n_train``; ``n_test``.
    """
    try:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import accuracy_score, f1_score
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('lulc_agreement needs scikit-learn: pip install "xcloudfree[eval]"') from err

    p, _ = as_images(pred, "pred")
    t, _ = as_images(target, "target")
    check_pair(p, t, ("pred", "target"))
    if p.shape[0] != 1:
        raise ValueError(f"pred: expected one image (C, H, W), found a batch of {p.shape[0]}")
    p, t = np.asarray(p[0], dtype=np.float64), np.asarray(t[0], dtype=np.float64)
    y, _ = unwrap(labels, ("y", "x"))
    y = np.asarray(y)
    if y.shape != p.shape[1:] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected integer classes of shape {p.shape[1:]}, found {y.dtype} {y.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a share in (0, 1), found {test_fraction}")

    features_p, features_t = p.reshape(len(p), -1).T, t.reshape(len(t), -1).T
    keep = (y.ravel() != nodata) & np.isfinite(features_p).all(axis=1) & np.isfinite(features_t).all(axis=1)
    index, classes_of = np.flatnonzero(keep), y.ravel()[keep]
    classes, counts = np.unique(classes_of, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"labels: expected at least two classes among the labelled pixels, found {classes.tolist()}")
    train, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=classes_of if counts.min() >= 2 else None
    )
    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
    forest.fit(features_t[train], y.ravel()[train])
    truth = y.ravel()[test]
    predicted = {
        name: forest.predict(features[test]) for name, features in (("target", features_t), ("prediction", features_p))
    }

    def scores(found: np.ndarray) -> dict[str, Any]:
        f1 = f1_score(truth, found, labels=classes, average=None, zero_division=0)
        return {
            "overall_accuracy": float(accuracy_score(truth, found)),
            "f1": {int(c): float(v) for c, v in zip(classes, f1, strict=True)},
        }

    return {
        "target": scores(predicted["target"]),
        "prediction": scores(predicted["prediction"]),
        "agreement": float(np.mean(predicted["target"] == predicted["prediction"])),
        "classes": [int(c) for c in classes],
        "n_train": int(len(train)),
        "n_test": int(len(test)),
    }
