"""Published checkpoints → our networks: files written here in the exact layouts of the reference code.

The layouts (names, nesting, dtypes, shapes) follow the reference code: ameraner/dsen2-cr (Keras 2.2 HDF5 of
``DSen2CR_model``), GLF-CR ``RDN_residual_CR`` saved as ``{"network": state_dict}`` (DataParallel ``module.``
prefix), and the junyanz ``UnetGenerator`` / ``NLayerDiscriminator`` state dicts. Each file is made from one of
our models renamed to their names; importing it must give that model's forward exactly.
"""

import argparse
import json
from fractions import Fraction

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import xcloudfree as xcf
from xcloudfree.cli import app


def _same_forward(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


# ---------------------------------------------------------------------------------------------- Keras HDF5
def _keras_layers(blocks: int, sar: bool, first: int = 1):
    """Layer names of DSen2CR_model in Keras 2.2 creation order, and the Conv2D names among them."""
    layers, convs, n = ["input_1", "input_2"], [], first
    counters = {"activation": 1, "lambda": 1, "add": 1, "concatenate": 1}

    def next_name(kind):
        name = f"{kind}_{counters[kind]}"
        counters[kind] += 1
        return name

    def conv():
        nonlocal n
        convs.append(f"conv2d_{n}")
        layers.append(convs[-1])
        n += 1

    if sar:
        layers.append(next_name("concatenate"))
    conv()
    layers.append(next_name("activation"))
    for _ in range(blocks):
        conv()
        layers.append(next_name("activation"))
        conv()
        layers += [next_name("lambda"), next_name("add")]
    conv()
    layers += [next_name("add"), next_name("concatenate"), next_name("lambda")]  # long skip + cloud-mask output
    return layers, convs


def _write_keras(model, path, *, nested=False, weights_only=False, first=1):
    hp = model.hparams
    layers, convs = _keras_layers(hp["blocks"], hp["sar"], first)
    ours = ["head.0"] + [f"blocks.{i}.body.{j}" for i in range(hp["blocks"]) for j in (0, 3)] + ["tail"]
    state = model.state_dict()
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"name": "model_1"}}).encode()
        root = f if weights_only else f.create_group("model_weights")
        root.attrs["keras_version"] = b"2.2.4"
        root.attrs["backend"] = b"tensorflow"
        weights = {}
        for name, mine in zip(convs, ours, strict=True):
            kernel = state[f"{mine}.weight"].numpy().transpose(2, 3, 1, 0)  # OIHW → Keras HWIO
            weights[name] = [(f"{name}/kernel:0", kernel), (f"{name}/bias:0", state[f"{mine}.bias"].numpy())]
        if nested:  # multi_gpu_model: the single-GPU model is one layer of the parallel model
            root.attrs["layer_names"] = np.array([b"input_1", b"input_2", b"model_1", b"concatenate_9"])
            for layer in ("input_1", "input_2", "concatenate_9"):
                root.create_group(layer).attrs["weight_names"] = np.array([], dtype="S1")
            group = root.create_group("model_1")
            pairs = [p for name in convs for p in weights[name]]
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in pairs])
            for n, value in pairs:
                group.create_dataset(n, data=value.astype(np.float32))
        else:
            root.attrs["layer_names"] = np.array([n.encode() for n in layers])
            for layer in layers:
                group = root.create_group(layer)
                pairs = weights.get(layer, [])
                group.attrs["weight_names"] = np.array([n.encode() for n, _ in pairs], dtype="S" if pairs else "S1")
                for n, value in pairs:
                    group.create_dataset(n, data=value.astype(np.float32))
        if not weights_only:
            opt = f.create_group("optimizer_weights/training/Nadam")
            opt.create_dataset("Variable:0", data=np.zeros(3, np.float32))
            opt.create_dataset("iterations:0", data=np.int64(100))


