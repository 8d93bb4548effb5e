"""Every vectorised path with the inputs that break its assumptions: a view offset by one element
(data_ptr not 16-byte aligned: the launcher and the CUDA kernels must fall back to scalar
accesses), a non-contiguous view (rows not adjacent), and expanded upstream gradients (stride 0),
for the loss (pred), render backward (grad_heatmaps), decode, soft-argmax and find_peaks, in
float32, bfloat16 and float16. Each is compared with the same backend on a fresh contiguous copy
(another compiled kernel: TOLERANCE["kernel_variants"], one ulp of a half output)."""

import pytest
import torch

from kpfast import vocabulary
from kpfast.ops import decode_heatmaps, find_peaks, heatmap_loss, render_heatmaps, soft_argmax

from .harness import TOLERANCE, edge_case_keypoints

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LAYOUTS = ["offset", "strided"]
SIZE = (12, 16)  # rows of 16 elements: 16-byte vectors in every dtype when aligned


def _layout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """``tensor``'s values in ``layout``: "offset" (a contiguous view one element into its storage),
    "strided" (every row one element longer in memory: non-contiguous)."""
    if layout == "offset":
        storage = torch.zeros(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
        view = storage[1:].view(tensor.shape)
    else:
        wider = torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1, dtype=tensor.dtype, device=tensor.device)
        view = wider[..., : tensor.shape[-1]]
        assert not view.is_contiguous()
    view.copy_(tensor)
    return view


def _tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE["kernel_variants"] if dtype == torch.float32 else TOLERANCE["render"][dtype]


def _assert_close(got, expected, dtype, what):
    scale = float(expected.float().abs().max()) if expected.numel() else 0.0
    tol = _tolerance(dtype)
    torch.testing.assert_close(got.float(), expected.float(), rtol=tol, atol=tol * max(scale, 1e-30),
                               msg=lambda m: f"{what}: {m}")


def _maps(device, dtype, seed=0):
    maps = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed)) * 3
    return maps.to(device=device, dtype=dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_loss_pred(kernel_backend, dtype, layout):
    backend, device = kernel_backend
    keypoints, weights = edge_case_keypoints(batch=2, instances=2, num_keypoints=3, device=device, height=SIZE[0],
                                             width=SIZE[1])
    pred = _maps(device, dtype) / 3
    results = []
    for x in (_layout(pred, layout), pred.clone()):
        leaf = x.detach().requires_grad_(True)
        loss = heatmap_loss(leaf, keypoints, weights, sigma=1.5, kind="focal", backend=backend)  # mean: expanded
        loss.backward()
        assert leaf.grad.dtype == dtype
        results.append((loss.detach(), leaf.grad))
    _assert_close(results[0][0], results[1][0], torch.float32, "loss")
    _assert_close(results[0][1], results[1][1], dtype, "gradient")
    assert results[1][1].abs().sum() > 0


@pytest.mark.parametrize("layout", LAYOUTS + ["expanded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_render_backward_grad_heatmaps(kernel_backend, dtype, layout):
    backend, device = kernel_backend
    keypoints, weights = edge_case_keypoints(batch=2, instances=2, num_keypoints=3, device=device, height=SIZE[0],
                                             width=SIZE[1])
    probe = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(4)).to(device=device, dtype=dtype)
    upstream = {"expanded": torch.ones((), device=device, dtype=dtype).expand(probe.shape)}.get(layout)
    if upstream is None:
        upstream = _layout(probe, layout)
    grads = []
    for grad in (upstream, upstream.contiguous().clone()):
        leaf = keypoints.clone().requires_grad_(True)
        sigma = torch.full((3,), 1.6, device=device, requires_grad=True)
        maps, _ = render_heatmaps(leaf, weights, size=SIZE, sigma=sigma, encoding="udp", dtype=dtype,
                                  backend=backend)
        grads.append(torch.autograd.grad(maps, (leaf, sigma), grad_outputs=grad))
    for got, expected, what in zip(grads[0], grads[1], ("keypoints", "sigma")):
        _assert_close(got, expected, torch.float32, what)  # float32 sums of the same half upstream
    assert grads[1][1].abs().sum() > 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decoders_and_peaks(kernel_backend, dtype, layout):
    backend, device = kernel_backend
    maps = _maps(device, dtype, seed=1)
    view = _layout(maps, layout)
    for method in vocabulary.DECODE_METHODS:
        got, expected = decode_heatmaps(view, method, backend=backend), decode_heatmaps(maps, method, backend=backend)
        _assert_close(got[0], expected[0], torch.float32, f"{method} coords")
        assert torch.equal(got[1], expected[1]), method  # scores: copied map values
    got, expected = find_peaks(view, 0.5, 1, 5, backend=backend), find_peaks(maps, 0.5, 1, 5, backend=backend)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_soft_argmax_maps_and_expanded_upstream(kernel_backend, dtype, layout):
    backend, device = kernel_backend
    maps = _maps(device, dtype, seed=2)
    results = []
    for x in (_layout(maps, layout), maps.clone()):
        leaf = x.detach().requires_grad_(True)
        coords, scores = soft_argmax(leaf, beta=2.0, backend=backend)
        coords.sum().backward()  # the upstream: ones expanded to (B, K, 2)
        results.append((coords.detach(), scores, leaf.grad))
    _assert_close(results[0][0], results[1][0], torch.float32, "coords")
    assert torch.equal(results[0][1], results[1][1])
    _assert_close(results[0][2], results[1][2], dtype, "gradient")
