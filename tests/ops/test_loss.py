"""heatmap_loss: every kernel backend against the torch reference (values and gradients), the
published focal/CenterNet formulas written independently, normalisation, stability, edge cases,
argument errors, opcheck, torch.compile and the no-temporaries memory claim.
Half-precision predictions (values, gradients, dtypes): tests/ops/test_common.py (LossCase)."""

import functools
import importlib
import re

import pytest
import torch
import torch.nn.functional as F

import kpfast
from kpfast import vocabulary
from kpfast.ops import heatmap_loss, render_heatmaps

from .harness import TOLERANCE, RecordOps, assert_close_across_kernels, edge_case_keypoints, predictions, sigma_forms

KINDS = vocabulary.LOSS_KINDS  # every kind: a new one gets these tests (docs/extending.md)
ENCODINGS = vocabulary.ENCODINGS
# float32: loss values to 1e-5 relative, gradients to 1e-4 relative (half-precision predictions:
# test_common.py::test_half_precision with TOLERANCE["loss_grad"][dtype] for the gradients).
LOSS_RTOL, GRAD_RTOL = TOLERANCE["loss"], TOLERANCE["loss_grad"][torch.float32]


# This file's maps are H x W = 11 x 13 (the hand-made keypoints below are placed for that size)
# and its edge-case batches hold 2 samples of 5 keypoints: the harness factories at that size.
H, W = 11, 13
keypoints_with_edge_cases = functools.partial(edge_case_keypoints, batch=2, num_keypoints=5, height=H, width=W)
make_pred = functools.partial(predictions, height=H, width=W)


def loss_and_grad(backend, pred, keypoints, weights, probe=None, **kwargs):
    """The loss (detached) and d(sum(loss * probe))/d pred."""
    x = pred.detach().clone().requires_grad_(True)
    loss = heatmap_loss(x, keypoints, weights, backend=backend, **kwargs)
    objective = loss if probe is None else (loss * probe).sum()
    (grad,) = torch.autograd.grad(objective, x)
    return loss.detach(), grad


def assert_close_rel(got, expected, rtol, what):
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * scale + 1e-12, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("instances", [None, 2])
def test_backend_matches_reference(kernel_backend, kind, encoding, instances):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(instances=instances, device=device)
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[-2]
    pred = make_pred(kind, batch, num_keypoints, device)
    probe = torch.rand(batch, num_keypoints, generator=torch.Generator().manual_seed(5)).to(device)
    kwargs = dict(sigma=1.6, encoding=encoding, kind=kind, reduction="none", l1_weight=0.1)
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, probe, **kwargs)
    loss, grad = loss_and_grad(backend, pred, keypoints, weights, probe, **kwargs)
    assert ref_loss.shape == (batch, num_keypoints)
    assert (ref_loss > 0).sum() >= 4, "the test must have maps that contribute"
    assert (ref_loss == 0).any(), "the test must have ignored maps"
    assert_close_rel(loss, ref_loss, LOSS_RTOL, "per-keypoint loss")
    assert grad.dtype == pred.dtype and grad.shape == pred.shape
    assert torch.isfinite(grad).all()
    assert_close_rel(grad, ref_grad, GRAD_RTOL, "gradient")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_match_reference(kernel_backend, kind, reduction):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device, seed=7)
    pred = make_pred(kind, *keypoints.shape[:2], device)
    # reduction="none" is backpropagated through its sum (the per-keypoint vjp has its own test).
    kwargs = dict(kind=kind, reduction=reduction, probe=torch.ones((), device=device) if reduction == "none" else None)
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, **kwargs)
    loss, grad = loss_and_grad(backend, pred, keypoints, weights, **kwargs)
    assert loss.dtype == torch.float32
    assert_close_rel(loss, ref_loss, LOSS_RTOL, "loss")
    assert_close_rel(grad, ref_grad, GRAD_RTOL, "gradient")


@pytest.mark.parametrize("sigma_form", ["float", "per_keypoint", "per_sample"])
def test_sigma_forms(kernel_backend, sigma_form):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device, seed=2)
    sigma = sigma_forms(keypoints.shape[0], keypoints.shape[1], device)[sigma_form]
    pred = make_pred("focal", *keypoints.shape[:2], device)
    kwargs = dict(sigma=sigma, kind="focal", reduction="sum")
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, **kwargs)
    loss, grad = loss_and_grad(backend, pred, keypoints, weights, **kwargs)
    assert_close_rel(loss, ref_loss, LOSS_RTOL, "loss")
    assert_close_rel(grad, ref_grad, GRAD_RTOL, "gradient")


