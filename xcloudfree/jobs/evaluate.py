"""Score GeoTIFF files and write the report users read (``xcloudfree evaluate``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import read_s2
from ..io.jsonfile import write_json
from ..masking import detect
from ..metrics import evaluate
from ..plot import plot_evaluation
from ..scene import check_same_grid
from ..sensors import reflectance

__all__ = ["evaluate_files"]


def evaluate_files(
    pred: str | os.PathLike,
    target: str | os.PathLike,
    *,
    cloudy: str | os.PathLike | None = None,
    mask: str | None = None,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    chunks: Any = 1024,
) -> dict[str, Any]:
    """Scores of a prediction GeoTIFF against a target GeoTIFF (both S2 DN, bands named or 13/12 in canonical order).

    The bands both files hold are scored, in the target's order, on reflectance (clip 0..10000, /10000).
    With ``cloudy`` (the input image) and ``mask`` (a masking method run on it) the ``*_reconstruction``
    (inside the mask) and ``*_reproduction`` (outside, vs the cloudy input) scores are added. The report is written
    to ``json_path`` and the figure (error map, per-band nRMSE) to ``plot_path`` when given, atomically.
    The files are read lazily in ``chunks`` (px, passed to :func:`xcloudfree.io.read_s2`; None reads them into
    memory) and scored chunk by chunk, so a full tile needs memory for a few chunks only.

    Examples
    --------
    >>> import tempfile
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(64, seed=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cloudy = xcf.io.write_cog(scene["s2"], f"{tmp}/cloudy.tif")
    ...     clear = xcf.io.write_cog(scene["s2_clear"], f"{tmp}/clear.tif")
    ...     report = evaluate_files(cloudy, clear, cloudy=cloudy, mask="dsen2cr")  # the identity baseline
    >>> round(report["psnr"], 2), report["psnr_reproduction"]  # outside the mask it is the cloudy input itself
    (11.11, inf)
    """
    images = {
        "pred": read_s2(pred, name="pred", chunks=chunks),
        "target": read_s2(target, name="target", chunks=chunks),
    }
    if cloudy is not None:
        images["cloudy"] = read_s2(cloudy, name="cloudy", chunks=chunks)
    if mask is not None and cloudy is None:
        raise ValueError(f"mask: the method {mask!r} runs on the cloudy input; expected --cloudy, found none")
    for name in ("pred", "cloudy"):
        if name in images:
            check_same_grid(images["target"], images[name], name=name, reference_name="target")
    have = [set(map(str, da["band"].values)) for da in images.values()]
    bands = [str(b) for b in images["target"]["band"].values if all(str(b) in h for h in have)]
    if not bands:
        raise ValueError(
            f"pred: expected bands in common with the target {list(map(str, images['target']['band'].values))}, "
            f"found {list(map(str, images['pred']['band'].values))}"
        )
    refl = {k: reflectance(v.sel(band=bands)) for k, v in images.items()}
    weights = None if mask is None else detect(images["cloudy"], method=mask)["mask"]
    scores = evaluate(refl["pred"], refl["target"], cloudy=refl.get("cloudy"), mask=weights, band_names=bands)
    report = {
        **scores,
        "bands": bands,
        "files": {k: str(v) for k, v in (("pred", pred), ("target", target), ("cloudy", cloudy)) if v is not None},
        "mask_method": mask,
    }
    if json_path is not None:
        write_json(report, json_path)
    if plot_path is not None:
        plot_evaluation(refl["pred"], refl["target"], Path(plot_path), band_names=bands, mask=weights)
    return report
