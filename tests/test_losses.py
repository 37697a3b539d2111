"""Training losses: exact values on hand-made tensors, properties, NaN masks, gradients, autocast, VGG loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from xcloudfree.metrics import ssim_torch
from xcloudfree.training import losses


def t(values, shape=None) -> torch.Tensor:
    x = torch.tensor(values, dtype=torch.float32)
    return x.reshape(shape) if shape is not None else x


def rand(*shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- exact values on tiny tensors --------------------------------------------------------------------------------


def test_l1_exact():
    assert losses.l1(t([[1.0, -2.0], [3.0, 4.0]], (1, 1, 2, 2)), torch.zeros(1, 1, 2, 2)).item() == 2.5


def test_carl_exact_hand_value():
    # pixel 0 covered: |1 − 0| = 1; pixel 1 clear: |1 − 3| = 2 → adaptive 1.5; global L1 = 1 → 1.5 + λ·1
    pred, target, cloudy = t([1.0, 1.0], (1, 1, 1, 2)), t([0.0, 0.0], (1, 1, 1, 2)), t([1.0, 3.0], (1, 1, 1, 2))
    mask = t([1.0, 0.0], (1, 1, 2))
    assert losses.carl(pred, target, cloudy, mask).item() == 2.5
    assert losses.carl(pred, target, cloudy, mask, lam=0.5).item() == 2.0


def test_carl_matches_numpy_with_soft_mask():
    pred, target, cloudy = rand(2, 3, 4, 5, seed=1) * 5, rand(2, 3, 4, 5, seed=2) * 5, rand(2, 3, 4, 5, seed=3) * 5
    mask = rand(2, 1, 4, 5, seed=4)
    p, tt, i, m = (x.double().numpy() for x in (pred, target, cloudy, mask))
    expected = np.mean(m * np.abs(p - tt) + (1 - m) * np.abs(p - i)) + 1.0 * np.mean(np.abs(p - tt))
    assert losses.carl(pred, target, cloudy, mask).item() == pytest.approx(expected, rel=1e-6)


def test_carl_properties():
    pred, target, cloudy = rand(2, 4, 6, 6, seed=5), rand(2, 4, 6, 6, seed=6), rand(2, 4, 6, 6, seed=7)
    mask = (rand(2, 6, 6, seed=8) > 0.5).float()
    base = losses.l1(pred, target).item()
    # a cloud-free input equal to the target: CARL is (1 + λ)·L1 whatever the mask
    assert losses.carl(pred, target, target, mask).item() == pytest.approx(2 * base, rel=1e-6)
    # everything covered: the same; nothing covered and λ = 0: L1 to the cloudy input
    assert losses.carl(pred, target, cloudy, torch.ones(2, 6, 6), lam=3.0).item() == pytest.approx(4 * base, rel=1e-6)
    assert losses.carl(pred, target, cloudy, torch.zeros(2, 1, 6, 6), lam=0.0).item() == pytest.approx(
        losses.l1(pred, cloudy).item(), rel=1e-6
    )


def test_carl_nan_mask_pixels_weigh_nothing():
    pred, target, cloudy = rand(1, 2, 3, 4, seed=9), rand(1, 2, 3, 4, seed=10), rand(1, 2, 3, 4, seed=11)
    mask = (rand(1, 1, 3, 4, seed=12) > 0.5).float()
    mask[..., 3] = float("nan")  # last column invalid
    for x in (target, cloudy):
        x[..., 3] = float("nan")  # whatever lies under an invalid pixel must not leak in
    pred = pred.requires_grad_()
    loss = losses.carl(pred, target, cloudy, mask)
    expected = losses.carl(pred[..., :3], target[..., :3], cloudy[..., :3], mask[..., :3])
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[..., 3] == 0).all() and (pred.grad[..., :3] != 0).any()
    all_invalid = torch.full((1, 3, 4), float("nan"))
    assert losses.carl(pred, target, cloudy, all_invalid).item() == 0.0


def test_carf_loss_exact_terms():
    pred, target, mask = t([2.0, 4.0], (1, 1, 1, 2)), t([1.0, 1.0], (1, 1, 1, 2)), t([1.0, 0.0], (1, 1, 1, 2))
    # masked |[1, 0]| mean 0.5 → 2·0.5; L1 mean([1, 3]) = 2 → 0.5·2; MSE mean([1, 9]) = 5 → 0.5·5
    assert losses.carf_loss(pred, target, mask, ssim_weight=0.0).item() == 2.0
    assert losses.carf_loss(pred, target, mask, ssim_weight=0.0, use_mse=True).item() == 3.5
    a, b = rand(2, 3, 16, 16, seed=13), rand(2, 3, 16, 16, seed=14)
    only_ssim = losses.carf_loss(a, b, torch.zeros(2, 16, 16), l1_weight=0.0, masked_weight=0.0, ssim_weight=1.0)
    assert only_ssim.item() == pytest.approx(1.0 - ssim_torch(a, b).item(), rel=1e-6)
    assert only_ssim.item() > 0.5  # two independent noise images are structurally unrelated


def test_carf_loss_identical_images_is_zero_and_nan_safe():
    a = rand(2, 13, 16, 16, seed=15)
    mask = (rand(2, 1, 16, 16, seed=16) > 0.3).float()
    assert losses.carf_loss(a, a.clone(), mask).item() == 0.0  # SSIM term is exactly 0 too
    mask[0, 0, :2] = float("nan")
    b = (a + 0.1).requires_grad_()
    loss = losses.carf_loss(b, a, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(b.grad).all()


def test_gan_loss_vanilla_and_lsgan_values():
    logits = t([0.0, 2.0])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731 - BCE with logits: −log σ(x) = softplus(−x)
    assert losses.gan_loss(logits, True).item() == pytest.approx((softplus(0) + softplus(-2)) / 2, rel=1e-6)
    assert losses.gan_loss(logits, False).item() == pytest.approx((softplus(0) + softplus(2)) / 2, rel=1e-6)
    assert losses.gan_loss(logits, True, "lsgan").item() == 1.0  # ((0 − 1)² + (2 − 1)²) / 2
    assert losses.gan_loss(logits, False, "lsgan").item() == 2.0  # (0² + 2²) / 2
    with pytest.raises(ValueError, match="mode"):
        losses.gan_loss(logits, True, "wgan")


def test_pix2pix_and_discriminator_losses():
    fake_logits, real_logits = t([0.0, 2.0], (1, 1, 1, 2)), t([1.0, 3.0], (1, 1, 1, 2))
    pred, target = t([0.5, -0.5], (1, 1, 1, 2)), t([0.0, 0.0], (1, 1, 1, 2))
    total, parts = losses.pix2pix_generator_loss(fake_logits, pred, target, lam=100.0)
    assert parts["l1"].item() == 0.5
    assert parts["gan"].item() == pytest.approx(losses.gan_loss(fake_logits, True).item())
    assert total.item() == pytest.approx(parts["gan"].item() + 50.0, rel=1e-6)
    total, parts = losses.pix2pix_generator_loss(fake_logits, pred, target, lam=10.0, mode="lsgan")
    assert total.item() == pytest.approx(1.0 + 5.0)
    d, dparts = losses.discriminator_loss(real_logits, fake_logits, mode="lsgan")
    assert dparts["real"].item() == 2.0  # (0² + 2²) / 2
    assert dparts["fake"].item() == 2.0  # (0² + 2²) / 2
    assert d.item() == 2.0  # the 0.5 of pix2pix
    assert not any(p.requires_grad for p in dparts.values())


def test_cyclecr_terms_exact():
    ones, zeros = torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2)
    m = t([1.0, 0.5], (1, 1, 1, 2))
    # cycle: mean|m·1| = 0.75, mean|(1 − m)·1| = 0.25; identity: 0.75 + 0.75; aux: mean|[0, 0.5·0.5]| = 0.125
    assert losses.cycle_loss(ones, zeros, ones, zeros, m).item() == 1.0
    assert losses.identity_loss(ones, zeros, ones, zeros, m).item() == 1.5
    assert losses.aux_loss(m, zeros).item() == 0.125
    logits = [t([0.0, 2.0], (1, 1, 1, 2)), t([1.0, 1.0], (1, 1, 1, 2))]  # LSGAN "real": 1 and 0
    common = dict(fake_logits=logits, s1=ones, s2=ones, m=m, s1_rec=zeros, s2_rec=zeros, m_hat=zeros)
    total, parts = losses.cyclecr_generator_loss(**common, s1_idt=zeros, s2_idt=zeros)
    assert {k: v.item() for k, v in parts.items()} == {"adv": 1.0, "cyc": 1.0, "aux": 0.125, "idt": 1.5}
    assert total.item() == pytest.approx(5 * 1.0 + 10 * 1.0 + 1 * 1.5 + 10 * 0.125)
    total, parts = losses.cyclecr_generator_loss(**common, pred=ones, target=zeros, weights={"adv": 0.0})
    assert "idt" not in parts and parts["l1"].item() == 1.0
    assert total.item() == pytest.approx(10 * 1.0 + 10 * 0.125 + 10 * 1.0)
    with pytest.raises(ValueError, match="weights"):
        losses.cyclecr_generator_loss(**common, weights={"gan": 1.0})
    with pytest.raises(ValueError, match="s1_idt"):
        losses.cyclecr_generator_loss(**common, s1_idt=zeros)


def test_cyclecr_nan_cloud_map():
    s1, s2 = rand(1, 3, 4, 4, seed=17) * 2 - 1, rand(1, 3, 4, 4, seed=18) * 2 - 1
    rec1, rec2 = rand(1, 3, 4, 4, seed=19) * 2 - 1, rand(1, 3, 4, 4, seed=20) * 2 - 1
    m = rand(1, 1, 4, 4, seed=21)
    m_nan = m.clone()
    m_nan[..., 0, :] = float("nan")
    got = losses.cycle_loss(s1, rec1, s2, rec2, m_nan)
    want = losses.cycle_loss(s1[..., 1:, :], rec1[..., 1:, :], s2[..., 1:, :], rec2[..., 1:, :], m[..., 1:, :])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert losses.aux_loss(m_nan, m).item() == pytest.approx(0.0)


# --- gradients, shapes, precision --------------------------------------------------------------------------------


def _all_losses(pred: torch.Tensor, target: torch.Tensor, cloudy: torch.Tensor, mask: torch.Tensor) -> dict:
    m = mask[:, None]
    return {
        "l1": losses.l1(pred, target),
        "carl": losses.carl(pred, target, cloudy, mask),
        "carf": losses.carf_loss(pred, target, mask),
        "carf_mse": losses.carf_loss(pred, target, mask, use_mse=True),
        "pix2pix": losses.pix2pix_generator_loss(pred[:, :1].mean((2, 3)), pred, target)[0],
        "cycle": losses.cycle_loss(target, pred, cloudy, pred, m),
        "identity": losses.identity_loss(target, pred, cloudy, pred, m),
        "aux": losses.aux_loss(m, pred[:, :1]),
    }


def test_gradients_flow():
    target, cloudy = rand(2, 3, 12, 12, seed=22), rand(2, 3, 12, 12, seed=23)
    mask = rand(2, 12, 12, seed=24)
    for name, _ in _all_losses(target, target, cloudy, mask).items():
        pred = rand(2, 3, 12, 12, seed=25).requires_grad_()
        loss = _all_losses(pred, target, cloudy, mask)[name]
        assert loss.ndim == 0 and loss.dtype == torch.float32, name
        loss.backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0, name


def test_bfloat16_and_autocast_agree_with_float32():
    target, cloudy, pred = rand(2, 3, 16, 16, seed=26), rand(2, 3, 16, 16, seed=27), rand(2, 3, 16, 16, seed=28)
    mask = rand(2, 16, 16, seed=29)
    ref = _all_losses(pred, target, cloudy, mask)
    half = [x.bfloat16() for x in (pred, target, cloudy, mask)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _all_losses(*half)
    for name, value in got.items():
        assert value.dtype == torch.float32, name
        assert value.item() == pytest.approx(ref[name].item(), rel=2e-2, abs=1e-3), name


def test_bad_shapes_raise_naming_the_variable():
    a = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="target"):
        losses.l1(a, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        losses.carl(a, a, a, torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="pred"):
        losses.carf_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="m"):
        losses.cycle_loss(a, a, a, a, torch.zeros(1, 3, 4, 4))


# --- VGG16 perceptual / style ------------------------------------------------------------------------------------

_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128)}  # VGG16.features up to relu2_2 (index 8)


@pytest.fixture(scope="module")
def small_vgg(tmp_path_factory) -> tuple[str, dict]:
    g = torch.Generator().manual_seed(30)
    state = {}
    for i, (cin, cout) in _CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    state["classifier.6.weight"] = torch.zeros(2, 2)  # other keys of a torchvision file are ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16_part.safetensors"
    save_file(state, str(path))
    return str(path), state


def _reference_vgg(x: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """relu1_2 (features[3]) and relu2_2 (features[8]) written out with functional ops."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((x + 1) / 2 - mean) / std

    def conv(v, i):
        return F.relu(F.conv2d(v, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))

    a = conv(conv(x, 0), 2)
    b = conv(conv(F.max_pool2d(a, 2), 5), 7)
    return a, b


