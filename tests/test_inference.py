"""Tiled inference: chunking invariance, exactness, NaN, keep_clear, distributed, the real three-patch strip."""

import numpy as np
import pytest
import torch
import xarray as xr
from rioxarray.merge import merge_arrays

import xcloudfree as xcf
from xcloudfree.inference import TileGrid, blend_window, load_count
from xcloudfree.inference import predict as _predict
from xcloudfree.inference.inputs import model_input


def predict(*args, **kwargs):
    """Exactness is a float32 CPU property: a CUDA machine would otherwise pick bf16 autocast.

    Tiling is checked on the raw network output (``keep_clear=False``); compositing has its own tests.
    """
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("keep_clear", False)
    return _predict(*args, **kwargs)


@pytest.fixture(scope="module")
def small_dsen2cr():
    torch.manual_seed(0)
    return xcf.models.create("dsen2cr", features=16, blocks=3)


@pytest.fixture(scope="module")
def scene():
    return xcf.datasets.synthetic_scene((230, 300), seed=11, cloud_cover=0.4)


def whole_image(model, scene):
    x = torch.from_numpy(model_input(scene, model.spec).values)[None]
    with torch.no_grad():
        return model(x)[0].numpy() * 2000.0  # dsen2cr scale back to DN


def test_tile_grid_covers_every_pixel_once_per_kept_start():
    grid = TileGrid(1000, 700, tile=128, overlap=32, margin=8)
    assert grid.stride == 96
    for axis, size in ((0, 1000), (1, 700)):
        kept = grid.starts(axis) + grid.margin
        assert kept[0] == 0 and kept[-1] < size  # each tile keeps from a pixel inside the scene
        assert kept[-1] + grid.tile - 2 * grid.margin >= size  # ... and the last reaches the last pixel
    w = blend_window(128, 32, 8, "cosine")
    assert (w[:8] == 0).all() and (w[8:24] > 0).all() and (w[24:104] == 1).all() and np.allclose(w, w[::-1])
    with pytest.raises(ValueError, match="overlap: expected"):
        TileGrid(10, 10, tile=64, overlap=64)
    with pytest.raises(ValueError, match="blend: expected one of"):
        blend_window(64, 16, 0, "linear")


def test_chunking_and_numpy_vs_dask_identical(small_dsen2cr, scene):
    ref = predict(scene, small_dsen2cr, tile=128)["s2_cloudfree"]
    assert ref.dims == ("band", "y", "x") and ref.dtype == np.float32
    for chunks in ({"y": 230, "x": 300}, {"y": 33, "x": 43}, {"y": 100, "x": 64}):
        out = predict(scene.chunk(chunks), small_dsen2cr, tile=128)["s2_cloudfree"]
        assert out.chunks is not None
        np.testing.assert_allclose(out.values, ref.values, rtol=1e-5, atol=1e-3)


def test_interior_equals_whole_image_forward(small_dsen2cr, scene):
    out = predict(scene.chunk({"y": 64, "x": 64}), small_dsen2cr, tile=96)  # overlap=None: 2·halo
    full = whole_image(small_dsen2cr, scene)
    halo = small_dsen2cr.spec.halo
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
    np.testing.assert_allclose(out["s2_cloudfree"].values[inner], full[inner], rtol=1e-5, atol=1e-2)
    # the border differs only because the scene is reflect-padded rather than zero-padded
    assert out["s2_cloudfree"].attrs["overlap"] == 2 * halo and out["s2_cloudfree"].attrs["margin"] == halo


def test_all_blends_are_chunk_invariant(small_dsen2cr, scene):
    for blend in ("gaussian", "mean"):
        a = predict(scene, small_dsen2cr, tile=64, overlap=40, blend=blend)["s2_cloudfree"].values
        b = predict(scene.chunk({"y": 50, "x": 77}), small_dsen2cr, tile=64, overlap=40, blend=blend)
        np.testing.assert_allclose(b["s2_cloudfree"].values, a, rtol=1e-5, atol=1e-3)


