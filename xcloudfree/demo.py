"""The main job on the bundled example: a synthetic scene, processed end to end (``xcloudfree demo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .datasets import synthetic_scene
from .io import write_cog
from .masking import detect, to_classes

__all__ = ["run_demo", "rgb", "quicklook"]


def rgb(s2: xr.DataArray, *, bands: tuple[str, str, str] = ("B04", "B03", "B02"), gain: float = 3.0) -> np.ndarray:
    """A display RGB image (height, width, 3) in [0, 1] from S2 DN: reflectance × ``gain``, clipped."""
    data = np.asarray(s2.sel(band=list(bands)).values, dtype=np.float32)
    return np.clip(np.moveaxis(data, 0, -1) / 10000.0 * gain, 0.0, 1.0)


def quicklook(panels: dict[str, np.ndarray], path: str | Path, *, panel_size: float = 4.0) -> Path:
    """Save panels side by side as a PNG (atomically): RGB arrays (h, w, 3) or single layers (h, w)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io.geotiff import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size * len(panels), panel_size), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels.items(), strict=True):
        ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    final, tmp = atomic_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        tmp.replace(final)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return final


def run_demo(out: str | Path, *, size: int = 512, seed: int = 0, cloud_cover: float = 0.4) -> dict[str, Path]:
    """Make a synthetic scene, mask it and write COGs with a quicklook; returns the written paths by name."""
    out = Path(out)
    scene = synthetic_scene(size, seed=seed, cloud_cover=cloud_cover)
    written = {
        "s2_cloudy": write_cog(scene["s2"], out / "s2_cloudy.tif"),
        "s2_clear": write_cog(scene["s2_clear"], out / "s2_clear.tif"),
        "s1": write_cog(scene["s1"], out / "s1.tif"),
        "dem": write_cog(scene["dem"], out / "dem.tif"),
    }
    masks = detect(scene, method="dsen2cr")
    written["mask"] = write_cog(to_classes(masks), out / "mask_dsen2cr.tif")
    vv = np.asarray(scene["s1"].sel(polarization="VV").values)
    written["quicklook"] = quicklook(
        {
            "cloudy S2 (RGB)": rgb(scene["s2"]),
            "dsen2cr mask (cloud, shadow)": _mask_rgb(masks),
            "S1 VV (dB)": np.clip((vv + 25.0) / 25.0, 0.0, 1.0),
            "clear S2 (RGB)": rgb(scene["s2_clear"]),
        },
        out / "quicklook.png",
    )
    return written


def _mask_rgb(masks: xr.Dataset) -> np.ndarray:
    """Clouds white, shadows blue, clear black."""
    cloud, shadow = masks["cloud"].values, masks["shadow"].values
    image = np.zeros((*cloud.shape, 3), np.float32)
    image[cloud] = 1.0
    image[shadow] = (0.2, 0.4, 1.0)
    return image
