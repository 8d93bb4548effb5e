"""Fake (meta) and autograd registrations of the fused heatmap loss ops.

The compiled op ``kpfast::heatmap_loss`` (C++, CPU and CUDA) and the Triton op
``kpfast_triton::heatmap_loss`` share one signature, so they share these registrations.

Why a separate backward kernel, and when the gradient-in-forward design would pay
---------------------------------------------------------------------------------
Traffic per pixel (b = bytes of one prediction): the roofline of forward + backward is
read pred + write grad = 2b. The separate backward moves read pred (forward) + read pred +
write grad (backward) = 3b = 1.5x the roofline, so docs/design.md's "within 1.5x" would need both
kernels at 100% of copy bandwidth. They are not memory-bound anyway: the static SASS of the CUDA
hot loops (csrc/cuda/loss.cu, sm_90, fixed exponents) is ~49 (forward) and ~65 (backward)
instructions per pixel for focal float32, ~45 / ~60 for bfloat16. At H100's issue rate
(132 SMs x 4 warp-instructions per clock x 1.75 GHz = 29.6 T thread-instructions/s) against
3.35 TB/s, a kernel is memory-bound below 8.8 instructions per byte. Per pixel:

* float32 (b = 4): forward 1.65 ps of issue > 1.19 ps of memory; backward 2.18 ps of issue
  < 2.39 ps of memory; forward + backward = (1.65 + 2.39) / 2.39 = 1.7x the roofline.
* bfloat16 (b = 2): forward 1.52 > 0.60; backward 2.01 > 1.19; (1.52 + 2.01) / 1.19 = 3.0x.

A forward that also writes the gradient runs one pass of ~86 (float32) / ~77 (bfloat16)
instructions per pixel (the logit parts, target and loop are shared): max(2.9 issue, 2.39 mem)
= 1.2x the roofline in float32, 2.2x in bfloat16 (still instruction-bound), provided the
backward then moves nothing. The reasons it was set aside, and the way around each:

* Scaling a saved gradient in place breaks a second backward (``retain_graph``, gradcheck's
  reentrancy check, the one-hot vjps of ``reduction="none"``) and AOTAutograd rejects a mutated
  saved tensor. -> Keep the buffer on ``ctx`` as a plain attribute (not ``save_for_backward``):
  the first backward takes it (``ctx.buffer = None`` before returning it, so AccumulateGrad can
  steal it without a copy) and every later backward recomputes with the separate kernel, which
  needs only the saved inputs. ``torch.compile`` and opcheck (``torch.compiler.is_compiling()``,
  or any ``requires_grad=False`` call) keep the separate kernels: the opt-in is an eager-mode path.
* Scaling out of place allocates a second (B, K, H, W) buffer. -> Scale in place (the buffer
  is private to ``ctx``, so in place is safe once it is taken).
* Skipping the scale when the upstream is exactly what the forward assumed needs a device-to-host
  read. -> The forward writes the gradient for the map-uniform upstream its reduction implies
  with ``loss.backward()`` (``mean``: 1 / (B K H W); ``sum``: 1; ``none``: 1 / (H W), i.e. a later
  ``.mean()``/``.sum()`` of the per-map values picks the matching one) and records that value;
  the first backward launches one kernel that reads the (B, K) upstream on the device and, per
  map, does nothing where it equals the recorded value (no map traffic), writes zeros where it
  is 0 (maps OHKM dropped: write only) and rescales in place (read + write) elsewhere. No host
  sync, CUDA-graph capturable, one launch.

Implemented as the explicit opt-in ``heatmap_loss(..., fused_gradient=True)`` for the Triton
backend, the kinds with the ``fused_gradient`` trait (kpfast/vocabulary.py), in eager mode when
pred requires a gradient (:class:`FusedGradientLoss`, kpfast/triton/loss.py ``heatmap_loss_fused`` /
``heatmap_loss_rescale_``); the compiled CPU/CUDA backends would need the same two ops in the
schema. What it cannot fix, hence opt-in only:
* AMP loss scaling (``GradScaler``) and weighted sums of losses multiply the upstream by a factor
  the forward does not know: every map is rescaled, 2b + 2b = 2x the roofline, worse than the
  separate kernel's 1.5x. (A caller that knows the factor could pass it to the forward.)
* ``cornernet``'s mean/sum upstream is g / max(total positives, 1), known only after the
  forward's own reduction: the forward would write the gradient for upstream 1 and always rescale
  (so cornernet keeps the separate kernel).
* The gradient buffer lives from forward to backward (the separate design allocates it only in
  backward): one (B, K, H, W) buffer more at the activation-memory peak.
* The forward does the backward's work, so the opt-in applies only when ``pred`` requires a
  gradient and grad mode is on (evaluation keeps the plain forward).

By default (and for every torch.compile, opcheck and AMP path) the separate backward kernel
folds the upstream (B, K) gradient into its single write of the one gradient buffer, holds
nothing between forward and backward, is correct under ``retain_graph`` and keeps
opcheck/torch.compile(fullgraph=True) working. Weights and sigma may be None (every weight 1;
one ``sigma_value``): the argument convention of kpfast.ops._inputs.LossInputs, saved as given.

The loss is not differentiable w.r.t. keypoints, weights or sigma (the public op detaches them).
"""

