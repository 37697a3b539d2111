"""The SEN12MS-CR index on the real tree in ../shared/data/sen12mscr."""

import numpy as np
import pytest
import rioxarray

from xcloudfree.io import SEN12MSCR, official_split


def test_official_split_is_matched_exactly():
    split = official_split()
    assert sum(v == "train" for v in split.values()) == 155
    assert sum(v == "val" for v in split.values()) == 10
    assert sum(v == "test" for v in split.values()) == 10
    assert split["ROIs1970_fall_1"] == "train"
    assert split["ROIs1970_fall_139"] == "test"
    # The substring test of the widely copied loader would put these test ROIs into train (REFERENCE §2).
    for roi in (
        "ROIs1158_spring_106",
        "ROIs1158_spring_123",
        "ROIs1158_spring_140",
        "ROIs1868_summer_73",
        "ROIs1868_summer_119",
        "ROIs1970_fall_139",
    ):
        assert split[roi] == "test"


def test_all_complete_triplets(sen12mscr_root):
    with pytest.warns(UserWarning, match=r"skipped 19 incomplete sample"):
        idx = SEN12MSCR(sen12mscr_root)
    assert len(idx) == 2
    assert idx.rois == ["ROIs1970_fall_139", "ROIs2017_winter_112"]
    summary = idx.summary()
    assert summary["complete"] == 2 and summary["incomplete"] == 19
    # 14 cloudy/clear pairs without S1, S1+clear spring_101 p30–32, S1-only spring_100, S1+cloudy summer_19
    assert summary["missing"] == {"s1": 14, "s2_cloudy": 3, "s2+s2_cloudy": 1, "s2": 1}
    assert "ROIs1158_spring_100_p102" in summary["incomplete_examples"]
    scene = idx[0]
    assert scene.attrs == {"roi": "ROIs1970_fall_139", "patch": 839, "season": "fall", "split": "test"}
    assert set(scene.data_vars) == {"s2", "s2_clear", "s1"}
    assert idx[1].attrs["split"] == "train" and idx[1].rio.crs.to_epsg() == 32631


def test_test_split_yields_exactly_the_fall_139_triplet(sen12mscr_root):
    idx = SEN12MSCR(sen12mscr_root, split="test")  # complete: nothing to report
    assert len(idx) == 1 and idx.summary()["incomplete"] == 0
    scene = idx[0]
    assert (scene.attrs["roi"], scene.attrs["patch"]) == ("ROIs1970_fall_139", 839)
    clear = rioxarray.open_rasterio(sen12mscr_root / "ROIs1970_fall_s2/s2_139/ROIs1970_fall_s2_139_p839.tif").values
    np.testing.assert_array_equal(scene["s2_clear"].values, clear)


def test_filters_and_requirements(sen12mscr_root):
    with pytest.warns(UserWarning):
        assert len(SEN12MSCR(sen12mscr_root, split="val")) == 0  # summer_19 is val but lacks its clear S2
    with pytest.warns(UserWarning):
        assert SEN12MSCR(sen12mscr_root, seasons=["winter"]).rois == ["ROIs2017_winter_112"]
    with pytest.warns(UserWarning, match="skipped 5 incomplete"):
        pairs = SEN12MSCR(sen12mscr_root, require=("s2", "s2_cloudy"))
    assert len(pairs) == 16  # 14 pairs without S1 + the 2 full triplets
    with pytest.warns(UserWarning):
        strip = SEN12MSCR(sen12mscr_root, seasons=["spring"], require=("s1", "s2"))
    assert [s.patch for s in strip.samples] == [30, 31, 32]
    assert set(strip[0].data_vars) == {"s1", "s2_clear"}
    with pytest.raises(ValueError, match="split: expected one of"):
        SEN12MSCR(sen12mscr_root, split="testing")
    with pytest.raises(ValueError, match="seasons: expected names"):
        SEN12MSCR(sen12mscr_root, seasons=["autumn"])
    with pytest.raises(ValueError, match="root: expected a SEN12MS-CR folder"):
        SEN12MSCR(sen12mscr_root / "missing")


def test_flat_layout_pairs_by_name_not_listing_order(sen12mscr_root, tmp_path):
    # The flat layout of some repos: {s1,s2_cloudfree,s2_cloudy}/ROIs1970_fall_139_p839.tif (links, not copies).
    sources = {
        "s1": [
            "ROIs1970_fall_s1/s1_139/ROIs1970_fall_s1_139_p839.tif",
            "ROIs2017_winter_s1/s1_112/ROIs2017_winter_s1_112_p797.tif",
        ],
        "s2_cloudfree": [
            "ROIs1970_fall_s2/s2_139/ROIs1970_fall_s2_139_p839.tif",
            "ROIs2017_winter_s2/s2_112/ROIs2017_winter_s2_112_p797.tif",
        ],
        "s2_cloudy": [
            "ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif",
            "ROIs2017_winter_s2_cloudy/s2_cloudy_112/ROIs2017_winter_s2_cloudy_112_p797.tif",
        ],
    }
    names = ["ROIs1970_fall_139_p839.tif", "ROIs2017_winter_112_p797.tif"]
    for folder, files in sources.items():
        (tmp_path / folder).mkdir()
        # Create the links in opposite orders per folder so that listing order cannot pair them.
        order = [1, 0] if folder == "s2_cloudy" else [0, 1]
        for i in order:
            (tmp_path / folder / names[i]).symlink_to(sen12mscr_root / files[i])
    idx = SEN12MSCR(tmp_path, layout="flat")
    assert len(idx) == 2
    for scene, roi_dir in zip(
        idx,
        (
            "ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif",
            "ROIs2017_winter_s2_cloudy/s2_cloudy_112/ROIs2017_winter_s2_cloudy_112_p797.tif",
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(scene["s2"].values, rioxarray.open_rasterio(sen12mscr_root / roi_dir).values)
    assert [s.split for s in idx.samples] == ["test", "train"]
