"""``ds.cloudfree`` and ``da.cloudfree``: thin forwards to the plain functions; no state.

Both accessors see their object as a scene: a Dataset is one already, a DataArray becomes the scene variable
its dims say, wherever they stand (a ``band`` dim → ``s2``, ``polarization`` → ``s1``, only ``y``, ``x`` and
optionally ``time`` → ``dem``) unless its name says otherwise.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from .scene import validate_scene

__all__ = ["CloudfreeDatasetAccessor", "CloudfreeDataArrayAccessor"]

_VARIABLES = ("s2", "s1", "dem", "s2_clear")
#: The scene variable of a DataArray with this layer dimension.
_BY_LAYER_DIM = {"band": "s2", "polarization": "s1"}


def _variable_of(da: xr.DataArray) -> str:
    """The scene variable ``da`` holds by its dims, whatever their order; a ValueError when they say none."""
    found = [name for dim, name in _BY_LAYER_DIM.items() if dim in da.dims]
    if len(found) == 1:
        return found[0]
    if not found and {"y", "x"} <= set(da.dims) <= {"time", "y", "x"}:
        return "dem"
    raise ValueError(
        "da: expected a 'band' dimension (Sentinel-2), a 'polarization' dimension (Sentinel-1) or only (y, x) and "
        f"an optional time (DEM), found dims {da.dims}"
    )


class _CloudfreeAccessor:
    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    def _scene(self) -> xr.Dataset:
        obj = self._obj
        if isinstance(obj, xr.Dataset):
            return obj
        return obj.to_dataset(name=obj.name if obj.name in _VARIABLES else _variable_of(obj))

    def validate(self, **kwargs: Any) -> xr.Dataset | xr.DataArray:
        """Check the scene (:func:`xcloudfree.validate_scene`) and return the object unchanged."""
        validate_scene(self._scene(), **kwargs)
        return self._obj

    def mask(self, method: str = "dsen2cr", **params: Any) -> xr.Dataset:
        """Cloud and shadow masks of ``s2``: :func:`xcloudfree.masking.detect`."""
        from .masking import detect

        return detect(self._scene(), method=method, **params)

    def remove(self, model: Any = "dsen2cr", **kwargs: Any) -> xr.Dataset:
        """The scene with ``s2_cloudfree`` and the ``mask`` used: :func:`xcloudfree.inference.predict` (same arguments).

        By default (``keep_clear=True``, ``mask="dsen2cr"``) clear pixels keep their observed values and only
        cloudy or shadowed ones take the prediction; ``keep_clear=False`` gives the raw network output.
        """
        from .inference import predict

        return predict(self._scene(), model, **kwargs)

    def fill(self, method: Any = "linear", **kwargs: Any) -> xr.Dataset:
        """The time series with ``s2_filled``, ``mask``, ``fill_source``, ``fill_gap_days``.

        Forwards to :func:`xcloudfree.timeseries.fill` (same arguments).
        """
        from .timeseries import fill

        return fill(self._scene(), method, **kwargs)

    def evaluate(
        self,
        target: str = "s2_clear",
        prediction: str = "s2_cloudfree",
        mask: str | xr.DataArray | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Scores of ``prediction`` against ``target``, DN scaled to reflectance.

        Forwards to :func:`xcloudfree.metrics.evaluate_scene`.

        ``mask`` is a (y, x) DataArray or a masking method name (computed on the cloudy ``s2``); with a mask the
        ``*_reconstruction`` and ``*_reproduction`` scores are added.
        """
        from .metrics import evaluate_scene

        scene = self._scene()
        if isinstance(mask, str):
            mask = self.mask(method=mask)["mask"]
        return evaluate_scene(scene, target=target, prediction=prediction, mask=mask, **kwargs)


@xr.register_dataset_accessor("cloudfree")
class CloudfreeDatasetAccessor(_CloudfreeAccessor):
    """Cloud removal on a scene Dataset (``s2``, ``s1``, ``dem``, ``s2_clear``).

    Examples
    --------
    >>> import xcloudfree as xcf
    >>> scene = xcf.datasets.synthetic_scene(size=64, seed=1)
    >>> scene.cloudfree.validate() is scene
    True
    >>> scores = scene.cloudfree.evaluate(prediction="s2")  # the cloudy input scored against the clear truth
    >>> round(float(scores["psnr"]), 1)
    11.1
    """


@xr.register_dataarray_accessor("cloudfree")
class CloudfreeDataArrayAccessor(_CloudfreeAccessor):
    """Cloud removal on one variable: an S2 ``(band, y, x)`` or S1 ``(polarization, y, x)`` DataArray.

    Extra dims (a ``time`` axis) may stand anywhere: the ``band`` or ``polarization`` dim says what the array is.

    Examples
    --------
    >>> import xarray as xr
    >>> import xcloudfree as xcf
    >>> s2 = xcf.datasets.synthetic_scene(size=64, seed=1)["s2"]
    >>> series = xr.concat([s2, s2], dim="time")  # (time, band, y, x): still Sentinel-2
    >>> series.cloudfree.mask()["mask"].dims
    ('time', 'y', 'x')
    """
