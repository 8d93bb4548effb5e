"""Generic tests every op plugs into through tests/ops/harness.py's OpCase: each kernel backend
against the torch reference (values and gradients) on the shared edge-case inputs, half
precision, empty batches, non-contiguous inputs, torch.compile(fullgraph=True).
Each op's own behaviour (published algorithms, semantics, opcheck) is tested in its own file."""

import pytest
import torch

from .harness import OP_CASES, TOLERANCE, RenderCase, backend_params

CASES = [pytest.param(case, id=case.name) for case in OP_CASES]


def _outputs_and_grads(case, backend, tensors):
    tensors = [t.detach().clone().requires_grad_(i in case.grad_inputs and t.is_floating_point())
               for i, t in enumerate(tensors)]
    outputs = case.call(backend, *tensors)
    grads = []
    differentiable = [tensors[i] for i in case.grad_inputs]
    if differentiable:
        probe = [torch.linspace(-1, 1, o.numel(), device=o.device).reshape(o.shape) for o in outputs[:1]]
        objective = sum((o.float() * p).sum() for o, p in zip(outputs[:1], probe) if o.requires_grad)
        if isinstance(objective, torch.Tensor):
            grads = torch.autograd.grad(objective, differentiable, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, differentiable)]
    return [o.detach() for o in outputs], grads


def _tolerances(case, dtype, count):
    """One tolerance per output."""
    tol = case.tolerance(dtype)
    return list(tol) if isinstance(tol, (tuple, list)) else [tol] * count


def _assert_close(got, expected, tols, what, absolute=False):
    if not isinstance(tols, (list, tuple)):
        tols = [tols] * len(expected)
    assert len(got) == len(expected), what
    for g, e, tol in zip(got, expected, tols):
        assert g.dtype == e.dtype and g.shape == e.shape, \
            f"{what}: {g.dtype} {tuple(g.shape)} vs {e.dtype} {tuple(e.shape)}"
        if g.dtype == torch.bool:
            assert torch.equal(g.cpu(), e.cpu()), what
            continue
        g, e = g.cpu().float(), e.cpu().float()
        assert torch.equal(torch.isnan(g), torch.isnan(e)), f"{what}: NaN pattern"
        finite = torch.isfinite(e)
        scale = float(e[finite].abs().max()) if finite.any() else 0.0
        atol = tol if absolute else tol * max(scale, 1.0)
        torch.testing.assert_close(g[finite], e[finite], rtol=0, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend_device", backend_params())
def test_parity_with_reference(case, backend_device):
    backend, device = backend_device
    tensors = case.inputs(device, torch.float32, batch=5)  # decode: smooth, noisy and edge-case maps
    got, got_grads = _outputs_and_grads(case, backend, tensors)
    expected, expected_grads = _outputs_and_grads(case, "torch", [t.cpu() for t in tensors])
    _assert_close(got, expected, _tolerances(case, torch.float32, len(expected)), f"{case} values",
                  case.absolute_tolerance)
    if case.grad_inputs:
        _assert_close(got_grads, expected_grads, case.grad_tolerance(), f"{case} gradients")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend_device", backend_params())
def test_half_precision(case, dtype, backend_device):
    """Half inputs (predictions/maps; render: the output dtype) match the reference on the same inputs."""
    backend, device = backend_device
    if isinstance(case, RenderCase):  # half output maps from float32 keypoints
        keypoints, sigma, weights = case.inputs(device, torch.float32, batch=3)
        got = case.call(backend, keypoints, sigma, weights, dtype=dtype)
        expected = case.call("torch", keypoints.cpu(), sigma.cpu(), weights.cpu(), dtype=dtype)
        assert got[0].dtype == dtype
    else:
        tensors = case.inputs(device, dtype, batch=3)
        got, got_grads = _outputs_and_grads(case, backend, tensors)
        expected, expected_grads = _outputs_and_grads(case, "torch", [t.cpu() for t in tensors])
        grad_tol = case.half_grad_tolerance(dtype)
        if grad_tol is not None:
            assert all(g.dtype == dtype for g in got_grads), f"{case} {dtype}: gradient dtype"
            _assert_close(got_grads, expected_grads, grad_tol, f"{case} {dtype} gradients")
    if case.output_dtypes is not None:
        assert tuple(o.dtype for o in got) == case.output_dtypes, f"{case} {dtype}: output dtypes"
    _assert_close(got, expected, _tolerances(case, dtype, len(expected)), f"{case} {dtype}",
                  case.absolute_tolerance)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend_device", backend_params(include_torch=True))
def test_empty_batch(case, backend_device):
    backend, device = backend_device
    tensors = [t.detach().clone().requires_grad_(i in case.grad_inputs)
               for i, t in enumerate(case.inputs(device, torch.float32, batch=0))]
    outputs = case.call(backend, *tensors)
    for output in outputs:
        assert output.shape[0] == 0 or output.dim() == 0, f"{case}: {tuple(output.shape)}"
    if case.grad_inputs:  # the backward of an empty batch runs and gives gradients of the inputs' shapes
        outputs[0].float().sum().backward()
        grads = [tensors[i].grad for i in case.grad_inputs]
        # None where the output does not depend on an input (the reference's msra keypoints: rounded).
        assert any(g is not None for g in grads), f"{case}: no gradient"
        for i, grad in zip(case.grad_inputs, grads):
            assert grad is None or grad.shape == tensors[i].shape, f"{case}: gradient {i}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend_device", backend_params())
def test_non_contiguous_inputs(case, backend_device):
    backend, device = backend_device
    tensors = case.inputs(device, torch.float32, batch=3)
    strided = [t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t for t in tensors]
    assert any(not t.is_contiguous() for t in strided)
    got, got_grads = _outputs_and_grads(case, backend, strided)
    expected, expected_grads = _outputs_and_grads(case, backend, tensors)
    _assert_close(got, expected, 0.0, f"{case} strided")
    _assert_close(got_grads, expected_grads, 0.0, f"{case} strided gradients")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend_device", backend_params())
def test_torch_compile_fullgraph(case, backend_device):
    backend, device = backend_device
    torch.compiler.reset()
    tensors = case.inputs(device, torch.float32, batch=3)
    expected = case.call(backend, *tensors)
    compiled = torch.compile(lambda *t: case.call(backend, *t), fullgraph=True, backend="aot_eager")
    got = compiled(*tensors)
    _assert_close([o.detach() for o in got], [o.detach() for o in expected], TOLERANCE["compiled"], f"{case} compiled")