@pytest.mark.parametrize(
    ("sar", "nested", "weights_only", "first"),
    [(True, False, False, 1), (False, True, False, 1), (True, False, True, 35)],
    ids=["full-model", "multi-gpu-no-sar", "weights-only"],
)
def test_keras_dsen2cr_imports_exactly(tmp_path, sar, nested, weights_only, first):
    torch.manual_seed(0)
    ref = xcf.models.create("dsen2cr", features=8, blocks=5, sar=sar)  # 12 convs: conv2d_10 sorts after conv2d_9
    path = tmp_path / "model_SARcarl.hdf5"
    _write_keras(ref, path, nested=nested, weights_only=weights_only, first=first)
    model = xcf.models.import_weights(path, arch="dsen2cr")
    assert model.hparams["features"] == 8 and model.hparams["blocks"] == 5 and model.hparams["sar"] == sar
    _same_forward(ref, model, torch.rand(1, 15 if sar else 13, 20, 24))
    info = model.metadata["imported_from"]
    assert info["source"] == "model_SARcarl.hdf5" and len(info["sha256"]) == 64 and "keras" in info["format"]
    assert any(k.startswith("optimizer_weights/") for k in info["ignored"]) != weights_only


def test_keras_errors_name_the_tensor(tmp_path):
    ref = xcf.models.create("dsen2cr", features=8, blocks=1)
    path = tmp_path / "m.hdf5"
    _write_keras(ref, path)
    with pytest.raises(ValueError, match="blocks=2 was given but the file m.hdf5 holds a dsen2cr with blocks=1"):
        xcf.models.import_weights(path, arch="dsen2cr", blocks=2)
    with h5py.File(path, "a") as f:  # a block conv of the wrong width
        del f["model_weights/conv2d_2/conv2d_2/kernel:0"]
        f["model_weights/conv2d_2"].create_dataset("conv2d_2/kernel:0", data=np.zeros((3, 3, 8, 7), np.float32))
    with pytest.raises(ValueError, match=r"'conv2d_2/kernel' has shape \(7, 8, 3, 3\) .* expects \(8, 8, 3, 3\)"):
        xcf.models.import_weights(path, arch="dsen2cr")
    (tmp_path / "x.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not HDF5"):
        xcf.models.import_weights(tmp_path / "x.hdf5", arch="dsen2cr")


# ---------------------------------------------------------------------------------------------- GLF-CR / carf
_CARF = {"features": 16, "growth": 8, "blocks": 2, "layers": 2, "heads": 8, "window": 4, "kernel": 3}


def _glfcr_names(blocks: int, layers: int) -> dict[str, str]:
    """Our carf module → the RDN_residual_CR module of GLF-CR (net_CR_RDN.py, submodules.py)."""
    names = {
        "shallow1_opt": "SFENet1",
        "shallow2_opt": "SFENet2",
        "shallow_sar.0": "SFENet1_SAR",
        "shallow_sar.1": "SFENet2_SAR",
        "global_fusion.0": "GFF.0",
        "global_fusion.1": "GFF.1",
        "upsample.0": "UPNet.0",
        "upsample.2": "UPNet.2",
    }
    for i in range(blocks):
        names[f"blocks.{i}.local_fusion_opt"] = f"RDBs.{i}.LFF"
        names[f"blocks.{i}.local_fusion_sar"] = f"RDBs.{i}.LFF_SAR"
        for c in range(layers):
            ours, theirs = f"blocks.{i}.attention.{c}", f"RDBs.{i}.convs.{c}"
            names[ours] = theirs
            names[f"blocks.{i}.convs_opt.{c}.0"] = f"{theirs}.conv.0"
            names[f"blocks.{i}.convs_sar.{c}.0"] = f"{theirs}.conv_SAR.0"
            for mine, glf in [
                ("attn.qkv_opt", "attn.qkv"),
                ("attn.qkv_sar", "attn.qkv_SAR"),
                ("attn.proj_opt", "attn.proj"),
                ("attn.proj_sar", "attn.proj_SAR"),
                ("attn.logit_gate", "attn.attn_fuse_1x1conv"),
                ("norm_opt", "norm2"),
                ("norm_sar", "norm2_SAR"),
                ("mlp_opt.0", "mlp.fc1"),
                ("mlp_opt.2", "mlp.fc2"),
                ("mlp_sar.0", "mlp_SAR.fc1"),
                ("mlp_sar.2", "mlp_SAR.fc2"),
            ]:
                names[f"{ours}.{mine}"] = f"{theirs}.{glf}"
        # DFG.fac_warp = [df_conv (Conv, LeakyReLU), df_ResnetBlock.stem = [Conv, LeakyReLU, Conv] × 2, df_conv]
        names[f"fusions.{i}.kernel_net.0"] = f"DF.{i}.fac_warp.0.0"
        for r in (2, 3):
            names[f"fusions.{i}.kernel_net.{r}.body.0"] = f"DF.{i}.fac_warp.{r - 1}.stem.0"
            names[f"fusions.{i}.kernel_net.{r}.body.3"] = f"DF.{i}.fac_warp.{r - 1}.stem.2"
        names[f"fusions.{i}.kernel_net.4"] = f"DF.{i}.fac_warp.3.0"
        names[f"fusions.{i}.gate_opt"] = f"sar_fuse_1x1conv.{i}"
        names[f"fusions.{i}.gate_sar"] = f"opt_distribute_1x1conv.{i}"
    return names


