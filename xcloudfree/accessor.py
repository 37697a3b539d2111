"""``ds.cloudfree`` and ``da.cloudfree``: thin forwards to the plain functions; no state.

Both accessors see their object as a scene: a Dataset is one already, a DataArray becomes the scene variable
its dims say (``band`` → ``s2``, ``polarization`` → ``s1``, ``(y, x)`` → ``dem``) unless its name says otherwise.
"""

from __future__ import annotations

import xarray as xr

from .scene import validate_scene

__all__ = ["CloudfreeDatasetAccessor", "CloudfreeDataArrayAccessor"]

_VARIABLES = ("s2", "s1", "dem", "s2_clear")


class _CloudfreeAccessor:
    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    def _scene(self) -> xr.Dataset:
        obj = self._obj
        if isinstance(obj, xr.Dataset):
            return obj
        name = obj.name if obj.name in _VARIABLES else None
        if name is None:
            name = {"band": "s2", "polarization": "s1"}.get(obj.dims[0] if obj.ndim >= 3 else "", "dem")
        return obj.to_dataset(name=name)

    def validate(self, **kwargs) -> xr.Dataset | xr.DataArray:
        """Check the scene (:func:`xcloudfree.validate_scene`) and return the object unchanged."""
        validate_scene(self._scene(), **kwargs)
        return self._obj


@xr.register_dataset_accessor("cloudfree")
class CloudfreeDatasetAccessor(_CloudfreeAccessor):
    """Cloud removal on a scene Dataset (``s2``, ``s1``, ``dem``, ``s2_clear``)."""


@xr.register_dataarray_accessor("cloudfree")
class CloudfreeDataArrayAccessor(_CloudfreeAccessor):
    """Cloud removal on one variable: an S2 ``(band, y, x)`` or S1 ``(polarization, y, x)`` DataArray."""