def test_blocks_read_their_own_input_so_memory_is_flat(small_dsen2cr, scene):
    """A block task depends on nothing: no input chunk or tile sum is held for a neighbour."""
    from dask.core import get_deps

    lazy = scene.chunk({"y": 33, "x": 43})
    out = predict(lazy, small_dsen2cr, tile=64, overlap=32, keep_clear=True)["s2_cloudfree"].data
    graph = dict(out.__dask_graph__())
    dependencies, dependents = get_deps(graph)
    blocks = [k for k in graph if str(k[0] if isinstance(k, tuple) else k).startswith("_block_task")]
    assert len(blocks) == 4 and all(not dependencies[k] for k in blocks)
    # keep_clear reads the observed bands inside each composite task, apart from the mask's read of s2: no input
    # chunk waits in memory for the prediction.
    composites = [k for k in graph if str(k[0]).startswith("_composite_window")]
    assert len(composites) == len(lazy.chunks["y"]) * len(lazy.chunks["x"])
    inputs = set(lazy["s2"].data.__dask_graph__())
    assert inputs and not any(dependencies[k] & inputs for k in composites)
    assert all(len(dependencies[k]) == 2 for k in composites)  # its prediction block and its weights


def test_block_sizes_group_or_split_whole_input_chunks():
    from xcloudfree.inference.engine import _blocks

    assert _blocks(10980, (1024,) * 10 + (740,), 896) == (1024,) * 10 + (740,)
    assert _blocks(4096, (2048, 2048), 896) == (1024,) * 4  # large chunks: pieces near the target
    assert _blocks(230, (33,) * 6 + (32,), 192) == (198, 32)  # small chunks: grouped
    assert _blocks(300, None, 896) == (300,)  # NumPy input: one block up to the target


def test_scene_smaller_than_a_tile_keeps_crs_and_attrs(small_dsen2cr):
    tiny = xcf.datasets.synthetic_scene((100, 130), seed=2)
    out = predict(tiny, small_dsen2cr, tile=256)
    pred = out["s2_cloudfree"]
    assert pred.shape == (13, 100, 130) and np.isfinite(pred.values).all()
    assert out.rio.crs == tiny.rio.crs and pred.rio.crs == tiny.rio.crs
    assert out.rio.transform() == tiny.rio.transform()
    assert pred.attrs["model"] == "dsen2cr" and pred.attrs["tile"] == 256 and pred.attrs["product"] == "L1C"
    assert set(out.data_vars) >= set(tiny.data_vars)  # the scene is kept, s2_cloudfree added


def test_nan_stays_put(small_dsen2cr, scene):
    holed = scene.copy()
    s1 = holed["s1"].values.copy()
    s1[:, 100:104, 150:154] = np.nan
    holed["s1"] = (("polarization", "y", "x"), s1)
    out = predict(holed.chunk({"y": 64, "x": 64}), small_dsen2cr, tile=128)["s2_cloudfree"].values
    nan = np.isnan(out).any(axis=0)
    assert nan[100:104, 150:154].all() and nan.sum() == 16


def test_keep_clear_with_a_continuous_mask(small_dsen2cr, scene):
    m = scene["cloud_opacity"]
    out = predict(scene, small_dsen2cr, tile=128, mask=m, keep_clear=True)
    raw = predict(scene, small_dsen2cr, tile=128)["s2_cloudfree"]
    clear = (m == 0).values
    np.testing.assert_allclose(out["s2_cloudfree"].values[:, clear], scene["s2"].values[:, clear], rtol=1e-6)
    full = (m == 1).values
    np.testing.assert_allclose(out["s2_cloudfree"].values[:, full], raw.values[:, full], rtol=1e-5)
    xr.testing.assert_equal(out["mask"], m.astype("float32"))
    # Without a mask, keep_clear uses the dsen2cr detector and returns the mask it used.
    auto = predict(scene, small_dsen2cr, tile=128, keep_clear=True)
    xr.testing.assert_equal(auto["mask"], xcf.masking.detect(scene["s2"], method="dsen2cr")["mask"])


def test_checkpoint_path_gives_the_same_pixels(small_dsen2cr, scene, tmp_path):
    path = xcf.models.save(small_dsen2cr, tmp_path / "m.safetensors")
    a = predict(scene, small_dsen2cr, tile=128)["s2_cloudfree"]
    b = predict(scene, path, tile=128)
    np.testing.assert_array_equal(a.values, b["s2_cloudfree"].values)
    assert len(b["s2_cloudfree"].attrs["weights_sha256"]) == 64


def test_rgb_model_returns_rgb_only():
    torch.manual_seed(1)
    unet = xcf.models.create("pix2pix", num_downs=5, ngf=8)  # pix2pix5: VV, VH, R, G, B → R, G, B
    sc = xcf.datasets.synthetic_scene(96, seed=3)
    out = predict(sc, unet, tile=5 * unet.spec.size_multiple, overlap=0)["s2_cloudfree"]  # tile > 2·halo (64)
    assert list(out["band"].values) == ["B04", "B03", "B02"]
    assert float(out.min()) >= -1e-3 and float(out.max()) <= 10000 + 1e-3  # tanh → [0, 10000] DN