def _glfcr_state(model) -> dict[str, torch.Tensor]:
    names = _glfcr_names(_CARF["blocks"], _CARF["layers"])
    out = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        if module.endswith(".attn") and param == "position_bias":
            out[f"{names[module[: -len('.attn')]]}.attn.relative_position_bias_table"] = value.clone()
        else:
            out[f"{names[module]}.{param}"] = value.clone()
    w, area = _CARF["window"], _CARF["window"] ** 2
    for i in range(_CARF["blocks"]):
        for c in range(_CARF["layers"]):  # persistent buffers of the reference code
            out[f"RDBs.{i}.convs.{c}.attn.relative_position_index"] = torch.zeros(area, area, dtype=torch.int64)
            if c % 2:
                out[f"RDBs.{i}.convs.{c}.attn_mask"] = torch.zeros((64 // w) ** 2, area, area)
    return out


def test_glfcr_checkpoint_imports_into_carf(tmp_path):
    torch.manual_seed(0)
    ref = xcf.models.create("carf", **_CARF)
    state = {f"module.{k}": v for k, v in _glfcr_state(ref).items()}  # saved from nn.DataParallel
    path = tmp_path / "CR_net.pth"
    torch.save({"network": state, "epoch": 30, "opts": argparse.Namespace(crop_size=128)}, path)
    with pytest.warns(UserWarning, match="LeakyReLU"):
        model = xcf.models.import_weights(path, arch="carf")
    assert {k: model.hparams[k] for k in _CARF} == _CARF and model.hparams["mlp_ratio"] == 2.0
    _same_forward(ref, model, torch.rand(1, 15, 16, 16))
    ignored = model.metadata["imported_from"]["ignored"]
    assert (
        ignored["epoch"].startswith("checkpoint entry")
        and "opts" in ignored
        and "module.RDBs.0.convs.1.attn_mask" not in ignored
    )
    assert "recomputed" in ignored["RDBs.0.convs.1.attn.relative_position_index"]
    assert "rebuilt" in ignored["RDBs.1.convs.1.attn_mask"]

    del state["module.GFF.1.bias"]
    state["module.extra.weight"] = torch.zeros(1)
    torch.save({"network": state}, path)
    with pytest.raises(ValueError, match=r"carf tensors not found in the file: global_fusion.1.bias$"):
        xcf.models.import_weights(path, arch="carf")


# ---------------------------------------------------------------------------------------------- pix2pix
def _junyanz_unet_names(num_downs: int) -> dict[str, str]:
    """Our UNetGenerator module → the nested UnetSkipConnectionBlock module of the junyanz code."""
    names = {"down.0": "model.model.0", f"up.{num_downs - 1}.1": "model.model.3"}
    prefix = "model.model.1.model."
    for level in range(1, num_downs):
        up = num_downs - 1 - level
        names[f"down.{level}.1"] = f"{prefix}1"
        if level == num_downs - 1:  # innermost: [downrelu, downconv, uprelu, upconv, upnorm]
            names.update({f"up.{up}.1": f"{prefix}3", f"up.{up}.2": f"{prefix}4"})
        else:  # [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm (, dropout)]
            names.update({f"down.{level}.2": f"{prefix}2", f"up.{up}.1": f"{prefix}5", f"up.{up}.2": f"{prefix}6"})
        prefix += "3.model."
    return names


def _rename(model, names):
    """Our state dict under their names, after giving BatchNorm non-trivial running statistics."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 1.5)
    out = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        out[f"{names[module]}.{param}"] = value.clone()
    return out


def test_pix2pix_generator_and_patchgan_import_exactly(tmp_path):
    torch.manual_seed(0)
    ref = xcf.models.create("pix2pix", in_channels=5, out_channels=3, num_downs=6, ngf=4)
    state = _rename(ref, _junyanz_unet_names(6))
    path = tmp_path / "latest_net_G.pth"
    # An EMA wrapper beside the optimizer state: the EMA copy is the one to run.
    torch.save({"params_ema": state, "optimizer": {"lr": 2e-4}, "params": {k: v * 0 for k, v in state.items()}}, path)
    model = xcf.models.import_weights(path, arch="pix2pix")
    assert (model.hparams["num_downs"], model.hparams["ngf"], model.hparams["norm"]) == (6, 4, "batch")
    _same_forward(ref, model, torch.rand(2, 5, 64, 64) * 2 - 1)
    assert set(model.metadata["imported_from"]["ignored"]) == {"optimizer", "params"}

    disc = xcf.models.create("patchgan", in_channels=8, n_layers=3, ndf=4)
    names = {f"layers.{i}": f"model.{i}" for i in range(12)}
    state = _rename(disc, names)
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]  # files of PyTorch < 0.4.1 lack the counter
    torch.save(state, tmp_path / "latest_net_D.pth")
    imported = xcf.models.import_weights(tmp_path / "latest_net_D.pth", arch="patchgan")
    _same_forward(disc, imported, torch.rand(1, 8, 64, 64))
    assert len(imported.metadata["imported_from"]["defaulted"]) == 3


def test_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"network": {"w": torch.zeros(1)}, "opts": Fraction(1, 3)}, path)  # any class but plain containers
    with pytest.raises(ValueError, match="weights_only=True"):
        xcf.models.import_weights(path, arch="carf")
    with pytest.raises(ValueError, match="arch: expected one of"):
        xcf.models.import_weights(path, arch="acgan")


def test_cli_import_weights_writes_a_loadable_checkpoint(tmp_path):
    torch.manual_seed(1)
    ref = xcf.models.create("dsen2cr", features=8, blocks=2)
    src = tmp_path / "model_SARcarl.hdf5"
    _write_keras(ref, src)
    out = tmp_path / "dsen2cr_carl.safetensors"
    result = CliRunner().invoke(app, ["import-weights", str(src), "--arch", "dsen2cr", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "features=8" in result.output and "2 ignored" in result.output
    model = xcf.models.load(out)
    _same_forward(ref, model, torch.rand(1, 15, 16, 16))
    info = xcf.models.read_metadata(out)["metadata"]["imported_from"]
    assert info["source"] == src.name and info["sha256"] == xcf.models.file_sha256(src)
    result = CliRunner().invoke(app, ["import-weights", str(src), "--arch", "dsen2cr", "--out", str(out), "-p", "x=1"])
    assert result.exit_code == 2 and "hparams" in result.output


def test_models_flags_weights_worse_than_the_cloudy_input(tmp_path):
    from xcloudfree.jobs import real_data_gain

    bundled = xcf.inference.runtime.bundled_weights("dsen2cr")
    scores = tmp_path / "scores.json"
    entry = {"sha256": xcf.models.file_sha256(bundled), "psnr_gain_in_mask_db": -3.14}
    scores.write_text(json.dumps({"models": {bundled.name: entry}}))
    assert real_data_gain("dsen2cr", scores) == "\u22123.1 dB (demo only: worse than the cloudy input)"
    assert real_data_gain("carf", scores) == "n/a"  # no bundled weights
    scores.write_text(json.dumps({"models": {bundled.name: {**entry, "psnr_gain_in_mask_db": 2.0}}}))
    assert real_data_gain("dsen2cr", scores) == "+2.0 dB"
    mixed = {**entry, "psnr_gain_in_mask_db": 0.5, "images_worse_than_cloudy": 1, "images_with_clouds": 2}
    scores.write_text(json.dumps({"models": {bundled.name: mixed}}))
    assert real_data_gain("dsen2cr", scores) == "+0.5 dB (worse than the cloudy input on 1 of 2 images)"
    weak = {**entry, "psnr_gain_in_mask_db": 3.6, "psnr_mask": 24.4, "fill_psnr_mask_same_images": 24.6}
    scores.write_text(json.dumps({"models": {bundled.name: weak}}))
    assert real_data_gain("dsen2cr", scores).endswith(
        "(demo only: below filling the clouds with the clear pixels' median)"
    )
    scores.write_text(json.dumps({"models": {bundled.name: {**entry, "sha256": "0" * 64}}}))
    assert "weights changed" in real_data_gain("dsen2cr", scores)
    result = CliRunner().invoke(app, ["models"])
    line = next(x for x in result.output.splitlines() if x.startswith("dsen2cr "))
    assert "real-data PSNR gain: " in line and "carf" in result.output
