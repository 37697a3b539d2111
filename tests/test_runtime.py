"""One device and precision rule for inference and training (xcloudfree.inference.runtime), checked on the CPU.

CUDA is simulated with monkeypatched ``torch.cuda`` queries where a test needs it; the batch pipeline's CUDA path
(pinned double buffers, upload and download streams) runs where a GPU is present and its CPU path everywhere. The
trainer's side is in test_training.py.
"""

import numpy as np
import pytest
import torch

import xcloudfree as xcf
from xcloudfree.inference.runtime import amp_dtype, autocast, get_runner, resolve_device, resolve_model


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


def _batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 15, 32, 32)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runner_map_streams_batches_in_order(device):
    if device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: expected an available device, found 'cuda'"):
            resolve_model(xcf.models.create("dsen2cr", features=4, blocks=1), device=device)
        return
    torch.manual_seed(0)
    net = xcf.models.create("dsen2cr", features=8, blocks=2)
    ref, _ = resolve_model(net, device=device, precision="float32")
    runner = get_runner(ref)
    batches = _batches([4, 4, 3, 1, 4])  # a short batch between full ones reuses the pinned buffers' front
    with torch.inference_mode():
        expected = [runner.module(torch.from_numpy(b).to(device)).float().cpu().numpy() for b in batches]
    streamed = list(runner.map(iter(batches)))
    assert [y.shape for y in streamed] == [(len(b), 13, 32, 32) for b in batches]
    for got, want in zip(streamed, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # each output is the caller's own: a later batch does not overwrite an earlier one's memory
    assert not any(np.shares_memory(a, b) for a, b in zip(streamed, streamed[1:], strict=False))
    # no overlap (one batch in flight) gives the same bits as the pipeline
    runner.in_flight = 1
    try:
        serial = list(runner.map(batches))
    finally:
        del runner.in_flight
    for a, b in zip(serial, streamed, strict=True):
        np.testing.assert_array_equal(a, b)
    # a stream abandoned half-way hands the device back to the next one
    partial = runner.map(iter(batches))
    next(partial)
    partial.close()
    assert runner.lock.acquire(timeout=5)
    runner.lock.release()
    np.testing.assert_array_equal(next(runner.map(batches[:1])), streamed[0])


def test_prefetched_keeps_order_raises_in_order_and_stops_when_abandoned():
    import threading

    from xcloudfree.inference.runtime import _prefetched

    before = threading.active_count()
    assert list(_prefetched(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("batch 2")

    stream = _prefetched(failing(), 2)
    assert next(stream) == 1
    with pytest.raises(KeyError, match="batch 2"):
        next(stream)
    endless = _prefetched(iter(range(10**9)), 2)
    assert next(endless) == 0
    endless.close()  # the helper thread stops instead of making the rest
    assert threading.active_count() == before


def test_release_freed_memory_fixes_glibc_threshold_where_there_is_glibc():
    import platform

    from xcloudfree.parallel import release_freed_memory

    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
