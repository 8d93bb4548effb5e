"""Every op at the sizes where Triton's launcher turns an integer argument into the constant 1:
maps of 1x1, one row and one column, K = 1, one instance, one image (and so strides of 1).

A Triton kernel compiled for a GPU sees these as Python ints, not tensors (a `.to()` on one fails
to compile); the interpreter does not, so on CPU these tests check the values against the
reference, and on a GPU they are the first launch of each such specialisation. The AOT gate
(tools/triton_aot.py --quick) compiles the same specialisations without a GPU."""

import pytest
import torch

from kpfast import vocabulary
from kpfast.ops import decode_heatmaps, find_peaks, heatmap_loss, render_heatmaps, soft_argmax

from .harness import TOLERANCE

SIZES = [(1, 1), (1, 7), (7, 1), (5, 6)]
# (batch, instances, keypoints): one of each, then one keypoint of several instances and images
COUNTS = [(1, 1, 1), (2, 2, 1), (1, 1, 3)]


def _keypoints(size, counts, device):
    batch, instances, num_keypoints = counts
    generator = torch.Generator().manual_seed(sum(size) + 7 * sum(counts))
    height, width = size
    xy = torch.rand(batch, instances, num_keypoints, 2, generator=generator) * torch.tensor([width, height])
    xy = xy - 0.4  # some centres before the first pixel, one side of each map
    weights = torch.ones(batch, instances, num_keypoints)
    return xy.to(device), weights.to(device)


def _maps(size, counts, device):
    batch, _, num_keypoints = counts
    generator = torch.Generator().manual_seed(3 + sum(size))
    return (torch.rand(batch, num_keypoints, *size, generator=generator) * 4).to(device)


@pytest.mark.parametrize("counts", COUNTS, ids=lambda c: "B{}N{}K{}".format(*c))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}".format(*s))
def test_render_and_its_gradient(kernel_backend, size, counts):
    backend, device = kernel_backend
    keypoints, weights = _keypoints(size, counts, device)
    sigma = torch.full((counts[2],), 1.3, device=device, requires_grad=True)
    results = {}
    for name in (backend, "torch"):
        leaf = keypoints.clone().requires_grad_(True)
        sigma_leaf = sigma.detach().clone().requires_grad_(True)
        maps, _ = render_heatmaps(leaf, weights, size=size, sigma=sigma_leaf, encoding="udp", backend=name)
        probe = torch.linspace(-1, 1, maps.numel(), device=device).reshape(maps.shape)
        (maps * probe).sum().backward()
        results[name] = (maps.detach(), leaf.grad, sigma_leaf.grad)
    for got, expected in zip(results[backend], results["torch"]):
        torch.testing.assert_close(got.cpu(), expected.cpu(), rtol=TOLERANCE["render_grad"], atol=1e-5)
    assert results["torch"][0].abs().sum() > 0


@pytest.mark.parametrize("kind", ["mse", "focal"])
@pytest.mark.parametrize("counts", COUNTS, ids=lambda c: "B{}N{}K{}".format(*c))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}".format(*s))
def test_loss_and_its_gradient(kernel_backend, size, counts, kind):
    backend, device = kernel_backend
    keypoints, weights = _keypoints(size, counts, device)
    pred = _maps(size, counts, device) / 4
    results = {}
    for name in (backend, "torch"):
        leaf = pred.clone().requires_grad_(True)
        loss = heatmap_loss(leaf, keypoints, weights, sigma=1.3, kind=kind, backend=name)
        loss.backward()
        results[name] = (loss.detach(), leaf.grad)
    torch.testing.assert_close(results[backend][0].cpu(), results["torch"][0].cpu(), rtol=TOLERANCE["loss"],
                               atol=1e-7)
    torch.testing.assert_close(results[backend][1].cpu(), results["torch"][1].cpu(),
                               rtol=TOLERANCE["loss_grad"][torch.float32], atol=1e-7)


@pytest.mark.parametrize("counts", COUNTS[::2], ids=lambda c: "B{}N{}K{}".format(*c))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}".format(*s))
def test_decoders(kernel_backend, size, counts):
    backend, device = kernel_backend
    maps = _maps(size, counts, device)
    for method in vocabulary.DECODE_METHODS:
        got = decode_heatmaps(maps, method, backend=backend)
        expected = decode_heatmaps(maps.cpu(), method, backend="torch")
        # UDP on a single row (column): its Hessian is eps along the flat axis, so its step there
        # is float rounding divided by eps (tests/ops/test_decode.py, degenerate shapes)
        atol = 1e-2 if method == "udp" and min(size) == 1 else TOLERANCE["decode"]
        torch.testing.assert_close(got[0].cpu(), expected[0], rtol=0, atol=atol, msg=method)
        torch.testing.assert_close(got[1].cpu(), expected[1], rtol=0, atol=0, msg=method)
    peaks = find_peaks(maps, threshold=0.5, min_distance=1, max_peaks=3, backend=backend)
    expected = find_peaks(maps.cpu(), threshold=0.5, min_distance=1, max_peaks=3, backend="torch")
    for got, want in zip(peaks, expected):
        assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("counts", COUNTS[::2], ids=lambda c: "B{}N{}K{}".format(*c))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}".format(*s))
def test_soft_argmax_and_its_gradient(kernel_backend, size, counts):
    backend, device = kernel_backend
    maps = _maps(size, counts, device)
    results = {}
    for name in (backend, "torch"):
        leaf = maps.clone().requires_grad_(True)
        coords, scores = soft_argmax(leaf, beta=2.0, backend=name)
        (coords * torch.tensor([1.0, -2.0], device=device)).sum().backward()
        results[name] = (coords.detach(), scores.detach(), leaf.grad)
    torch.testing.assert_close(results[backend][0], results["torch"][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(results[backend][1], results["torch"][1], rtol=0, atol=0)
    torch.testing.assert_close(results[backend][2], results["torch"][2], rtol=1e-4, atol=1e-5)