def _gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return torch.einsum("nci,ndi->ncd", f, f) / (c * h * w)


def test_perceptual_loss_matches_functional_vgg(small_vgg):
    path, state = small_vgg
    loss_fn = losses.PerceptualLoss(path, layers=(3, 8), perceptual_weight=2.0, style_weight=5.0)
    pred, target = rand(2, 3, 16, 16, seed=31) * 2 - 1, rand(2, 3, 16, 16, seed=32) * 2 - 1
    fp, ft = _reference_vgg(pred, state), _reference_vgg(target, state)
    perceptual = sum((a - b).abs().mean() for a, b in zip(fp, ft, strict=True))
    style = sum((_gram(a) - _gram(b)).abs().mean() for a, b in zip(fp, ft, strict=True))
    terms = loss_fn.terms(pred, target)
    assert terms["perceptual"].item() == pytest.approx(perceptual.item(), rel=1e-4)
    assert terms["style"].item() == pytest.approx(style.item(), rel=1e-4)
    assert loss_fn(pred, target).item() == pytest.approx(2 * perceptual.item() + 5 * style.item(), rel=1e-4)
    assert loss_fn(pred, pred.clone()).item() == 0.0


def test_perceptual_loss_gradients_and_channels(small_vgg):
    path, _ = small_vgg
    loss_fn = losses.PerceptualLoss(path, layers=(3, 8))
    pred = (rand(1, 13, 16, 16, seed=33) * 2 - 1).requires_grad_()
    target = rand(1, 13, 16, 16, seed=34) * 2 - 1
    picked = losses.PerceptualLoss(path, layers=(3, 8), channels=(3, 2, 1))
    loss = picked(pred, target)
    assert loss.item() == pytest.approx(loss_fn(pred[:, [3, 2, 1]], target[:, [3, 2, 1]]).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[:, [3, 2, 1]].abs().sum() > 0
    assert (pred.grad[:, [0, 4]] == 0).all()
    assert all(p.grad is None and not p.requires_grad for p in picked.parameters())
    picked.train()
    assert not picked.features.training  # frozen VGG stays in eval mode


def test_perceptual_loss_default_layers_and_errors(small_vgg, tmp_path):
    path, _ = small_vgg
    with pytest.raises(ValueError, match="missing keys"):
        losses.PerceptualLoss(path)  # the small file stops at layer 8; defaults need 11, 20, 29
    with pytest.raises(ValueError, match="layers"):
        losses.PerceptualLoss(path, layers=(31,))
    with pytest.raises(ValueError, match="weights_path"):
        losses.PerceptualLoss(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="pred"):
        losses.PerceptualLoss(path, layers=(3,))(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8))
    # all 13 convolutions of VGG16.features, random weights: the default layers relu3_1, relu4_2, relu5_3
    g = torch.Generator().manual_seed(35)
    full, cin, i = {}, 3, 0
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            i += 1
            continue
        full[f"features.{i}.weight"] = torch.randn(item, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        full[f"features.{i}.bias"] = torch.zeros(item)
        cin, i = item, i + 2
    save_file(full, str(tmp_path / "vgg16.safetensors"))
    loss_fn = losses.PerceptualLoss(tmp_path / "vgg16.safetensors", style_weight=0.0)
    a, b = rand(1, 3, 32, 32, seed=36) * 2 - 1, rand(1, 3, 32, 32, seed=37) * 2 - 1
    assert loss_fn(a, b).item() > 0 and loss_fn(a, a.clone()).item() == 0.0
    bad = dict(full)
    bad["features.28.weight"] = torch.zeros(512, 512, 1, 1)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"features\.28\.weight of shape"):
        losses.PerceptualLoss(tmp_path / "bad.safetensors", layers=(29,))


def test_perceptual_loss_on_a_conv_layer_sees_pre_activation(small_vgg):
    path, state = small_vgg
    pred, target = rand(1, 3, 8, 8, seed=38) * 2 - 1, rand(1, 3, 8, 8, seed=39) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def conv2(x):  # features[2], before the ReLU that follows it
        x = F.relu(
            F.conv2d(((x + 1) / 2 - mean) / std, state["features.0.weight"], state["features.0.bias"], padding=1)
        )
        return F.conv2d(x, state["features.2.weight"], state["features.2.bias"], padding=1)

    got = losses.PerceptualLoss(path, layers=(2, 3), style_weight=0.0)(pred, target)
    a, b = conv2(pred), conv2(target)
    want = (a - b).abs().mean() + (F.relu(a) - F.relu(b)).abs().mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
