"""Weights on disk: import published ones (``xcloudfree import-weights``), score the bundled ones (``models``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..inference.runtime import bundled_weights
from ..models import file_sha256, read_metadata, summary
from ..models.importers import convert

__all__ = ["convert_weights", "list_models", "real_data_gain"]


def convert_weights(
    path: str | os.PathLike, out: str | os.PathLike, arch: str, **hparams: Any
) -> tuple[Path, dict[str, Any]]:
    """Convert published weights (Keras ``.hdf5`` or PyTorch ``.pth``) into an xcloudfree checkpoint at ``out``.

    Nothing is unpickled (:func:`xcloudfree.models.importers.convert`). Returns the checkpoint's path and its
    header (:func:`xcloudfree.models.read_metadata`: architecture, hparams, the ``imported_from`` provenance).
    """
    checkpoint = convert(path, out, arch, **hparams)
    return checkpoint, read_metadata(checkpoint)


def list_models(scores_file: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """:func:`xcloudfree.models.summary` with each network's ``real_data_gain`` (:func:`real_data_gain`)."""
    return [{**row, "real_data_gain": real_data_gain(row["name"], scores_file)} for row in summary()]


def real_data_gain(name: str, scores_file: str | os.PathLike | None = None) -> str:
    """The real-data PSNR gain of the bundled weights of ``name`` from the JSON bench/bench_real.py writes.

    ``scores_file`` defaults to ``real_data_scores.json`` beside the bundled weights. ``"n/a"`` without bundled
    weights, ``"not scored"`` when the file has no (current) entry for them.
    """
    weights = bundled_weights(name)
    if weights is None:
        return "n/a"
    try:
        scores = json.loads(Path(scores_file or weights.with_name("real_data_scores.json")).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "not scored"
    entry = scores.get("models", {}).get(weights.name)
    if not entry or entry.get("psnr_gain_in_mask_db") is None:
        return "not scored"
    if entry.get("sha256") != file_sha256(weights):
        return "not scored (weights changed since bench/bench_real.py ran)"
    gain, worse = entry["psnr_gain_in_mask_db"], entry.get("images_worse_than_cloudy", 0)
    text = f"{gain:+.1f} dB".replace("-", "\u2212")
    if gain < 0:
        return f"{text} (demo only: worse than the cloudy input)"
    if entry.get("psnr_mask", 0) < entry.get("fill_psnr_mask_same_images", -1):
        return f"{text} (demo only: below filling the clouds with the clear pixels' median)"
    return f"{text} (worse than the cloudy input on {worse} of {entry['images_with_clouds']} images)" if worse else text
