"""One device and precision rule for inference and training (xcloudfree.inference.runtime), checked on the CPU.

CUDA is simulated with monkeypatched ``torch.cuda`` queries where a test needs it: nothing here touches a GPU. The
trainer's side is in test_training.py.
"""

import pytest
import torch

from xcloudfree.inference.runtime import amp_dtype, autocast, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch claims a GPU (bf16 support set by the test through the returned dict)."""
    support = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: support["bf16"])
    return support


def test_device_without_cuda(no_cuda):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"^device: expected an available device, found '{device}' but CUDA"):
            resolve_device(device)
    with pytest.raises(ValueError, match=r"^config.device: expected an available device"):
        resolve_device("cuda", name="config.device")
    with pytest.raises(ValueError, match=r"^device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'gpu'"):
        resolve_device("gpu")


def test_device_with_cuda(fake_cuda):
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"


def test_precision_rules(fake_cuda):
    assert amp_dtype("cuda", "auto") is torch.bfloat16
    fake_cuda["bf16"] = False
    assert amp_dtype(torch.device("cuda:0"), "auto") is torch.float16  # older GPUs
    assert amp_dtype("cpu", "auto") is None  # float32 on the CPU, whatever the GPU
    assert amp_dtype("cuda", "float32") is None
    assert amp_dtype("cpu", "bfloat16") is torch.bfloat16 and amp_dtype("cuda", "float16") is torch.float16
    with pytest.raises(ValueError, match=r"^precision: expected one of .*found 'fp8'"):
        amp_dtype("cpu", "fp8")


def test_autocast_is_a_no_op_in_float32():
    layer = torch.nn.Linear(4, 4)
    with autocast("cpu", None):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
