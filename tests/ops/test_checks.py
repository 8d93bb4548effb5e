"""The op layer's argument checking (kpfast/ops/_checks.py, reached through the public ops):
no host-device sync, bounded allocations and loops, errors naming the argument."""

import numpy as np
import pytest
import torch

from kpfast import vocabulary
from kpfast.ops import decode_heatmaps, find_peaks, heatmap_loss, render_heatmaps, soft_argmax

from .harness import kernel_backends_and_torch

SYNCING_METHODS = ("__bool__", "item", "tolist", "__float__", "__int__", "__index__", "numpy")


def _every_op(device, backend, sigma):
    keypoints = torch.rand(2, 3, 2, device=device) * 6
    weights = torch.ones(2, 3, device=device)
    pred = torch.rand(2, 3, 8, 6, device=device)
    for encoding in vocabulary.ENCODINGS:
        render_heatmaps(keypoints, weights, size=(8, 6), sigma=sigma, encoding=encoding, backend=backend)
    for kind in vocabulary.LOSS_KINDS:
        for reduction in ("mean", "none"):
            heatmap_loss(pred, keypoints, weights, sigma=sigma, kind=kind, reduction=reduction, backend=backend)
    for method in vocabulary.DECODE_METHODS:
        decode_heatmaps(pred, method, backend=backend)
    soft_argmax(pred, backend=backend)
    find_peaks(pred, backend=backend)


def test_ops_never_read_device_values_on_the_host():
    """Meta tensors stand for a GPU whose values the host cannot see without a sync: any
    bool()/item() on them raises. Every op (argument checks and the torch reference) runs on
    them, tensor sigma included: its check once synchronised every call
    (docs/ops-arguments-and-precision.md, "No host-device synchronisation")."""
    sigma = torch.full((3,), 2.0, device="meta")
    _every_op("meta", "torch", sigma)


def test_cpu_kernel_path_makes_no_syncing_call(monkeypatch):
    """On CPU, count the calls that would synchronise a GPU (Tensor.__bool__, .item(), ...) made
    while the ops check their arguments and run the cpu kernels: none with a float sigma."""
    calls = []
    for method in SYNCING_METHODS:
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original, _method=method, **kwargs):
            calls.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counting)
    _every_op("cpu", "cpu", 2.0)
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("backend", ["torch", "cuda", pytest.param("triton", marks=pytest.mark.triton)])
def test_gpu_ops_make_no_host_sync(backend):
    sigma = torch.full((3,), 2.0, device="cuda")
    _every_op("cuda", backend, sigma)  # warm up: first-use copies and compilation happen once
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _every_op("cuda", backend, sigma)
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def test_invalid_tensor_sigma_is_rejected_on_cpu():
    with pytest.raises(ValueError, match=r"sigma: expected finite values > 0, got -1.0"):
        render_heatmaps(torch.zeros(1, 2, 2), sigma=torch.tensor([2.0, -1.0]), size=(4, 4), backend="torch")


@pytest.mark.parametrize("size", [(10**6, 10**6), (2**15 + 1, 1), (1, 0)])
def test_size_is_bounded_before_allocating(size):
    with pytest.raises(ValueError, match=r"size: expected 1 <= H <= 32768 and 1 <= W <= 32768"):
        render_heatmaps(torch.zeros(1, 1, 2), size=size, backend="cpu")


def test_output_elements_are_bounded_before_allocating():
    with pytest.raises(ValueError, match=r"size: expected an output of at most 2147483647 elements, got shape "
                                         r"\(4096, 17, 32768, 32768\)"):
        render_heatmaps(torch.zeros(4096, 17, 2), size=(2**15, 2**15), backend="cpu")
    with pytest.raises(ValueError, match=r"max_peaks: expected an output of at most 2147483647 elements"):
        find_peaks(torch.zeros(2, 3, 4, 4), max_peaks=10**9, backend="cpu")


def test_loss_weights_must_be_a_tensor():
    """A numpy array is refused at the boundary with a TypeError naming the argument (it used to raise
    AttributeError from deep inside the op)."""
    pred = torch.zeros(1, 2, 8, 8)
    keypoints = torch.zeros(1, 2, 2)
    with pytest.raises(TypeError, match=r"weights: expected a torch.Tensor, got ndarray"):
        heatmap_loss(pred, keypoints, np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match=r"keypoints: expected a torch.Tensor, got list"):
        heatmap_loss(pred, [[[0.0, 0.0]]])


@pytest.mark.parametrize("backend", kernel_backends_and_torch())
def test_local_mean_window_beyond_the_map_is_the_whole_map(backend):
    """A window >= 2^31 once gave NaN on cpu (int overflow) and 1e9+1 took 48 s; a window of
    2 max(H, W) - 1 already covers the map from any argmax, so larger ones are clamped to it
    (docs/ops-arguments-and-precision.md)."""
    name, device = backend
    maps = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(0)).to(device)
    whole, whole_scores = decode_heatmaps(maps, "local_mean", window=15, backend=name)
    for window in (17, 10**9 + 1, 2**31 + 1, 2**63 - 1):
        coords, scores = decode_heatmaps(maps, "local_mean", window=window, backend=name)
        torch.testing.assert_close(coords, whole, rtol=0, atol=0)
        torch.testing.assert_close(scores, whole_scores, rtol=0, atol=0)
    # And the whole map really is what it computes: the centroid of the positive values.
    values = maps[0, 0].cpu().double().clamp_min(0)
    cols, rows = torch.arange(6, dtype=torch.float64), torch.arange(8, dtype=torch.float64)
    expected = torch.stack([(values.sum(0) * cols).sum(), (values.sum(1) * rows).sum()]) / values.sum()
    torch.testing.assert_close(whole[0, 0].cpu().double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", kernel_backends_and_torch())
def test_min_distance_beyond_the_map_is_the_whole_map(backend):
    name, device = backend
    maps = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(1)).to(device)
    whole = find_peaks(maps, 0.0, min_distance=7, max_peaks=3, backend=name)
    huge = find_peaks(maps, 0.0, min_distance=2**40, max_peaks=3, backend=name)
    for got, expected in zip(huge, whole):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert whole[2][..., 0].all() and not whole[2][..., 1:].any()  # one peak per map: its maximum