from __future__ import annotations

import torch

from kpfast.ops._triton_loader import differentiable_op


def _fake_forward(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta, keypoint_weight,
                  background_weight, threshold, l1_weight):
    batch, num_keypoints = pred.shape[:2]
    map_losses = pred.new_empty((batch, num_keypoints), dtype=torch.float32)
    return map_losses, torch.empty_like(map_losses)


def _fake_backward(grad_map_losses, pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                   keypoint_weight, background_weight, threshold, l1_weight):
    return pred.new_empty(pred.shape)


def register(namespace: str) -> None:
    """Fake kernels of ``<namespace>::heatmap_loss`` and its backward op, and the forward's
    autograd through that backward op (the scheme of every ``_<op>_registration`` module)."""
    forward_name, backward_name, backward_op = differentiable_op(namespace, "heatmap_loss")

    def setup_context(ctx, inputs, output):
        pred, keypoints, weights, sigma = inputs[:4]
        # weights and sigma may be None (every weight 1; one sigma_value, which is in the config).
        ctx.save_for_backward(pred, keypoints, weights, sigma)
        ctx.config = inputs[4:]

    def backward(ctx, grad_map_losses, grad_positives):
        # positives are integer counts (piecewise constant): their gradient is ignored.
        pred, keypoints, weights, sigma = ctx.saved_tensors
        grad_pred = None
        if ctx.needs_input_grad[0]:
            grad_pred = backward_op(grad_map_losses, pred, keypoints, weights, sigma, *ctx.config)
        return (grad_pred,) + (None,) * 13

    torch.library.register_fake(forward_name)(_fake_forward)
    torch.library.register_fake(backward_name)(_fake_backward)
    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


def expected_upstream(reduction: str, num_maps: int, pixels_per_map: int) -> float:
    """The upstream gradient of every map's loss sum that ``loss.backward()`` gives after the
    reduction of kpfast.reference.reduce_map_losses (a kind that does not count positives), computed
    as autograd computes it (a float32 division), so that the device-side comparison of the first
    backward matches bit for bit: ``mean`` 1 / (B K H W), ``sum`` 1, ``none`` 1 / (H W) (the per-map
    values then summed)."""
    one = torch.ones((), dtype=torch.float32)
    if reduction == "mean":
        return float(one / max(num_maps * pixels_per_map, 1))
    if reduction == "sum":
        return 1.0
    return float(one / max(pixels_per_map, 1))


class FusedGradientLoss(torch.autograd.Function):
    """The gradient-in-forward opt-in (``heatmap_loss(..., fused_gradient=True)``, Triton, the
    ``fused_gradient`` kinds, eager): the forward writes the gradient for the expected upstream into a buffer held by
    ``ctx`` (not a saved tensor); the first backward takes it and rescales it in place only where
    the device-side test finds another upstream; a later backward (``retain_graph``) recomputes
    with the separate backward kernel from the saved inputs. See the module docstring."""

    @staticmethod
    def forward(ctx, pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                keypoint_weight, background_weight, threshold, l1_weight, expected):
        map_losses, positives, grad = torch.ops.kpfast_triton.heatmap_loss_fused(
            pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta, keypoint_weight,
            background_weight, threshold, l1_weight, expected)
        ctx.buffer = grad
        ctx.expected = expected
        ctx.save_for_backward(pred, keypoints, weights, sigma)
        ctx.config = (sigma_value, encoding, kind, alpha, gamma, beta, keypoint_weight, background_weight, threshold,
                      l1_weight)
        ctx.mark_non_differentiable(positives)
        return map_losses, positives

    @staticmethod
    def backward(ctx, grad_map_losses, grad_positives):
        if ctx.buffer is not None:
            grad = ctx.buffer
            ctx.buffer = None  # taken: a second backward recomputes (and AccumulateGrad may steal it)
            torch.ops.kpfast_triton.heatmap_loss_rescale_(grad, grad_map_losses, ctx.expected)
        else:
            pred, keypoints, weights, sigma = ctx.saved_tensors
            grad = torch.ops.kpfast_triton.heatmap_loss_backward(grad_map_losses, pred, keypoints, weights, sigma,
                                                                  *ctx.config)
        return (grad,) + (None,) * 14