@pytest.mark.parametrize("kind, exponents", [("focal", dict(gamma=1.5)), ("focal", dict(gamma=0.0)),
                                             ("cornernet", dict(alpha=1.5, beta=3.5))])
def test_general_exponents(kernel_backend, kind, exponents):
    """Exponents outside {0..4} take the CPU kernel's libm path; gamma 0 is plain weighted BCE."""
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device, seed=12)
    pred = make_pred(kind, *keypoints.shape[:2], device)
    kwargs = dict(kind=kind, reduction="sum", **exponents)
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, **kwargs)
    loss, grad = loss_and_grad(backend, pred, keypoints, weights, **kwargs)
    assert_close_rel(loss, ref_loss, LOSS_RTOL, "loss")
    assert_close_rel(grad, ref_grad, GRAD_RTOL, "gradient")


def test_non_contiguous_pred(kernel_backend):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device)
    pred = make_pred("focal", *keypoints.shape[:2], device)
    transposed = pred.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major maps
    wide = torch.zeros(pred.shape[0], pred.shape[1] * 2, H, W, device=device)
    wide[:, ::2] = pred
    strided = wide[:, ::2]  # every other channel
    assert not transposed.is_contiguous() and not strided.is_contiguous()
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, kind="focal")
    for view in (transposed, strided):
        x = view.detach().requires_grad_(True)
        loss = heatmap_loss(x, keypoints, weights, kind="focal", backend=backend)
        loss.backward()
        assert_close_rel(loss.detach(), ref_loss, LOSS_RTOL, "loss")
        assert_close_rel(x.grad, ref_grad, GRAD_RTOL, "gradient")


def _retinanet_sigmoid_focal_loss(logits, targets, alpha, gamma):
    """Lin et al. 2017, as in torchvision.ops.sigmoid_focal_loss, written independently."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * loss


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 1.0), (0.75, 3.0)])
def test_focal_with_hard_targets_is_retinanet(kernel_backend, alpha, gamma):
    backend, device = kernel_backend
    keypoints = torch.tensor([[[3.2, 4.9], [0.0, 10.0], [12.4, 0.3]], [[6.0, 6.0], [7.7, 2.2], [1.1, 8.8]]],
                             device=device)
    # msra with sigma < 1/3: radius 0, the target is exactly 1 at the rounded keypoint, 0 elsewhere.
    hard, _ = render_heatmaps(keypoints, size=(H, W), sigma=0.3, encoding="msra", backend="torch")
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    logits = make_pred("focal", 2, 3, device).requires_grad_(True)
    expected = _retinanet_sigmoid_focal_loss(logits, hard, alpha, gamma).sum()
    (expected_grad,) = torch.autograd.grad(expected, logits)
    got, grad = loss_and_grad(backend, logits, keypoints, None, sigma=0.3, encoding="msra", kind="focal",
                              alpha=alpha, gamma=gamma, keypoint_weight=1.0, background_weight=1.0, l1_weight=0.0,
                              reduction="sum")
    assert_close_rel(got, expected.detach(), LOSS_RTOL, "loss")
    assert_close_rel(grad, expected_grad, GRAD_RTOL, "gradient")


def _centernet_neg_loss(pred, gt):
    """CenterNet's _neg_loss (Zhou et al. 2019), written independently (without its clamp)."""
    pos_inds = gt.eq(1).float()
    neg_inds = gt.lt(1).float()
    neg_weights = torch.pow(1 - gt, 4)
    pos_loss = (torch.log(pred) * torch.pow(1 - pred, 2) * pos_inds).sum()
    neg_loss = (torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg_inds).sum()
    num_pos = pos_inds.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


