import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

from xcloudfree import sensors


def test_band_table_canonical_order():
    assert sensors.S2_BAND_NAMES == (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    )
    assert [sensors.S2_BAND_NAMES.index(b) for b in sensors.S2_RGB] == [3, 2, 1]
    res = {b.name: b.resolution for b in sensors.S2_BANDS}
    assert res["B02"] == 10 and res["B8A"] == 20 and res["B10"] == 60
    waves = [b.wavelength for b in sensors.S2_BANDS]
    assert waves[:8] == sorted(waves[:8])  # B01..B08 increase in wavelength
    assert "B10" not in sensors.S2_L2A_BAND_NAMES and len(sensors.S2_L2A_BAND_NAMES) == 12


def test_db_linear_roundtrip():
    x = np.array([-30.0, -12.5, 0.0, 3.0])
    np.testing.assert_allclose(sensors.linear_to_db(sensors.db_to_linear(x)), x, atol=1e-12)
    assert sensors.db_to_linear(np.array(-10.0)) == pytest.approx(0.1)


@pytest.mark.parametrize(("preset", "lo", "hi"), [("dsen2cr", 0.0, 5.0), ("unit", 0.0, 1.0), ("tanh", -1.0, 1.0)])
def test_s2_presets_ranges_and_exact_inverse(preset, lo, hi):
    dn = np.array([0.0, 1234.0, 5000.0, 10000.0, 12000.0, -5.0])
    y = sensors.normalize_s2(dn, preset)
    assert y[0] == lo and y[3] == hi and y[4] == hi and y[5] == lo  # clipped
    back = sensors.denormalize_s2(y, preset)
    np.testing.assert_allclose(back[:4], dn[:4], rtol=0, atol=1e-9)


def test_dsen2cr_s2_divides_by_2000():
    assert sensors.normalize_s2(np.array(3000.0), "dsen2cr") == pytest.approx(1.5)


@pytest.mark.parametrize("preset", sensors.PRESETS)
def test_s1_presets_exact_inverse(preset):
    s1 = np.stack([np.linspace(-25, 0, 11), np.linspace(-32.5, 0, 11)])
    if preset == "tanh":
        s1[1] = np.linspace(-25, 0, 11)
    y = sensors.normalize_s1(s1, preset)
    np.testing.assert_allclose(sensors.denormalize_s1(y, preset), s1, atol=1e-9)


def test_s1_preset_values():
    s1 = np.array([[-25.0, -12.5, 0.0], [-32.5, -16.25, 0.0]])
    np.testing.assert_allclose(sensors.normalize_s1(s1, "dsen2cr"), [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_allclose(sensors.normalize_s1(s1, "unit"), [[0, 0.5, 1], [0, 0.5, 1]])
    # tanh clips both polarisations to [-25, 0] (REFERENCE §3)
    np.testing.assert_allclose(sensors.normalize_s1(s1, "tanh"), [[-1, 0, 1], [-1, -0.3, 1]])


def test_presets_work_on_torch_dask_and_xarray():
    dn = np.arange(0, 10001, 2500, dtype=np.float32)
    ref = sensors.normalize_s2(dn, "tanh")
    np.testing.assert_allclose(sensors.normalize_s2(torch.from_numpy(dn), "tanh").numpy(), ref)
    np.testing.assert_allclose(sensors.normalize_s2(da.from_array(dn, chunks=2), "tanh").compute(), ref)
    s1 = xr.DataArray(
        np.array([[[-25.0]], [[-32.5]]]), dims=("polarization", "y", "x"), coords={"polarization": ["VH", "VV"]}
    )
    out = sensors.normalize_s1(s1, "dsen2cr")
    # named polarisations are honoured whatever their order: VH -25 → (−25+32.5)/32.5·2, VV -32.5 → clipped to 0
    assert out.sel(polarization="VH").item() == pytest.approx(7.5 / 32.5 * 2)
    assert out.sel(polarization="VV").item() == 0.0
    t = sensors.normalize_s1(torch.tensor([[-12.5], [-16.25]]), "dsen2cr")
    assert torch.allclose(t, torch.tensor([[1.0], [1.0]]))


def test_bad_preset_and_polarisation_count():
    with pytest.raises(ValueError, match="preset"):
        sensors.normalize_s2(np.ones(3), "minmax")
    with pytest.raises(ValueError, match="s1: expected 2 polarisations"):
        sensors.normalize_s1(np.ones((3, 4, 4)))


def test_processing_baseline_offset():
    assert sensors.processing_offset({"processing_baseline": "04.00"}) == -1000
    assert sensors.processing_offset({"processing_baseline": "05.09"}) == -1000
    assert sensors.processing_offset({"processing_baseline": "03.01"}) == 0
    assert sensors.processing_offset({}) == 0
    assert sensors.processing_offset({"processing_baseline": "05.09", "offset": 0}) == 0
    s2 = xr.DataArray(
        np.full((2, 2, 2), 1500, np.uint16), dims=("band", "y", "x"), attrs={"processing_baseline": "04.00"}
    )
    h = sensors.harmonize_s2(s2)
    assert h.dtype == np.float32 and float(h.max()) == 500.0 and h.attrs["offset"] == 0
    assert sensors.harmonize_s2(h) is h  # applied once only
    np.testing.assert_allclose(sensors.reflectance(s2).values, 0.05)
    with pytest.raises(ValueError, match="processing_baseline"):
        sensors.processing_offset({"processing_baseline": "N/A"})
