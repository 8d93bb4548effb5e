"""render_heatmaps: every kernel backend against the torch reference, the published encodings,
edge cases, argument errors, opcheck and torch.compile."""

import math

import numpy as np
import pytest
import torch

from kpfast.ops import adaptive_sigma, render_heatmaps

from .harness import (H, TOLERANCE, W, RecordOps, assert_close_across_kernels, edge_case_keypoints,
                      kernel_backends_and_torch, sigma_forms)

ENCODINGS = ("msra", "udp", "dark")


def _grads(heatmaps, inputs, probe):
    if not heatmaps.requires_grad:  # the reference's msra maps with a float sigma are constants
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad((heatmaps.float() * probe).sum(), inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("sigma_form", ["float", "per_keypoint", "per_sample"])
@pytest.mark.parametrize("instances", [None, 3])
def test_backend_matches_reference(kernel_backend, encoding, sigma_form, instances):
    backend, device = kernel_backend
    keypoints, weights = edge_case_keypoints(instances=instances, device=device)
    sigma = sigma_forms(keypoints.shape[0], keypoints.shape[-2], device)[sigma_form]
    results = {}
    for name in ("torch", backend):
        kp = keypoints.clone().requires_grad_(True)
        s = sigma.clone().requires_grad_(True) if isinstance(sigma, torch.Tensor) else sigma
        heatmaps, weights_out = render_heatmaps(kp, weights, size=(H, W), sigma=s, encoding=encoding, backend=name)
        probe = torch.randn(heatmaps.shape, generator=torch.Generator().manual_seed(2)).to(device)
        inputs = [kp] + ([s] if isinstance(s, torch.Tensor) else [])
        results[name] = (heatmaps, weights_out, _grads(heatmaps, inputs, probe))
    ref, out = results["torch"], results[backend]
    assert ref[0].abs().max() > 0.9, "the test must render visible Gaussians"
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=TOLERANCE["render"][torch.float32])
    torch.testing.assert_close(out[1], ref[1], rtol=0, atol=0)
    for got, expected in zip(out[2], ref[2]):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=TOLERANCE["render_grad"], atol=TOLERANCE["render_grad"] / 10)
    if encoding == "msra":
        assert torch.count_nonzero(out[2][0]) == 0, "msra centres are rounded: no coordinate gradient"
    else:
        assert torch.count_nonzero(out[2][0]) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_output_has_float32_gradients(kernel_backend, dtype):
    """The half maps' values are compared with the reference in test_common.py::test_half_precision;
    here: the gradient through a half-precision map is computed in float32 by the kernel."""
    backend, device = kernel_backend
    keypoints, weights = edge_case_keypoints(device=device)
    kp = keypoints.clone().requires_grad_(True)
    out, _ = render_heatmaps(kp, weights, size=(H, W), backend=backend, dtype=dtype, encoding="udp")
    assert out.dtype == dtype
    out.float().sum().backward()
    assert kp.grad.dtype == torch.float32
    assert torch.isfinite(kp.grad).all() and kp.grad.abs().sum() > 0


def test_gradcheck_float64(kernel_backend):
    backend, device = kernel_backend
    if backend == "triton":
        pytest.skip("triton computes in float32; its gradients are checked against the reference instead")
    keypoints = torch.tensor([[[4.3, 5.2], [0.4, 11.8], [9.7, 2.1]]], dtype=torch.float64, device=device)
    keypoints = torch.stack([keypoints[0], keypoints[0].flip(0) + 0.13]).unsqueeze(0)  # (1, N=2, K=3, 2)
    # Away from 3 sigma = integer, where the window radius (and so the map) jumps.
    sigma = torch.tensor([1.45, 2.1, 1.2], dtype=torch.float64, device=device)
    for encoding in ("udp", "dark", "msra"):
        def fn(kp, s):
            return render_heatmaps(kp, None, size=(H, W), sigma=s, encoding=encoding, backend=backend,
                                   dtype=torch.float64)[0]
        assert torch.autograd.gradcheck(fn, (keypoints.clone().requires_grad_(), sigma.clone().requires_grad_()),
                                        eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [(16, 24), (5, 1032), (70, 8), (9, 1)])
