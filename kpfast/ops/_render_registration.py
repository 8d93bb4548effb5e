"""Fake (meta) and autograd registrations of the render ops.

The compiled op ``kpfast::render_heatmaps`` (C++, one schema for CPU and CUDA) and the Triton
op ``kpfast_triton::render_heatmaps`` share one signature, so they share these registrations:
the forward saves its inputs and the backward calls the backend's own backward op.

Arguments as the kernels take them (kpfast/ops/_inputs.py RenderInputs): weights may be None (every weight 1) and
sigma None (then ``sigma_value`` is every map's sigma) or a (B, K) view with any strides, e.g. a (K,)
sigma expanded: the backward op returns a contiguous (B, K) gradient for it and autograd's expand
backward sums it back to (K,).
"""

from __future__ import annotations

import torch

from kpfast.ops._triton_loader import differentiable_op


def _fake_forward(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype):
    batch, instances, num_keypoints = keypoints.shape[:3]
    heatmaps = keypoints.new_empty((batch, num_keypoints, height, width), dtype=dtype)
    return heatmaps, keypoints.new_empty((batch, instances, num_keypoints))


def _fake_backward(grad_heatmaps, keypoints, weights, sigma, sigma_value, encoding):
    batch, _, num_keypoints = keypoints.shape[:3]
    return torch.empty_like(keypoints), keypoints.new_empty((batch, num_keypoints))


def register(namespace: str) -> None:
    """Fake kernels of ``<namespace>::render_heatmaps`` and its backward op, and the forward's
    autograd through that backward op (the scheme of every ``_<op>_registration`` module)."""
    forward_name, backward_name, backward_op = differentiable_op(namespace, "render_heatmaps")

    def setup_context(ctx, inputs, output):
        keypoints, weights, sigma, sigma_value, _, _, encoding, _ = inputs
        ctx.save_for_backward(keypoints, weights, sigma)
        ctx.sigma_value = sigma_value
        ctx.encoding = encoding

    def backward(ctx, grad_heatmaps, grad_weights_out):
        # weights_out is piecewise constant in every input: its gradient is ignored.
        keypoints, weights, sigma = ctx.saved_tensors
        grad_keypoints, grad_sigma = backward_op(grad_heatmaps, keypoints, weights, sigma, ctx.sigma_value,
                                                 ctx.encoding)
        return (
            grad_keypoints if ctx.needs_input_grad[0] else None,
            None,
            grad_sigma if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
            None,
        )

    torch.library.register_fake(forward_name)(_fake_forward)
    torch.library.register_fake(backward_name)(_fake_backward)
    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)
