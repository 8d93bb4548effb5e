"""Fake (meta) and autograd registrations of the fused heatmap loss ops.

The compiled op ``kpfast::heatmap_loss`` (C++, CPU and CUDA) and the Triton op
``kpfast_triton::heatmap_loss`` share one signature, so they share these registrations.

Why a separate fused backward kernel rather than computing the gradient in the forward pass
(the Liger-Kernel approach)? A gradient computed in the forward must be kept until backward and
then scaled by the upstream gradient:
* scaling it in place mutates a saved activation: a second backward through the same graph
  (``retain_graph=True``, gradcheck's reentrancy check, one-hot vjps of ``reduction="none"``)
  silently returns a doubly scaled gradient, and AOTAutograd's partitioner rejects it (a
  prototype failed ``torch.library.opcheck``'s ``test_aot_dispatch_dynamic``);
* scaling it out of place allocates a second (B, K, H, W) buffer;
* skipping the scaling when the upstream gradient is exactly 1 needs a device-to-host read,
  which breaks CUDA-graph capture and the torch.compile graph.
Whenever the upstream gradient is not exactly 1 (AMP loss scaling, weighted loss sums) the in-place
variant moves read pred + write grad (forward) + read grad + write grad (backward) = 2x the
roofline, while the separate kernel moves read pred (forward) + read pred + write grad
(backward) = 1.5x, holds no buffer between forward and backward, is correct under
``retain_graph``, and keeps opcheck/torch.compile(fullgraph=True) working. The backward kernel
folds the upstream (B, K) gradient into its single write of the one gradient buffer.

The loss is not differentiable w.r.t. keypoints, weights or sigma (the public op detaches them).
"""

from __future__ import annotations

import torch


def _fake_forward(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta, keypoint_weight,
                  background_weight, threshold, l1_weight):
    batch, num_keypoints = pred.shape[:2]
    map_losses = pred.new_empty((batch, num_keypoints), dtype=torch.float32)
    return map_losses, torch.empty_like(map_losses)


def _fake_backward(grad_map_losses, pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                   keypoint_weight, background_weight, threshold, l1_weight):
    return pred.new_empty(pred.shape)


def register(namespace: str, backward_name: str) -> None:
    """Fake kernels of ``<namespace>::heatmap_loss`` and ``<namespace>::<backward_name>``, and the
    forward's autograd through that backward op (the registration scheme of every op file: a
    namespace and the name of its backward op, e.g. ``("kpfast", "_heatmap_loss_backward")``)."""
    forward_name = f"{namespace}::heatmap_loss"
    backward_op = getattr(getattr(torch.ops, namespace), backward_name)
    backward_name = f"{namespace}::{backward_name}"

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
