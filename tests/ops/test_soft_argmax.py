"""soft_argmax: every kernel backend against the reference (forward and the fused backward),
gradcheck, the definition on hand-made maps, empty batches, argument errors, opcheck, torch.compile.
Half precision and non-contiguous maps: tests/ops/test_common.py (SoftArgmaxCase)."""

import pytest
import torch

from kpfast.ops import soft_argmax

from .harness import RecordOps, gaussian_maps, special_maps

H, W = 11, 13


def _maps(device, dtype=torch.float32):
    maps = torch.cat([gaussian_maps(2, 3, H, W, seed=0, noise=0.1), special_maps(H, W)[:, :3].expand(2, 3, H, W)],
                     dim=1)
    return (maps * 4.0).to(device=device, dtype=dtype)


def _forward_backward(maps, beta, backend, probe):
    leaf = maps.clone().requires_grad_(True)
    coords, scores = soft_argmax(leaf, beta=beta, backend=backend)
    (coords * probe).sum().backward()
    return coords, scores, leaf.grad


def test_non_finite_pixels_follow_the_documented_rule(kernel_backend):
    """design.md: -inf pixels weigh 0; a NaN or +inf pixel makes the map's coords and score NaN,
    on every backend as in the reference."""
    backend, device = kernel_backend
    maps = torch.rand(4, 1, 6, 5, generator=torch.Generator().manual_seed(3))
    maps[0, 0, 2, 3] = float("inf")
    maps[1, 0, 1, 1] = float("nan")
    maps[2, 0, 4, 0] = float("-inf")
    maps[3, 0, 2, 2] = 1e37
    expected = soft_argmax(maps, beta=5.0, backend="torch")
    coords, scores = soft_argmax(maps.to(device), beta=5.0, backend=backend)
    assert torch.isnan(expected[1][:2]).all() and torch.isnan(expected[0][:2]).all()
    torch.testing.assert_close(coords.cpu(), expected[0], rtol=0, atol=1e-4, equal_nan=True)
    torch.testing.assert_close(scores.cpu(), expected[1], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("beta", [1.0, 0.3, 25.0])
def test_backend_matches_reference(kernel_backend, beta):
    backend, device = kernel_backend
    maps = _maps(device)
    probe = torch.randn(maps.shape[0], maps.shape[1], 2, generator=torch.Generator().manual_seed(1)).to(device)
    ref = _forward_backward(maps, beta, "torch", probe)
    out = _forward_backward(maps, beta, backend, probe)
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(out[1], ref[1], rtol=0, atol=0)
    # p = exp(beta h - lse) carries the float32 rounding of beta h: tolerance grows with beta.
    torch.testing.assert_close(out[2], ref[2], rtol=1e-4, atol=1e-5 * max(1.0, beta))
    assert out[2].abs().sum() > 0


@pytest.mark.parametrize("upstream", ["expanded", "transposed"])
def test_backward_reads_the_upstream_with_its_strides(kernel_backend, upstream):
    """coords.sum()'s upstream is an expanded scalar (strides 0) and a user's may be any
    view; the backward op reads either in place (no copy, one launch) and matches the reference."""
    backend, device = kernel_backend
    maps = _maps(device)
    batch, num_keypoints = maps.shape[:2]
    if upstream == "expanded":
        grad_coords = torch.tensor(0.5, device=device).expand(batch, num_keypoints, 2)
    else:
        grad_coords = torch.randn(num_keypoints, batch, 2, generator=torch.Generator().manual_seed(2)).to(
            device).transpose(0, 1)
    assert not grad_coords.is_contiguous()
    grads = {}
    for name in ("torch", backend):
        leaf = maps.clone().requires_grad_(True)
        coords, _ = soft_argmax(leaf, beta=2.0, backend=name)
        with RecordOps() as recorded:
            (grads[name],) = torch.autograd.grad(coords, leaf, grad_coords)
    torch.testing.assert_close(grads[backend], grads["torch"], rtol=1e-4, atol=1e-5)
    kernel = "kpfast_triton.soft_argmax_backward.default" if backend == "triton" else \
        "kpfast._soft_argmax_backward.default"
    names = recorded.names
    assert names.count(kernel) == 1, names
    copies = [n for n in names if any(word in n for word in ("copy", "clone", "contiguous", "empty_like"))]
    assert not copies, names


def test_definition_on_hand_made_maps():
    maps = torch.full((1, 2, 3, 4), -1e4)
    maps[0, 0, 1, 2] = 0.0                      # one hot: exactly the pixel
    maps[0, 1] = 0.0                            # uniform: the map centre
    coords, scores = soft_argmax(maps, backend="torch")
    torch.testing.assert_close(coords[0], torch.tensor([[2.0, 1.0], [1.5, 1.0]]))
    assert scores[0].tolist() == [0.0, 0.0]
    two = torch.zeros(1, 1, 1, 3)
    two[..., 0], two[..., 2] = 0.0, torch.log(torch.tensor(3.0))  # p = (1, 1, 3) / 5
    assert soft_argmax(two, backend="torch")[0][0, 0, 0].item() == pytest.approx((1 + 6) / 5)


def test_gradcheck_float64(kernel_backend):
    backend, device = kernel_backend
    if backend == "triton":
        pytest.skip("triton computes in float32; its gradients are compared with the reference instead")
    maps = gaussian_maps(1, 2, 5, 6, seed=3, noise=0.3).double().to(device).requires_grad_(True)
    for beta in (1.0, 3.0):
        def fn(m):
            return soft_argmax(m, beta=beta, backend=backend)[0]

        assert torch.autograd.gradcheck(fn, (maps,), eps=1e-6, atol=1e-7)
    coords, scores = soft_argmax(maps, backend=backend)
    assert coords.dtype == torch.float64 and scores.dtype == torch.float64
    assert not scores.requires_grad


def test_empty_batches_and_keypoints_backpropagate(kernel_backend):
    backend, device = kernel_backend
    for shape in [(0, 4, H, W), (2, 0, H, W)]:
        empty = torch.zeros(shape, device=device, requires_grad=True)
        coords, scores = soft_argmax(empty, backend=backend)
        assert coords.shape == shape[:2] + (2,) and scores.shape == shape[:2]
        coords.sum().backward()
        assert empty.grad.shape == empty.shape


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(beta=0.0), ValueError, "beta: expected a finite value > 0, got 0.0"),
        (dict(beta=float("inf")), ValueError, "beta: expected a finite value > 0"),
        (dict(beta=torch.tensor(1.0)), TypeError, "beta: expected a float, got Tensor"),
        (dict(backend="fast"), ValueError, "backend: expected one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        soft_argmax(torch.rand(1, 2, H, W), **kwargs)




def test_opcheck(kernel_backend):
    backend, device = kernel_backend
    ns = torch.ops.kpfast_triton if backend == "triton" else torch.ops.kpfast
    maps = _maps(device)
    torch.library.opcheck(ns.soft_argmax, (maps.clone().requires_grad_(True), 1.5))
    coords, _, lse = ns.soft_argmax(maps, 1.5)
    backward = ns.soft_argmax_backward if backend == "triton" else ns._soft_argmax_backward
    torch.library.opcheck(backward, (torch.rand_like(coords), maps, coords, lse, 1.5))


def test_torch_compile_fullgraph(kernel_backend):
    backend, device = kernel_backend
    maps = _maps(device)
    target = torch.rand(maps.shape[0], maps.shape[1], 2, device=device) * 5

    def loss(m):
        coords, _ = soft_argmax(m, beta=2.0, backend=backend)
        return ((coords - target) ** 2).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="inductor" if backend != "triton" else "aot_eager")
    m1, m2 = maps.clone().requires_grad_(True), maps.clone().requires_grad_(True)
    expected, got = loss(m1), compiled(m2)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(m2.grad, m1.grad)