def test_bad_input_is_named(small_dsen2cr, scene):
    with pytest.raises(ValueError, match=r"s1: the model needs Sentinel-1"):
        predict(scene.drop_vars("s1"), small_dsen2cr)
    with pytest.raises(ValueError, match=r"s2: the model needs band \['B10'\]"):
        predict(scene.drop_sel(band="B10"), small_dsen2cr)
    patchgan = xcf.models.create("patchgan", in_channels=8)
    with pytest.raises(ValueError, match="model: expected a generator of Sentinel-2 bands"):
        predict(scene, patchgan)
    unet = xcf.models.create("pix2pix", num_downs=5, ngf=8)
    with pytest.raises(ValueError, match=r"tile: expected a multiple of the model's size multiple 32, found 100"):
        predict(scene, unet, tile=100)
    with pytest.raises(ValueError, match="model: expected a model name"):
        predict(scene, "no-such-model.safetensors")


def test_local_cluster_loads_the_model_once_per_worker(small_dsen2cr, scene):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            before = client.run(load_count)
            out = predict(scene.chunk({"y": 64, "x": 64}), small_dsen2cr, tile=64, overlap=32)
            values = out["s2_cloudfree"].values
            after = client.run(load_count)
    assert all(v == 0 for v in before.values())
    assert sorted(after.values()) == [1, 1]  # 12 tile tasks over 2 workers: one load each
    local = predict(scene, small_dsen2cr, tile=64, overlap=32)["s2_cloudfree"].values
    np.testing.assert_allclose(values, local, rtol=1e-5, atol=1e-3)


def test_real_strip_has_no_seams(sen12mscr_root, small_dsen2cr):
    """ROIs1158_spring_101 p30/31/32 overlap by half: the mosaic's run agrees with each patch's run inside."""
    names = [f"ROIs1158_spring_{{m}}_101_p{p}.tif" for p in (30, 31, 32)]
    folders = {"s2": "ROIs1158_spring_s2/s2_101", "s1": "ROIs1158_spring_s1/s1_101"}
    patches = [
        xcf.io.open_scene(
            s2=sen12mscr_root / folders["s2"] / n.format(m="s2"), s1=sen12mscr_root / folders["s1"] / n.format(m="s1")
        )
        for n in names
    ]
    s2 = merge_arrays([p["s2"] for p in patches])
    s1 = merge_arrays([p["s1"] for p in patches])
    mosaic = xcf.make_scene(s2=s2, s1=s1)
    assert (mosaic.sizes["y"], mosaic.sizes["x"]) == (256, 512)
    whole = predict(mosaic.chunk({"y": 128, "x": 128}), small_dsen2cr, tile=128)["s2_cloudfree"]
    halo = small_dsen2cr.spec.halo
    for k, patch in enumerate(patches):
        own = predict(patch, small_dsen2cr, tile=128)["s2_cloudfree"].values
        part = whole.isel(x=slice(128 * k, 128 * k + 256)).values
        inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
        np.testing.assert_allclose(part[inner], own[inner], rtol=1e-5, atol=1e-2)
    # where neighbouring patches overlap, their own runs agree with each other in the interior too
    left = predict(patches[0], small_dsen2cr, tile=128)["s2_cloudfree"].values[:, halo:-halo, 128 + halo : 256 - halo]
    right = predict(patches[1], small_dsen2cr, tile=128)["s2_cloudfree"].values[:, halo:-halo, halo : 128 - halo]
    np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-2)


def test_cuda_matches_cpu_or_is_refused_clearly(small_dsen2cr, scene):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: expected an available device, found 'cuda'"):
            _predict(scene, small_dsen2cr, device="cuda")
        return
    cpu = predict(scene, small_dsen2cr, tile=128)["s2_cloudfree"].values
    on_gpu = {"tile": 128, "device": "cuda", "keep_clear": False}
    fp32 = _predict(scene.chunk({"y": 64, "x": 64}), small_dsen2cr, precision="float32", **on_gpu)
    # cuDNN convolutions run in TF32 by default (torch's setting): agreement to ~1e-3, not bitwise
    assert np.abs(fp32["s2_cloudfree"].values - cpu).mean() < 2e-3 * np.abs(cpu).mean()
    bf16 = _predict(scene, small_dsen2cr, **on_gpu)["s2_cloudfree"].values  # auto: bf16 autocast
    assert np.abs(bf16 - cpu).mean() < 0.01 * np.abs(cpu).mean()
    assert next(small_dsen2cr.parameters()).device.type == "cpu"  # the caller's module was not moved
