"""Model zoo: exact parameter counts of the reference networks, shapes at several sizes, specs, safe checkpoints."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch

import xcloudfree as xcf
from xcloudfree.models import ModelSpec, available, count_parameters, create, load, read_metadata, save, summary
from xcloudfree.models.carf import CrossModalSwinLayer
from xcloudfree.sensors import S2_BAND_NAMES

# Shapes are independent of width and depth: small networks keep the CPU time low.
SMALL = {
    "dsen2cr": {"features": 16, "blocks": 2},
    "pix2pix": {"ngf": 8},
    "patchgan": {"ndf": 8},
    "carf": {"features": 16, "growth": 8, "blocks": 2, "layers": 2, "heads": 2},
    "acgan": {"ngf": 8, "n_blocks": 2},
    "acgan_discriminator": {"ndf": 8},
    "cyclecr": {"ngf": 8, "n_blocks": 2},
    "cyclecr_s2_to_s1": {"ngf": 8, "n_blocks": 2},
    "cyclecr_discriminator": {"ndf": 8},
}


def meta_count(name: str, **hparams) -> int:
    with torch.device("meta"):
        return count_parameters(create(name, **hparams))


def run_on(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def run(model: torch.nn.Module, height: int, width: int) -> torch.Tensor:
    """Forward a random (1, C, height, width) input in [-1, 1]."""
    x = torch.rand(1, model.spec.in_channels, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return run_on(model, x)


# --- parameter counts (REFERENCE §4) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        ("dsen2cr", {}, 18_947_341),
        ("pix2pix", {}, 54_416_003),
        ("pix2pix", {"in_channels": 3, "out_channels": 3}, 54_413_955),
        ("pix2pix", {"in_channels": 5, "out_channels": 13}, 54_436_493),
        ("pix2pix", {"in_channels": 15, "out_channels": 13}, 54_446_733),
        ("patchgan", {"in_channels": 8}, 2_770_753),
        ("patchgan", {"in_channels": 6}, 2_768_705),
        ("patchgan", {"in_channels": 8, "spectral_norm": True}, 2_770_753),
        ("carf", {}, 14_827_373),
        # The CycleGAN resnet_9blocks generator, 3 → 3 channels.
        ("cyclecr_s2_to_s1", {}, 11_378_179),
    ],
)
def test_parameter_counts_match_the_reference(name, hparams, expected):
    assert meta_count(name, **hparams) == expected


def test_dsen2cr_without_sar_drops_two_input_channels_of_the_first_conv():
    with torch.device("meta"):
        model = create("dsen2cr", sar=False)
    assert model.spec.input_order == S2_BAND_NAMES and model.spec.sar == ()
    assert count_parameters(model) == 18_947_341 - 2 * 3 * 3 * 256


def test_acgan_variants_differ_only_in_input_channels():
    counts = {v: meta_count("acgan", inputs=v) for v in ("S", "SD", "SO", "SOD")}
    conv7 = 7 * 7 * 64  # one input channel of the first Conv7×7 (generator) ...
    disc = 4 * 4 * 64  # ... and of the first Conv4×4 (discriminator)
    assert counts["SOD"] - counts["S"] == 5 * conv7
    assert counts["SD"] - counts["S"] == conv7 and counts["SO"] - counts["S"] == 4 * conv7
    assert meta_count("acgan_discriminator", inputs="SOD") - meta_count("acgan_discriminator", inputs="S") == 5 * disc


def test_summary_lists_every_model_with_its_count_and_a_json_spec():
    rows = summary()
    assert [r["name"] for r in rows] == available()
    by_name = {r["name"]: r for r in rows}
    assert by_name["carf"]["parameters"] == 14_827_373
    assert by_name["pix2pix"]["spec"]["input_order"] == ["VV", "VH", "B04", "B03", "B02"]
    assert json.loads(json.dumps(rows)) == rows


# --- forward shapes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("name", ["dsen2cr", "carf", "acgan", "cyclecr", "cyclecr_s2_to_s1"])
def test_generators_keep_the_spatial_size(name, size):
    model = create(name, **SMALL[name])
    out = run(model, size, size)
    assert out.shape == (1, model.spec.out_channels, size, size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("size", "num_downs"), [(128, 7), (256, 8)])
def test_pix2pix_shapes_and_tanh_range(size, num_downs):
    for channels in ((5, 3), (15, 13)):
        model = create("pix2pix", in_channels=channels[0], out_channels=channels[1], num_downs=num_downs, ngf=8)
        out = run(model, size, size)
        assert out.shape == (1, channels[1], size, size)
        assert out.abs().max() <= 1


@pytest.mark.parametrize(("name", "size", "patches"), [("patchgan", 256, 30), ("patchgan", 128, 14)])
def test_patchgan_gives_one_logit_per_70px_patch(name, size, patches):
    assert run(create(name, **SMALL[name]), size, size).shape == (1, 1, patches, patches)


@pytest.mark.parametrize("name", ["acgan_discriminator", "cyclecr_discriminator"])
def test_method_discriminators_see_input_and_output_channels(name):
    model = create(name, **SMALL[name])
    assert run(model, 256, 256).shape == (1, 1, 30, 30)
    assert run(model, 128, 128).shape == (1, 1, 14, 14)


def test_cyclecr_discriminators_are_spectrally_normalised_and_d_s2_sees_the_cloud_map():
    d_s2, d_s1 = create("cyclecr_discriminator", domain="s2"), create("cyclecr_discriminator", domain="s1")
    assert (d_s2.spec.in_channels, d_s1.spec.in_channels) == (4, 3)
    assert any(name.endswith("parametrizations.weight.original") for name, _ in d_s2.named_parameters())


def test_dsen2cr_runs_at_any_size():
    model = create("dsen2cr", **SMALL["dsen2cr"])
    assert run(model, 250, 300).shape == (1, 13, 250, 300)


def test_carf_at_the_paper_width_and_any_multiple_of_16():
    assert run(create("carf"), 64, 64).shape == (1, 13, 64, 64)
    small = create("carf", **SMALL["carf"])
    assert run(small, 192, 320).shape == (1, 13, 192, 320)
    with pytest.raises(ValueError, match="multiples of 16"):
        run(small, 200, 320)


def test_shifted_window_mask_keeps_wrapped_regions_apart():
    # After the cyclic shift, the bottom-right window holds pixels from all four corners; the mask must stop the
    # top-left corner from reaching the bottom-right one, which plain window attention would let it do.
    torch.manual_seed(0)
    layer = CrossModalSwinLayer(dim=8, heads=2, window=8, shift=4, mlp_ratio=2.0, drop_path=0.0).eval()
    opt, sar = torch.randn(1, 8, 24, 40), torch.randn(1, 8, 24, 40)
    poked = opt.clone()
    poked[:, :, 0, 0] += 5.0
    with torch.no_grad():
        base, _ = layer(opt, sar)
        moved, _ = layer(poked, sar)
    changed = (moved - base).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[1, 1] and changed[3, 3]  # same region, same window
    assert not changed[-1, -1] and not changed[0, -1] and not changed[-1, 0]  # same window, other regions
    assert not changed[4:, :].any() and not changed[:, 4:].any()


def test_inputs_are_checked():
    model = create("dsen2cr", **SMALL["dsen2cr"])
    with pytest.raises(ValueError, match=r"x: expected a \(batch, 15"):
        model(torch.zeros(1, 13, 8, 8))
    with pytest.raises(ValueError, match="multiples of 256"):
        create("pix2pix", ngf=8)(torch.zeros(1, 5, 128, 128))


# --- residual skips and initialisation ------------------------------------------------------------------------------


def test_residual_networks_return_their_optical_input_when_the_residual_is_zero():
    dsen2cr = create("dsen2cr", **SMALL["dsen2cr"])
    torch.nn.init.zeros_(dsen2cr.tail.weight)
    x = torch.rand(1, 15, 32, 32) * 5
    assert torch.equal(run_on(dsen2cr, x), x[:, :13])

    cyclecr = create("cyclecr", **SMALL["cyclecr"])
    last = cyclecr.generator.head[0]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.rand(1, 7, 32, 32) * 1.8 - 0.9
    torch.testing.assert_close(run_on(cyclecr, x), x[:, 3:6])


def test_initialisations_follow_the_papers():
    dsen2cr = create("dsen2cr", features=64, blocks=1)
    conv = dsen2cr.blocks[0].body[0]
    bound = math.sqrt(6 / (64 * 9))  # He-uniform
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert all(m.bias.abs().max() == 0 for m in dsen2cr.modules() if isinstance(m, torch.nn.Conv2d))

    pix2pix = create("pix2pix")
    weights = torch.cat([m.weight.flatten() for m in pix2pix.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(weights.std().item() - 0.02) < 0.001
    bn = torch.cat([m.weight for m in pix2pix.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 0.01 and 0.01 < bn.std().item() < 0.03
    assert sum(isinstance(m, torch.nn.Dropout) for m in pix2pix.modules()) == 3


# --- specs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_every_spec_survives_json_and_matches_the_network(name):
    model = create(name, **SMALL[name])
    spec = model.spec
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.halo % 8 == 0 and 0 < spec.halo <= 64
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels in (spec.in_channels, 4 * (spec.in_channels - 2))  # carf unshuffles its optical stream


def test_spec_contents_that_the_engine_relies_on():
    assert create("pix2pix", ngf=8).spec.input_order == ("VV", "VH", "B04", "B03", "B02")
    dsen2cr = create("dsen2cr", **SMALL["dsen2cr"]).spec
    assert dsen2cr.input_order[:13] == S2_BAND_NAMES and dsen2cr.residual and dsen2cr.normalization == "dsen2cr"
    cyclecr = create("cyclecr", **SMALL["cyclecr"]).spec
    assert cyclecr.sar_mean and cyclecr.cloud_map and cyclecr.input_order[2] == xcf.models.SAR_MEAN
    sod = create("acgan", inputs="SOD", **SMALL["acgan"]).spec
    assert sod.dem and sod.input_order[-1] == xcf.models.DEM and sod.dem_range[0] < 0 < sod.dem_range[1]
    assert not create("acgan", inputs="S", **SMALL["acgan"]).spec.optical_bands


def test_halo_follows_the_receptive_field_rule():
    assert create("dsen2cr", blocks=16, features=8).spec.halo == 40  # 1 + 2·16 + 1 = 34 px → next multiple of 8
    assert create("dsen2cr", blocks=2, features=8).spec.halo == 8  # 6 px
    assert create("dsen2cr", blocks=40, features=8).spec.halo == 64  # 82 px, capped
    assert create("patchgan", ndf=8).spec.halo == 40  # 70×70 field → radius 35


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optical_bands": ("B99",)}, "spec.optical_bands"),
        ({"sar": ("HH",)}, "spec.sar"),
        ({"normalization": "zscore"}, "spec.normalization"),
        ({"input_order": ("VV", "B04")}, "spec.input_order"),
        ({"dem": True}, "spec.dem_range"),
    ],
)
def test_spec_rejects_inconsistent_fields(change, message):
    base = create("pix2pix", ngf=8).spec.to_dict()
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict({**base, **change})
    with pytest.raises(ValueError, match="unknown"):
        ModelSpec.from_dict({**base, "colour": "red"})


def test_create_rejects_unknown_names_and_hyperparameters():
    with pytest.raises(ValueError, match="name: expected one of"):
        create("unet9000")
    with pytest.raises(ValueError, match="hparams: dsen2cr takes"):
        create("dsen2cr", width=3)
    with pytest.raises(ValueError, match="in_channels, out_channels"):
        create("pix2pix", in_channels=4, out_channels=3)
    with pytest.raises(ValueError, match="inputs"):
        create("acgan", inputs="OD")


# --- checkpoints ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_save_load_gives_bitwise_equal_outputs(name, tmp_path):
    torch.manual_seed(1)
    size = 128 if name == "pix2pix" else 64
    hparams = {**SMALL[name], "num_downs": 7} if name == "pix2pix" else SMALL[name]
    model = create(name, **hparams)
    x = torch.rand(2, model.spec.in_channels, size, size) * 2 - 1
    model.train()(x)  # moves BatchNorm statistics and spectral-norm vectors away from their initial values
    path = save(model, tmp_path / f"{name}.safetensors", metadata={"data": "unit test", "epoch": 3})
    loaded = load(path)
    assert not loaded.training and loaded.spec == model.spec
    assert loaded.metadata == {"data": "unit test", "epoch": 3}
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    info = read_metadata(path)
    assert info["architecture"] == name and info["hparams"] == model.hparams
    assert info["xcloudfree_version"] == xcf.__version__
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file is gone


def test_load_restores_a_customised_spec(tmp_path):
    model = create("dsen2cr", **SMALL["dsen2cr"])
    model.spec = ModelSpec.from_dict({**model.spec.to_dict(), "normalization": "unit"})
    assert load(save(model, tmp_path / "m.safetensors")).spec.normalization == "unit"


def test_load_refuses_a_truncated_file(tmp_path):
    path = save(create("dsen2cr", **SMALL["dsen2cr"]), tmp_path / "m.safetensors")
    data = path.read_bytes()
    for keep in (len(data) - 100, 200, 4):
        (tmp_path / "cut.safetensors").write_bytes(data[:keep])
        with pytest.raises(ValueError, match="truncated"):
            load(tmp_path / "cut.safetensors")


def test_load_refuses_weights_of_another_architecture(tmp_path):
    path = save(create("pix2pix", ngf=8), tmp_path / "m.safetensors")
    rewritten = rewrite_metadata(path, architecture="dsen2cr", hparams=SMALL["dsen2cr"])
    with pytest.raises(
        ValueError, match=r"not fit architecture 'dsen2cr'.*missing blocks\.0.*unexpected down\.0\.weight"
    ):
        load(rewritten)
    # Same architecture, other width: names agree, shapes do not.
    path = save(create("dsen2cr", features=8, blocks=2), tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match=r"wrong shape blocks\.0\.body\.0\.bias \(8,\) != \(16,\)"):
        load(rewrite_metadata(path, hparams={"features": 16, "blocks": 2, "sar": True}))
    with pytest.raises(ValueError, match="architecture expected one of"):
        load(rewrite_metadata(path, architecture="resnet50"))


def rewrite_metadata(path, **changes):
    """The same tensors under an edited xcloudfree JSON header (what a wrong or forged checkpoint looks like)."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    info = json.loads(header["__metadata__"]["xcloudfree"])
    header["__metadata__"]["xcloudfree"] = json.dumps({**info, **changes})
    text = json.dumps(header).encode()
    out = path.with_name("edited.safetensors")
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    return out


@pytest.mark.parametrize("legacy", [False, True])
def test_load_refuses_pickles_without_opening_them(tmp_path, legacy):
    path = tmp_path / "m.pt"
    torch.save(create("dsen2cr", **SMALL["dsen2cr"]).state_dict(), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match="pickle.*never unpickles"):
        load(path)


def test_load_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="without xcloudfree metadata"):
        load(tmp_path / "plain.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, this is not a checkpoint")
    with pytest.raises(ValueError, match="expected a safetensors file"):
        load(tmp_path / "text.safetensors")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.safetensors")


def test_save_needs_a_registered_network(tmp_path):
    with pytest.raises(ValueError, match="model: expected a network built by"):
        save(torch.nn.Conv2d(1, 1, 1), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="metadata: expected JSON"):
        save(create("dsen2cr", **SMALL["dsen2cr"]), tmp_path / "m.safetensors", metadata={"when": object()})
    assert not list(tmp_path.iterdir())