@pytest.mark.parametrize("instances", [1, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_tilings_and_instance_chunks_match_reference(kernel_backend, size, instances, dtype):
    """The CUDA forward's paths: 16-byte stores (W a multiple of 4 fp32 / 8 bf16 / 2 fp64) or one
    pixel per store (W = 1), several column tiles (W > 1024), several row tiles, and N above the
    instances whose factors one pass keeps in shared memory (32: later chunks max-merge into the
    stored pixels). Every backend runs them against the reference."""
    backend, device = kernel_backend
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("triton computes in float32")
    height, width = size
    generator = torch.Generator().manual_seed(5)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    scale = torch.tensor([width + 4.0, height + 4.0], dtype=compute)
    keypoints = (torch.rand(2, instances, 3, 2, generator=generator, dtype=compute) * scale - 2.0).to(device)
    weights = (torch.rand(2, instances, 3, generator=generator) > 0.2).to(compute).to(device)
    sigma = (torch.rand(3, generator=generator, dtype=compute) * 1.5 + 0.8).to(device)
    expected, expected_w = render_heatmaps(keypoints, weights, size=size, sigma=sigma, encoding="udp",
                                           backend="torch", dtype=dtype)
    got, got_w = render_heatmaps(keypoints, weights, size=size, sigma=sigma, encoding="udp", backend=backend,
                                 dtype=dtype)
    assert expected.float().max() > 0.5
    atol = {torch.float32: TOLERANCE["render"][torch.float32], torch.bfloat16: TOLERANCE["render"][torch.bfloat16],
            torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    torch.testing.assert_close(got_w, expected_w, rtol=0, atol=0)


def _published_msra_udp(keypoints, visible, sigma, height, width, udp):
    """The HRNet/MMPose definitions, written independently with numpy loops over one window:
    rounded centre, a (6 sigma + 1)^2 window, weight 0 when the window misses the map."""
    radius = int(3 * sigma)
    size = 2 * radius + 1
    x = np.arange(0, size, dtype=np.float64)
    y = x[:, None]
    heatmaps = np.zeros((len(keypoints), height, width))
    weights = np.array(visible, dtype=np.float64)
    for k, (kx, ky) in enumerate(keypoints):
        if visible[k] < 0.5:
            continue
        mu = [int(math.floor(kx + 0.5)), int(math.floor(ky + 0.5))]
        ul = [mu[0] - radius, mu[1] - radius]
        br = [mu[0] + radius + 1, mu[1] + radius + 1]
        if ul[0] >= width or ul[1] >= height or br[0] <= 0 or br[1] <= 0:
            weights[k] = 0
            continue
        x0 = y0 = size // 2
        if udp:
            x0, y0 = x0 + kx - mu[0], y0 + ky - mu[1]
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        gx = max(0, -ul[0]), min(br[0], width) - ul[0]
        gy = max(0, -ul[1]), min(br[1], height) - ul[1]
        hx = max(0, ul[0]), min(br[0], width)
        hy = max(0, ul[1]), min(br[1], height)
        heatmaps[k, hy[0]:hy[1], hx[0]:hx[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return heatmaps, weights


@pytest.mark.parametrize("encoding", ["msra", "udp"])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_published_encodings(encoding, sigma):
    keypoints = [(5.2, 7.7), (0.0, 0.0), (-6.4, 3.0), (-7.4, 3.0), (30.6, 40.1), (10.49, 12.51), (16.0, -6.0)]
    visible = [1, 1, 1, 1, 1, 0, 1]
    expected, expected_w = _published_msra_udp(keypoints, visible, sigma, 48, 36, udp=encoding == "udp")
    kp = torch.tensor([keypoints], dtype=torch.float64)
    for backend in ("torch", "cpu"):
        heatmaps, weights = render_heatmaps(kp, torch.tensor([visible], dtype=torch.float64), size=(48, 36),
                                            sigma=sigma, encoding=encoding, backend=backend, dtype=torch.float64)
        np.testing.assert_allclose(heatmaps[0].numpy(), expected, atol=1e-12)
        np.testing.assert_array_equal(weights[0].numpy(), expected_w)
    if encoding == "msra":
        assert heatmaps[0, 0].max() == 1.0, "msra peaks at exactly 1"


def test_dark_is_untruncated_and_exact():
    kp = torch.tensor([[[20.3, 30.6]]], dtype=torch.float64)
    heatmaps, _ = render_heatmaps(kp, size=(64, 48), sigma=2.0, encoding="dark", backend="cpu", dtype=torch.float64)
    rows, cols = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(48.0, dtype=torch.float64), indexing="ij")
    expected = torch.exp(-((cols - 20.3) ** 2 + (rows - 30.6) ** 2) / 8.0)
    torch.testing.assert_close(heatmaps[0, 0], expected, rtol=0, atol=1e-15)
    assert heatmaps[0, 0, 0, 0] > 0, "dark covers the whole map"


def test_ignored_keypoints_have_zero_maps_weights_and_gradients(kernel_backend):
    backend, device = kernel_backend
    kp = torch.tensor([[[float("nan"), 3.0], [4.0, float("inf")], [5.0, 5.0], [-40.0, 5.0]]], device=device)
    kp.requires_grad_(True)
    weights = torch.tensor([[1.0, 1.0, 0.2, 1.0]], device=device)
    heatmaps, weights_out = render_heatmaps(kp, weights, size=(H, W), backend=backend, encoding="dark")
    assert torch.count_nonzero(heatmaps) == 0
    assert torch.count_nonzero(weights_out) == 0
    heatmaps.sum().backward()
    assert torch.equal(kp.grad, torch.zeros_like(kp))


@pytest.mark.parametrize("shape", [(0, 17, 2), (4, 0, 2), (0, 2, 17, 2), (2, 0, 17, 2)])
def test_empty_batches(kernel_backend, shape):
    backend, device = kernel_backend
    kp = torch.zeros(shape, device=device, requires_grad=True)
    heatmaps, weights_out = render_heatmaps(kp, size=(H, W), backend=backend)
    assert heatmaps.shape == (shape[0], shape[-2], H, W)
    assert weights_out.shape == shape[:-1]
    heatmaps.sum().backward()
    assert kp.grad.shape == kp.shape


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(sigma=0.0), ValueError, "sigma: expected a finite value > 0, got 0.0"),
        (dict(sigma=-1.0), ValueError, "sigma: expected a finite value > 0"),
        (dict(sigma=torch.tensor([1.0, 0.0, 2.0])), ValueError, "sigma: expected finite values > 0, got 0.0"),
        (dict(sigma=torch.ones(4)), ValueError, r"sigma: expected shape \(3,\)"),
        (dict(sigma=torch.ones(5, 3)), ValueError, r"sigma: expected shape \(2, 3\)"),
        (dict(sigma="2"), TypeError, "sigma: expected a float or a tensor"),
        (dict(size=(64,)), TypeError, r"size: expected \(H, W\)"),
        (dict(size=(0, 4)), ValueError, r"size: expected 1 <= H <= 32768 and 1 <= W <= 32768, got \(0, 4\)"),
        (dict(encoding="gaussian"), ValueError, "encoding: expected one of"),
        (dict(dtype=torch.int32), TypeError, "dtype: expected one of"),
        (dict(weights=torch.ones(2, 4)), ValueError, r"weights: expected shape \(2, 3\)"),
        (dict(backend="gpu"), ValueError, "backend: expected one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    keypoints = torch.rand(2, 3, 2) * 10
    with pytest.raises(error, match=message):
        render_heatmaps(keypoints, **kwargs)


def test_bad_keypoints_are_named():
    with pytest.raises(ValueError, match=r"keypoints: expected the last dimension to be 2"):
        render_heatmaps(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"keypoints: expected a 3-D or 4-D tensor, got shape \(3, 2\)"):
        render_heatmaps(torch.zeros(3, 2))
    with pytest.raises(TypeError, match=r"keypoints: expected dtype .* got torch.int64"):
        render_heatmaps(torch.zeros(2, 3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"keypoints: expected a torch.Tensor, got list"):
        render_heatmaps([[1.0, 2.0]])


def _opcheck_samples(device):
    """The schema's argument forms: (B, K) sigma and weights; no weights and a float sigma (None,
    sigma_value); a (K,) sigma expanded to (B, K) (stride_b 0), as kpfast.ops passes them."""
    keypoints, weights = edge_case_keypoints(instances=2, device=device)
    keypoints = torch.nan_to_num(keypoints, nan=3.0, posinf=4.0, neginf=-4.0)  # opcheck compares finite grads
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[2]
    sigma = torch.full((batch, num_keypoints), 1.5, device=device)
    per_keypoint = torch.linspace(1.2, 2.1, num_keypoints, device=device)
    for encoding in ENCODINGS:
        yield (keypoints.clone().requires_grad_(True), weights, sigma.clone().requires_grad_(True), 1.0, H, W,
               encoding, torch.float32)
        yield (keypoints.clone().requires_grad_(True), None, None, 1.7, H, W, encoding, torch.float32)
        expanded = per_keypoint.clone().requires_grad_(True).expand(batch, num_keypoints)
        assert expanded.stride(0) == 0
        yield (keypoints.clone().requires_grad_(True), weights, expanded, 1.0, H, W, encoding, torch.float32)


def _ops(backend):
    if backend == "triton":
        return torch.ops.kpfast_triton.render_heatmaps, torch.ops.kpfast_triton.render_heatmaps_backward
    return torch.ops.kpfast.render_heatmaps, torch.ops.kpfast._render_heatmaps_backward


def test_opcheck(kernel_backend):
    backend, device = kernel_backend
    if backend == "triton":
        render_heatmaps(torch.zeros(1, 1, 2, device=device), backend="triton")  # loads the kpfast_triton ops
    op, backward = _ops(backend)
    for args in _opcheck_samples(device):
        torch.library.opcheck(op, args)
        grad = torch.rand(args[0].shape[0], args[0].shape[2], H, W, device=device)
        sigma = args[2].detach() if args[2] is not None else None
        torch.library.opcheck(backward, (grad, args[0].detach(), args[1], sigma, args[3], args[6]))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_optional_and_strided_arguments_match_materialised_ones(kernel_backend, encoding):
    """The kernels read absent weights as 1, a float sigma as sigma_value and a strided sigma
    through its strides: the same maps and gradients as the materialised, contiguous tensors."""
    backend, device = kernel_backend
    op, backward = _ops(backend)
    if backend == "triton":
        render_heatmaps(torch.zeros(1, 1, 2, device=device), backend="triton")
    keypoints, _ = edge_case_keypoints(instances=2, device=device)
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[2]
    ones = torch.ones(keypoints.shape[:-1], device=device)
    per_keypoint = torch.linspace(1.2, 2.1, num_keypoints, device=device)
    transposed = torch.rand(num_keypoints, batch, device=device).add(1.0).t()  # (B, K), stride_b 1
    grad = torch.rand(batch, num_keypoints, H, W, device=device)
    forms = [
        ((None, None, 1.7), (ones, torch.full((batch, num_keypoints), 1.7, device=device), 1.0)),
        ((None, per_keypoint.expand(batch, num_keypoints), 1.0),
         (ones, per_keypoint.expand(batch, num_keypoints).contiguous(), 1.0)),
        ((ones, transposed, 1.0), (ones, transposed.contiguous(), 1.0)),
    ]
    for (weights, sigma, value), (weights_m, sigma_m, value_m) in forms:
        got = op(keypoints, weights, sigma, value, H, W, encoding, torch.float32)
        expected = op(keypoints, weights_m, sigma_m, value_m, H, W, encoding, torch.float32)
        assert expected[0].max() > 0.9
        # HAS_WEIGHTS / HAS_SIGMA and the strides select different compiled kernels
        assert_close_across_kernels(got[0], expected[0], "maps")
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0)  # the weights, copied
        got_grads = backward(grad, keypoints, weights, sigma, value, encoding)
        expected_grads = backward(grad, keypoints, weights_m, sigma_m, value_m, encoding)
        assert got_grads[1].shape == (batch, num_keypoints) and got_grads[1].is_contiguous()
        assert_close_across_kernels(got_grads[0], expected_grads[0], "keypoint gradient")
        assert_close_across_kernels(got_grads[1], expected_grads[1], "sigma gradient")


_VIEW_OPS = {torch.ops.aten.unsqueeze.default, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.default,
             torch.ops.aten.expand.default, torch.ops.aten.view.default, torch.ops.aten.alias.default}
# The value check of a tensor sigma on CPU (finite and > 0, kpfast/ops/_checks.py; skipped on GPU,
# where it would synchronise): these ops read the caller's sigma, never a (B, K) materialisation.
_CPU_SIGMA_CHECK_OPS = {torch.ops.aten.abs.default, torch.ops.aten.ne.Scalar, torch.ops.aten.eq.Tensor,
                        torch.ops.aten.mul.Tensor, torch.ops.aten.gt.Scalar, torch.ops.aten.bitwise_and.Tensor,
                        torch.ops.aten.bitwise_not.default, torch.ops.aten.any.default,
                        torch.ops.aten._local_scalar_dense.default, torch.ops.aten.isfinite.default}


@pytest.mark.parametrize("form", ["float_sigma_no_weights", "float_sigma_weights", "per_keypoint_sigma",
                                  "per_keypoint_sigma_grad"])
def test_one_launch_per_call(kernel_backend, form):
    """One launch per call (docs/design.md, Performance): a render call runs the kernel op and views
    only: no torch.ones for absent weights, no torch.full for a float sigma, no copy of a (K,) sigma
    expanded to (B, K)."""
    backend, device = kernel_backend
    keypoints = (torch.rand(4, 17, 2) * 10).to(device)
    num_keypoints = keypoints.shape[1]
    kwargs = {"float_sigma_no_weights": dict(sigma=2.0),
              "float_sigma_weights": dict(sigma=2.0, weights=torch.ones(4, 17, device=device)),
              "per_keypoint_sigma": dict(sigma=torch.full((17,), 2.0, device=device)),
              "per_keypoint_sigma_grad": dict(sigma=torch.full((17,), 2.0, device=device, requires_grad=True)),
              }[form]
    render_heatmaps(keypoints, size=(8, 6), backend=backend, **kwargs)  # first use loads the backend's ops
    with RecordOps() as recorded:
        heatmaps, _ = render_heatmaps(keypoints, size=(8, 6), backend=backend, **kwargs)
    kernel = torch.ops.kpfast_triton.render_heatmaps.default if backend == "triton" else \
        torch.ops.kpfast.render_heatmaps.default
    assert [func for func, _ in recorded.calls].count(kernel) == 1
    allowed = _VIEW_OPS | {kernel}
    if isinstance(kwargs["sigma"], torch.Tensor) and device.type == "cpu":
        allowed |= _CPU_SIGMA_CHECK_OPS
    for func, tensors in recorded.calls:
        assert func in allowed, f"{func} ran beside the kernel ({[str(f) for f, _ in recorded.calls]})"
        if func in _CPU_SIGMA_CHECK_OPS - _VIEW_OPS:
            assert all(t.numel() <= num_keypoints for t in tensors), f"{func} on a materialised sigma"
    if form == "per_keypoint_sigma_grad":  # the gradient reaches the (K,) sigma through the expanded view
        heatmaps.sum().backward()
        assert kwargs["sigma"].grad.shape == (num_keypoints,) and kwargs["sigma"].grad.abs().sum() > 0


@pytest.mark.parametrize("upstream", ["expanded", "transposed"])
def test_backward_reads_the_upstream_with_its_strides(kernel_backend, upstream):
    """heatmaps.sum()'s upstream is expanded (strides 0) and a user's may be any view;
    the backward op reads it in place (no map-sized copy, one launch) and matches the reference."""
    backend, device = kernel_backend
    keypoints = (torch.rand(3, 2, 4, 2, generator=torch.Generator().manual_seed(5)) * 7).to(device)
    size = (9, 7)
    if upstream == "expanded":
        grad_maps = torch.tensor(0.5, device=device).expand(3, 4, *size)
    else:
        grad_maps = torch.randn(3, 4, size[1], size[0], generator=torch.Generator().manual_seed(6)).to(
            device).transpose(2, 3)
    assert not grad_maps.is_contiguous()
    grads = {}
    for name in ("torch", backend):
        leaf = keypoints.clone().requires_grad_(True)
        sigma = torch.full((4,), 1.7, device=device, requires_grad=True)
        heatmaps, _ = render_heatmaps(leaf, size=size, sigma=sigma, encoding="udp", backend=name)
        with RecordOps() as recorded:
            grads[name] = torch.autograd.grad(heatmaps, (leaf, sigma), grad_maps)
    for got, expected in zip(grads[backend], grads["torch"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert grads[backend][0].abs().sum() > 0 and grads[backend][1].abs().sum() > 0
    kernel = "kpfast_triton.render_heatmaps_backward.default" if backend == "triton" else \
        "kpfast._render_heatmaps_backward.default"
    names = recorded.names
    assert names.count(kernel) == 1, names
    for func, tensors in recorded.calls:  # nothing map-sized besides the kernel's own input
        if str(func) != kernel:
            assert all(t.numel() < grad_maps.numel() or t.data_ptr() == grad_maps.data_ptr() for t in tensors), \
                (str(func), names)
    assert not [n for n in names if any(word in n for word in ("copy", "clone", "contiguous"))], names


def test_torch_compile_fullgraph(kernel_backend):
    backend, device = kernel_backend
    keypoints, weights = edge_case_keypoints(device=device)

    def step(kp, s):
        heatmaps, weights_out = render_heatmaps(kp, weights, size=(H, W), sigma=s, encoding="udp", backend=backend)
        return (heatmaps.sum(dim=(2, 3)) * weights_out).sum()

    # Inductor for the compiled extension; aot_eager keeps the interpreted Triton run short.
    compiled = torch.compile(step, fullgraph=True, backend="inductor" if backend != "triton" else "aot_eager")
    sigma = torch.full((keypoints.shape[1],), 2.0, device=device)
    kp1, s1 = keypoints.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
    kp2, s2 = keypoints.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
    expected = step(kp1, s1)
    got = compiled(kp2, s2)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(kp2.grad, kp1.grad)
    torch.testing.assert_close(s2.grad, s1.grad)


def test_adaptive_sigma():
    assert adaptive_sigma((64, 48), 2.0) == pytest.approx(2.0)
    assert adaptive_sigma((96, 72), 2.0) == pytest.approx(3.0)
    assert adaptive_sigma((32, 24), 3.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="base_sigma: expected a finite value > 0, got 0.0"):
        adaptive_sigma((64, 48), 0)
    with pytest.raises(TypeError, match=r"size: expected \(H, W\)"):
        adaptive_sigma(64, 2.0)


@pytest.mark.parametrize("backend", kernel_backends_and_torch())
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_huge_finite_coordinate_has_zero_gradient(backend, encoding):
    """x = 3e38 is finite but its window is off the map; the reference used to overflow
    (x - col)^2 to inf and gave a NaN gradient where the kernels give 0."""
    name, device = backend
    keypoints = torch.tensor([[[3e38, 2.0], [4.0, -3e38], [3.2, 4.1]]], device=device, requires_grad=True)
    sigma = torch.full((3,), 2.0, device=device, requires_grad=True)
    heatmaps, weights = render_heatmaps(keypoints, size=(8, 6), sigma=sigma, encoding=encoding, backend=name)
    heatmaps.sum().backward()
    assert weights[0, :2].eq(0).all() and heatmaps[0, :2].eq(0).all()
    keypoint_grad = torch.zeros_like(keypoints) if keypoints.grad is None else keypoints.grad  # msra: none
    assert torch.isfinite(keypoint_grad).all() and keypoint_grad[0, :2].eq(0).all()
    assert torch.isfinite(sigma.grad).all() and sigma.grad[:2].eq(0).all()