@pytest.mark.parametrize("has_positives", [True, False])
def test_cornernet_is_centernet(kernel_backend, has_positives):
    backend, device = kernel_backend
    if has_positives:
        keypoints = torch.tensor([[[3.2, 4.9], [0.0, 10.0], [12.4, 0.3]], [[6.0, 6.0], [7.7, 2.2], [1.1, 8.8]]])
    else:  # visible keypoints whose windows meet the map, but whose nearest pixel lies off it
        keypoints = torch.tensor([[[-1.3, 4.9], [5.0, -0.9], [13.7, 2.0]], [[4.0, 11.6], [-2.0, -2.0], [6.0, 12.0]]])
    keypoints = keypoints.to(device)
    gt, weights_out = render_heatmaps(keypoints, size=(H, W), sigma=1.5, encoding="msra", backend="torch")
    assert bool((weights_out == 1).all()), "every keypoint must take part"
    assert bool((gt == 1).any()) == has_positives
    logits = (torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(9)) * 2).to(device).requires_grad_(True)
    expected = _centernet_neg_loss(torch.sigmoid(logits), gt)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    kwargs = dict(sigma=1.5, encoding="msra", kind="cornernet", keypoint_weight=1.0, background_weight=1.0)
    for reduction in ("mean", "sum"):  # both use CenterNet's batch normalisation
        got, grad = loss_and_grad(backend, logits, keypoints, None, reduction=reduction, **kwargs)
        assert_close_rel(got, expected.detach(), LOSS_RTOL, f"cornernet {reduction}")
        assert_close_rel(grad, expected_grad, GRAD_RTOL, f"cornernet {reduction} gradient")
    per_map, _ = loss_and_grad(backend, logits, keypoints, None, reduction="none",
                               probe=torch.ones((), device=device), **kwargs)
    for b in range(2):
        for k in range(3):
            expected_map = _centernet_neg_loss(torch.sigmoid(logits[b, k]).detach(), gt[b, k])
            torch.testing.assert_close(per_map[b, k], expected_map, rtol=LOSS_RTOL, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_extreme_logits_and_invisible_batches_stay_finite(kernel_backend, kind):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device, seed=11)
    values = torch.tensor([50.0, -50.0, 1000.0, -1000.0, 0.0, 88.0, -104.0])
    pred = values[torch.randint(len(values), (2, 5, H, W), generator=torch.Generator().manual_seed(0))].to(device)
    for reduction in ("mean", "sum", "none"):
        ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, kind=kind, reduction=reduction,
                                           probe=torch.ones((), device=device))
        loss, grad = loss_and_grad(backend, pred, keypoints, weights, kind=kind, reduction=reduction,
                                   probe=torch.ones((), device=device))
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert_close_rel(loss, ref_loss, LOSS_RTOL, "loss")
        assert_close_rel(grad, ref_grad, GRAD_RTOL, "gradient")
    invisible = torch.zeros_like(weights)
    for reduction in ("mean", "sum", "none"):
        loss, grad = loss_and_grad(backend, pred, keypoints, invisible, kind=kind, reduction=reduction,
                                   probe=torch.ones((), device=device))
        assert torch.count_nonzero(loss) == 0 and torch.count_nonzero(grad) == 0
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("shape", [(0, 5, 2), (3, 0, 2), (0, 2, 5, 2), (2, 2, 0, 2)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batches(kernel_backend, shape, reduction):
    backend, device = kernel_backend
    keypoints = torch.zeros(shape, device=device)
    pred = torch.zeros(shape[0], shape[-2], H, W, device=device, requires_grad=True)
    loss = heatmap_loss(pred, keypoints, reduction=reduction, backend=backend)
    if reduction == "none":
        assert loss.shape == (shape[0], shape[-2])
    else:
        assert loss.shape == () and float(loss.detach()) == 0.0
    loss.sum().backward()
    assert pred.grad.shape == pred.shape


def test_defaults_depend_on_kind():
    keypoints, weights = keypoints_with_edge_cases()
    pred = make_pred("focal", 2, 5, "cpu")
    # the published presets: RetinaNet's alpha 0.25 (+ 0.1 x L1), CenterNet's alpha 2
    assert (vocabulary.loss_kind("focal").default_alpha, vocabulary.loss_kind("focal").default_l1_weight) == (0.25, 0.1)
    assert vocabulary.loss_kind("cornernet").default_alpha == 2.0
    for traits in vocabulary.LOSS_KIND_TRAITS:  # every kind takes its defaults from its traits
        kind, alpha, l1 = traits.name, traits.default_alpha, traits.default_l1_weight
        explicit = heatmap_loss(pred, keypoints, weights, kind=kind, alpha=alpha, l1_weight=l1, backend="torch")
        default = heatmap_loss(pred, keypoints, weights, kind=kind, backend="torch")
        assert float(default) == float(explicit), kind
    with_l1 = heatmap_loss(pred, keypoints, weights, kind="focal", backend="torch")
    without = heatmap_loss(pred, keypoints, weights, kind="focal", l1_weight=0.0, backend="torch")
    assert float(with_l1) > float(without), "focal's default includes 0.1 x L1"


def test_pixel_weighting_and_keypoint_weights():
    """w = keypoint_weight where t > threshold else background_weight, times the keypoint weight."""
    keypoints = torch.tensor([[[5.0, 5.0]]])
    pred = torch.zeros(1, 1, H, W)
    target, _ = render_heatmaps(keypoints, size=(H, W), sigma=2.0, encoding="udp", backend="torch")
    per_pixel = (pred - target) ** 2
    expected = (torch.where(target > 0.1, 15.0, 1.0) * per_pixel).sum()
    for backend in ("torch", "cpu"):
        got = heatmap_loss(pred, keypoints, kind="mse", reduction="sum", backend=backend)
        torch.testing.assert_close(got, expected, rtol=LOSS_RTOL, atol=0)
        doubled = heatmap_loss(pred, keypoints, torch.tensor([[2.0]]), kind="mse", reduction="sum", backend=backend)
        torch.testing.assert_close(doubled, 2 * expected, rtol=LOSS_RTOL, atol=0)
        mean = heatmap_loss(pred, keypoints, kind="mse", reduction="mean", backend=backend)
        torch.testing.assert_close(mean, expected / (H * W), rtol=LOSS_RTOL, atol=0)


def test_not_differentiable_wrt_keypoints():
    keypoints = (torch.rand(2, 5, 2) * 8).requires_grad_(True)
    pred = make_pred("focal", 2, 5, "cpu").requires_grad_(True)
    heatmap_loss(pred, keypoints, backend="torch").backward()
    assert keypoints.grad is None and pred.grad is not None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(kind="l2"), ValueError, re.escape(f"kind: expected one of {vocabulary.LOSS_KINDS}, got 'l2'")),
        (dict(reduction="avg"), ValueError, "reduction: expected one of"),
        (dict(encoding="gauss"), ValueError, "encoding: expected one of"),
        (dict(alpha=1.5), ValueError, r"alpha: expected a finite value in \[0.0, 1.0\], got 1.5"),
        (dict(kind="cornernet", alpha=-1.0), ValueError, "alpha: expected a finite value >= 0.0, got -1.0"),
        (dict(gamma=-2.0), ValueError, "gamma: expected a finite value >= 0.0"),
        (dict(beta=float("nan")), ValueError, "beta: expected a finite value"),
        (dict(keypoint_weight=-1.0), ValueError, "keypoint_weight: expected a finite value >= 0.0"),
        (dict(background_weight="1"), TypeError, "background_weight: expected a float, got str"),
        (dict(threshold=float("inf")), ValueError, "threshold: expected a finite value"),
        (dict(l1_weight=-0.1), ValueError, "l1_weight: expected a finite value >= 0.0"),
        (dict(sigma=0.0), ValueError, "sigma: expected a finite value > 0"),
        (dict(sigma=torch.ones(4)), ValueError, r"sigma: expected shape \(5,\)"),
        (dict(weights=torch.ones(2, 4)), ValueError, r"weights: expected shape \(2, 5\)"),
        (dict(backend="gpu"), ValueError, "backend: expected one of"),
        (dict(fused_gradient="yes"), TypeError, "fused_gradient: expected a bool, got str"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    keypoints = torch.rand(2, 5, 2) * 8
    with pytest.raises(error, match=message):
        heatmap_loss(torch.zeros(2, 5, H, W), keypoints, **kwargs)


def test_bad_pred_is_named():
    keypoints = torch.rand(2, 5, 2) * 8
    with pytest.raises(ValueError,
                       match=r"pred: expected shape \(2, 5, H, W\) to match keypoints, got \(2, 4, 11, 13\)"):
        heatmap_loss(torch.zeros(2, 4, H, W), keypoints)
    with pytest.raises(ValueError, match=r"pred: expected a 4-D tensor, got shape \(5, 11, 13\)"):
        heatmap_loss(torch.zeros(5, H, W), keypoints)
    with pytest.raises(TypeError, match=r"pred: expected dtype .* got torch.int64"):
        heatmap_loss(torch.zeros(2, 5, H, W, dtype=torch.long), keypoints)
    with pytest.raises(TypeError, match=r"pred: expected a torch.Tensor, got list"):
        heatmap_loss([0.0], keypoints)
    with pytest.raises(TypeError, match=r"keypoints: expected a torch.Tensor, got list"):
        heatmap_loss(torch.zeros(2, 5, H, W), [[1.0, 2.0]])




def _named_sizes(recorded):
    return [(str(func), [t.numel() for t in tensors]) for func, tensors in recorded.calls]


# Views (no data moved) and the Python reduction of the per-map sums (kpfast.reference.reduce_map_losses).
_VIEW_OPS = {"aten.detach.default", "aten.unsqueeze.default", "aten.expand.default"}
_REDUCTION_OPS = {"aten.sum.default", "aten.div.Tensor", "aten.clamp.default"}
# What a materialised argument would show: a fill, a cast or a copy.
_MATERIALISING = ("full", "ones", "zeros", "fill", "copy", "clone", "_to_copy", "empty", "contiguous")


@pytest.mark.parametrize("kind", ["focal", "cornernet"])
@pytest.mark.parametrize("sigma_form", ["float", "per_keypoint"])
def test_one_launch_arguments(kernel_backend, kind, sigma_form):
    """A call with no weights and a float or (K,) sigma runs the kpfast op and the reduction only:
    no torch.ones for the weights, no torch.full / copy for the sigma (a (K,) sigma is expanded)."""
    backend, device = kernel_backend
    batch, num_keypoints = 2, 5
    keypoints = torch.rand(batch, num_keypoints, 2, generator=torch.Generator().manual_seed(4)).to(device) * 8
    sigma = 1.8 if sigma_form == "float" else torch.linspace(1.2, 2.4, num_keypoints, device=device)
    pred = make_pred(kind, batch, num_keypoints, device).requires_grad_(True)
    forward_name = "kpfast_triton.heatmap_loss.default" if backend == "triton" else "kpfast.heatmap_loss.default"
    heatmap_loss(pred, keypoints, sigma=sigma, kind=kind, backend=backend)  # first use loads the backend
    with RecordOps() as recorded:
        loss = heatmap_loss(pred, keypoints, sigma=sigma, kind=kind, backend=backend)
    names = recorded.names
    assert names.count(forward_name) == 1, names
    assert not [n for n in names if any(word in n for word in _MATERIALISING)], names
    for name, sizes in _named_sizes(recorded):
        if name == forward_name or name in _VIEW_OPS or name in _REDUCTION_OPS:
            continue
        # The one exception: the value check of a user's sigma (finite, > 0), which reads CPU tensors
        # only (never a GPU tensor: no host sync) and touches nothing larger than that (K,) tensor.
        assert device.type == "cpu" and sigma_form == "per_keypoint" and max(sizes, default=0) <= num_keypoints, \
            (name, sizes, names)
    expected = heatmap_loss(pred.detach(), keypoints, sigma=sigma, kind=kind, backend="torch")
    assert_close_rel(loss.detach(), expected, LOSS_RTOL, "loss")
    # Backward: one kernel writes the one map-sized buffer; every other op sees (B, K) or less.
    with RecordOps() as recorded:
        loss.backward()
    backward_name = ("kpfast_triton.heatmap_loss_backward.default" if backend == "triton"
                     else "kpfast._heatmap_loss_backward.default")
    names = recorded.names
    assert names.count(backward_name) == 1, names
    for name, sizes in _named_sizes(recorded):
        if name not in (backward_name, "aten.detach.default"):
            assert max(sizes, default=0) <= batch * num_keypoints, (name, sizes)


def test_fixed_exponent_policy():
    """The Triton launcher picks the compiled-product exponents exactly where csrc/kpfast/loss.h does."""
    pytest.importorskip("triton")
    from kpfast.triton.loss import fixed_exponents

    assert fixed_exponents("focal", 0.25, 2.0, 4.0) and not fixed_exponents("focal", 0.25, 2.5, 4.0)
    assert fixed_exponents("cornernet", 2.0, 2.0, 4.0)
    assert not fixed_exponents("cornernet", 3.0, 2.0, 4.0) and not fixed_exponents("cornernet", 2.0, 2.0, 5.0)
    assert fixed_exponents("mse", 0.0, 7.0, 9.0)


# Per-kind exponent cases: a kind with exponents needs its own (test_every_kind_with_exponents_has_cases).
EXPONENT_PATHS = [
    ("focal", dict(gamma=2.0)),                 # fixed: gamma^2 as products
    ("focal", dict(gamma=1.5)),                 # general, libm powers on the CPU
    ("focal", dict(gamma=2.5)),
    ("focal", dict(gamma=3.0)),                 # general, small-integer powers
    ("cornernet", dict(alpha=2.0, beta=4.0)),   # fixed
    ("cornernet", dict(alpha=3.0, beta=5.0)),   # general (libm)
    ("cornernet", dict(alpha=2.0, beta=3.0)),   # general (small integers), alpha alone is not enough
]


@pytest.mark.parametrize("kind, exponents", EXPONENT_PATHS)
def test_exponent_paths_match_reference(kernel_backend, kind, exponents):
    """Each exponent path (the fixed products and the general powers) against the reference, on
    maps with ignored keypoints, several instances and a strided per-keypoint sigma."""
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(instances=2, device=device, seed=21)
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[-2]
    pred = make_pred(kind, batch, num_keypoints, device, seed=8)
    probe = torch.rand(batch, num_keypoints, generator=torch.Generator().manual_seed(6)).to(device)
    sigma = torch.linspace(1.1, 2.3, num_keypoints, device=device)
    kwargs = dict(kind=kind, sigma=sigma, reduction="none", l1_weight=0.05, **exponents)
    ref_loss, ref_grad = loss_and_grad("torch", pred, keypoints, weights, probe, **kwargs)
    loss, grad = loss_and_grad(backend, pred, keypoints, weights, probe, **kwargs)
    assert (ref_loss > 0).sum() >= 4
    assert_close_rel(loss, ref_loss, LOSS_RTOL, f"{kind} {exponents} loss")
    assert_close_rel(grad, ref_grad, GRAD_RTOL, f"{kind} {exponents} gradient")


# The next float32 above 2 and 4 (the kernels take the exponents as float32).
_ABOVE_2, _ABOVE_4 = 2.0 + 2.0**-22, 4.0 + 2.0**-21


FIXED_AND_NEARBY = [
    ("focal", dict(gamma=2.0), dict(gamma=_ABOVE_2)),
    ("cornernet", dict(alpha=2.0, beta=4.0), dict(alpha=_ABOVE_2, beta=_ABOVE_4)),
]


def test_every_kind_with_exponents_has_cases():
    """A kind whose launches can take the general powers (kpfast.triton.loss.exponent_variants, from
    the fixed-exponent policy) has rows in both per-kind exponent tables above."""
    pytest.importorskip("triton")
    from kpfast.triton.loss import exponent_variants

    with_exponents = [kind for kind in KINDS if False in exponent_variants(kind)]
    assert "focal" in with_exponents and "mse" not in with_exponents  # the policy is read, not empty
    for name, table in (("EXPONENT_PATHS", EXPONENT_PATHS), ("FIXED_AND_NEARBY", FIXED_AND_NEARBY)):
        missing = [kind for kind in with_exponents if kind not in {row[0] for row in table}]
        assert not missing, f"tests/ops/test_loss.py {name}: no exponent cases for {missing}"


@pytest.mark.parametrize("kind, fixed, nearby", FIXED_AND_NEARBY)
def test_fixed_exponents_continue_the_general_path(kernel_backend, kind, fixed, nearby):
    """The fixed products at the default exponents agree with the general powers one float32 ulp
    away (which take the general path): the two paths compute the same function."""
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device, seed=23)
    pred = make_pred(kind, *keypoints.shape[:2], device, seed=9)
    kwargs = dict(kind=kind, reduction="none", probe=torch.ones((), device=device))
    fixed_loss, fixed_grad = loss_and_grad(backend, pred, keypoints, weights, **kwargs, **fixed)
    general_loss, general_grad = loss_and_grad(backend, pred, keypoints, weights, **kwargs, **nearby)
    assert_close_rel(fixed_loss, general_loss, LOSS_RTOL, "loss")
    assert_close_rel(fixed_grad, general_grad, GRAD_RTOL, "gradient")


def _ops(backend):
    namespace = torch.ops.kpfast_triton if backend == "triton" else torch.ops.kpfast
    backward = namespace.heatmap_loss_backward if backend == "triton" else namespace._heatmap_loss_backward
    return namespace.heatmap_loss, backward


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arguments", ["tensors", "absent", "strided_sigma"])
def test_opcheck(kernel_backend, kind, arguments):
    """The ops in the one-launch argument convention: (B, K) sigma and weights; sigma None (one
    sigma_value) and weights None; a (K,) sigma expanded to (B, K) (stride_b 0) and a transposed one."""
    backend, device = kernel_backend
    forward, backward = _ops(backend)
    keypoints, weights = keypoints_with_edge_cases(instances=2, device=device)
    pred = make_pred(kind, 2, 5, device).requires_grad_(True)
    config = ("udp", kind, 0.25 if kind == "focal" else 2.0, 2.0, 4.0, 15.0, 1.0, 0.1, 0.1)
    upstream = torch.rand(2, 5, device=device)
    if arguments == "tensors":
        sigmas, weights_arg = [torch.full((2, 5), 1.5, device=device)], weights
    elif arguments == "absent":
        sigmas, weights_arg = [None], None
    else:
        per_keypoint = torch.linspace(0.9, 2.1, 5, device=device).expand(2, 5)
        transposed = torch.linspace(0.9, 2.1, 10, device=device).reshape(5, 2).t()
        assert per_keypoint.stride() == (0, 1) and not transposed.is_contiguous()
        sigmas, weights_arg = [per_keypoint, transposed], weights
    for sigma in sigmas:
        arguments_ = (keypoints, weights_arg, sigma, 1.5) + config
        torch.library.opcheck(forward, (pred,) + arguments_)
        torch.library.opcheck(backward, (upstream, pred.detach()) + arguments_)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_reads_strided_upstream(kernel_backend, kind):
    """The backward op reads the (B, K) upstream gradient with any strides (the expanded scalar of a
    mean or sum, a transposed tensor) in place and gives the gradient of its contiguous copy."""
    backend, device = kernel_backend
    _, backward = _ops(backend)
    keypoints, weights = keypoints_with_edge_cases(instances=2, device=device)
    pred = make_pred(kind, 2, 5, device)
    config = ("udp", kind, 0.25 if kind == "focal" else 2.0, 2.0, 4.0, 15.0, 1.0, 0.1, 0.1)
    arguments = (pred, keypoints, weights, None, 1.6) + config
    transposed = torch.rand(5, 2, generator=torch.Generator().manual_seed(3)).to(device).t()
    for upstream in (torch.full((), 0.37, device=device).expand(2, 5), transposed):
        assert not upstream.is_contiguous()
        got = backward(upstream, *arguments)
        expected = backward(upstream.contiguous(), *arguments)
        assert torch.count_nonzero(expected) > 0
        # a unit stride is a compile-time constant of the contiguous copy's kernel: another kernel
        assert_close_across_kernels(got, expected, "gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("batch, num_keypoints, height, width", [(2, 5, H, W), (256, 17, 96, 72), (3, 1, 1, 1)])
def test_expected_upstream_is_what_autograd_gives(reduction, batch, num_keypoints, height, width):
    """The gradient-in-forward opt-in compares the upstream on the device with the value it assumed:
    that value must be, bit for bit, the one autograd computes through the reduction (also past
    2^24 pixels, where the pixel count is not a float32)."""
    from kpfast.ops._loss_registration import expected_upstream
    from kpfast.reference import reduce_map_losses

    map_losses = torch.rand(batch, num_keypoints, requires_grad=True)
    loss = reduce_map_losses(map_losses, torch.zeros(batch, num_keypoints), "focal", reduction, height * width)
    (upstream,) = torch.autograd.grad(loss.sum() if reduction == "none" else loss, map_losses)
    expected = expected_upstream(reduction, batch * num_keypoints, height * width)
    assert bool((upstream == torch.tensor(expected, dtype=torch.float32)).all()), (upstream.flatten()[0], expected)


@pytest.mark.triton
@pytest.mark.parametrize("kind", vocabulary.FUSED_GRADIENT_LOSS_KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_gradient_matches_the_separate_backward(kind, reduction):
    """fused_gradient=True (Triton): the same loss and gradient as the separate backward kernel
    for the assumed upstream, a scaled one (AMP-like), a per-map one with zeros (OHKM), and a
    second backward through the same graph (retain_graph recomputes: no doubly scaled buffer)."""
    reason = kpfast.backends.unavailable_reason("triton", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if reason is not None:
        pytest.skip(reason)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keypoints, weights = keypoints_with_edge_cases(instances=2, device=device, seed=31)
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[-2]
    pred = make_pred(kind, batch, num_keypoints, device, seed=12)
    per_map = torch.rand(batch, num_keypoints, generator=torch.Generator().manual_seed(2)).to(device)
    per_map[0, :2] = 0.0  # maps dropped by OHKM
    objectives = {
        "plain": lambda loss: loss.sum() if reduction == "none" else loss,
        "scaled": lambda loss: 3.7 * (loss.sum() if reduction == "none" else loss),
        "per_map": lambda loss: (loss * per_map).sum() if reduction == "none" else loss * 0.5,
    }
    for name, objective in objectives.items():
        grads = {}
        for fused in (False, True):
            x = pred.detach().clone().requires_grad_(True)
            loss = heatmap_loss(x, keypoints, weights, kind=kind, reduction=reduction, backend="triton",
                                fused_gradient=fused)
            value = objective(loss)
            first = torch.autograd.grad(value, x, retain_graph=True)[0]
            second = torch.autograd.grad(value, x)[0]
            grads[fused] = (loss.detach(), first, second)
        (ref_loss, ref_first, ref_second), (got_loss, got_first, got_second) = grads[False], grads[True]
        assert_close_across_kernels(got_loss, ref_loss, f"{name}: loss (fused vs separate forward kernel)")
        assert_close_rel(got_first, ref_first, 1e-6, f"{name}: first backward")
        assert_close_rel(got_second, ref_second, 1e-6, f"{name}: second backward (retain_graph)")
        assert torch.count_nonzero(ref_first) > 0


@pytest.mark.triton
def test_fused_gradient_ops_opcheck():
    reason = kpfast.backends.unavailable_reason("triton", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if reason is not None:
        pytest.skip(reason)
    importlib.import_module("kpfast.triton.loss")  # defines the kpfast_triton ops
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keypoints, weights = keypoints_with_edge_cases(instances=2, device=device)
    pred = make_pred("focal", 2, 5, device)
    config = ("udp", "focal", 0.25, 2.0, 4.0, 15.0, 1.0, 0.1, 0.1)
    torch.library.opcheck(torch.ops.kpfast_triton.heatmap_loss_fused,
                          (pred, keypoints, weights, None, 1.6) + config + (0.5,))
    grad = make_pred("focal", 2, 5, device, seed=5)
    upstream = torch.tensor([[0.5, 0.0, 1.0, 0.5, 2.0], [0.5, 0.5, 0.5, 0.5, 0.5]], device=device)
    expected = grad * (upstream / 0.5)[..., None, None]
    torch.ops.kpfast_triton.heatmap_loss_rescale_(grad, upstream, 0.5)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    torch.library.opcheck(torch.ops.kpfast_triton.heatmap_loss_rescale_, (grad, upstream, 0.5))


def test_torch_compile_fullgraph(kernel_backend):
    backend, device = kernel_backend
    keypoints, weights = keypoints_with_edge_cases(device=device)

    def step(pred):
        per_keypoint = heatmap_loss(pred, keypoints, weights, sigma=2.0, kind="focal", reduction="none",
                                    backend=backend)
        return per_keypoint.topk(2, dim=1).values.mean() + heatmap_loss(pred, keypoints, weights, kind="mse",
                                                                         backend=backend)

    # Inductor for the compiled extension; aot_eager keeps the interpreted Triton run short.
    compiled = torch.compile(step, fullgraph=True, backend="inductor" if backend != "triton" else "aot_eager")
    pred = make_pred("focal", 2, 5, device)
    p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    expected = step(p1)
    got = compiled(p2)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(p2.grad, p1.grad)


def _large_cpu_allocations(fn, threshold_bytes):
    """Sizes of the CPU allocations of at least threshold_bytes made while running fn."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each allocation is the self memory of the op that made it (frees are negative).
    return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage >= threshold_bytes]


@pytest.mark.parametrize("kind", KINDS)
def test_no_map_sized_temporaries_on_cpu(kind):
    """Forward + backward allocate exactly one (B, K, H, W) buffer, the gradient; the reference,
    which renders its target, allocates many (so the probe can see them)."""
    if not kpfast.extension_status()["loaded"]:
        pytest.skip(kpfast.extension_status()["reason"])
    batch, num_keypoints, height, width = 2, 17, 32, 24
    keypoints = torch.rand(batch, num_keypoints, 2) * torch.tensor([width, height])
    map_bytes = batch * num_keypoints * height * width * 4

    def run(backend):
        pred = torch.randn(batch, num_keypoints, height, width, requires_grad=True)

        def step():
            heatmap_loss(pred, keypoints, kind=kind, backend=backend).backward()
        return step

    assert _large_cpu_allocations(run("cpu"), map_bytes) == [map_bytes], "only the gradient may be map-sized"
    assert len(_large_cpu_allocations(run("torch"), map_bytes)) > 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_no_map_sized_temporaries_on_gpu(backend):
    reason = kpfast.backends.unavailable_reason(backend, torch.device("cuda"))
    if reason is not None:
        pytest.skip(reason)
    batch, num_keypoints, height, width = 64, 17, 64, 48
    keypoints = (torch.rand(batch, num_keypoints, 2) * torch.tensor([width, height])).cuda()
    pred = torch.randn(batch, num_keypoints, height, width, device="cuda", requires_grad=True)
    map_bytes = pred.numel() * 4
    heatmap_loss(pred, keypoints, backend=backend).backward()  # warm-up (autotuning, allocator)
    pred.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    heatmap_loss(pred, keypoints, backend=backend).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - baseline
    assert extra < map_bytes + map_bytes // 4, f"peak extra {extra} bytes; the gradient alone is {map_bytes}"

