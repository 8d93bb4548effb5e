"""Fake (meta) and autograd registrations of the decoding ops.

The compiled ops ``kpfast::*`` (C++, one schema for CPU and CUDA) and the Triton ops
``kpfast_triton::*`` share their signatures, so they share these registrations. Decoding and
peak extraction are not differentiable (the public functions call them on detached maps);
soft-argmax has an exact backward, computed by each backend's own fused kernel.
"""

from __future__ import annotations

import torch

from kpfast.ops._triton_loader import COMPILED_NAMESPACE, differentiable_op


def _fake_decode(heatmaps, method, blur_kernel, window):
    batch, num_keypoints = heatmaps.shape[:2]
    return (heatmaps.new_empty((batch, num_keypoints, 2), dtype=torch.float32),
            heatmaps.new_empty((batch, num_keypoints), dtype=torch.float32))


def _fake_soft_argmax(float64_maps_in_float64: bool):
    """The fake soft-argmax of a namespace whose kernels compute float64 maps in float64 (the C++
    ops) or always in float32 (the Triton op): its outputs' dtype, as the real kernel gives it."""
    def fake(heatmaps, beta):
        batch, num_keypoints = heatmaps.shape[:2]
        dtype = torch.float64 if float64_maps_in_float64 and heatmaps.dtype == torch.float64 else torch.float32
        return (heatmaps.new_empty((batch, num_keypoints, 2), dtype=dtype),
                heatmaps.new_empty((batch, num_keypoints), dtype=dtype),
                heatmaps.new_empty((batch, num_keypoints), dtype=dtype))

    return fake


def _fake_soft_argmax_backward(grad_coords, heatmaps, coords, log_normaliser, beta):
    return torch.empty_like(heatmaps)


def _fake_find_peaks(heatmaps, threshold, min_distance, max_peaks):
    batch, num_keypoints = heatmaps.shape[:2]
    return (heatmaps.new_empty((batch, num_keypoints, max_peaks, 2), dtype=torch.float32),
            heatmaps.new_empty((batch, num_keypoints, max_peaks), dtype=torch.float32),
            heatmaps.new_empty((batch, num_keypoints, max_peaks), dtype=torch.bool))


def register(namespace: str) -> None:
    """Fake kernels of ``<namespace>``'s decoding ops and soft-argmax's autograd through its backward
    op (the scheme of every ``_<op>_registration`` module). The compiled soft-argmax returns float64
    for float64 maps; the Triton one float32 always (it computes in float32 only)."""
    float64_maps_in_float64 = namespace == COMPILED_NAMESPACE
    soft_argmax, soft_argmax_backward, soft_argmax_backward_op = differentiable_op(namespace, "soft_argmax")
    torch.library.register_fake(f"{namespace}::decode_heatmaps")(_fake_decode)
    torch.library.register_fake(soft_argmax)(_fake_soft_argmax(float64_maps_in_float64))
    torch.library.register_fake(soft_argmax_backward)(_fake_soft_argmax_backward)
    torch.library.register_fake(f"{namespace}::find_peaks")(_fake_find_peaks)

    def setup_context(ctx, inputs, output):
        heatmaps, beta = inputs
        coords, _, log_normaliser = output
        ctx.save_for_backward(heatmaps, coords, log_normaliser)
        ctx.beta = beta
        ctx.mark_non_differentiable(output[1], output[2])

    def backward(ctx, grad_coords, grad_scores, grad_log_normaliser):
        # scores (the map maximum) and the log-normaliser are outputs without a gradient.
        heatmaps, coords, log_normaliser = ctx.saved_tensors
        # grad_coords as autograd gives it: the kernels read its strides (an expanded upstream of
        # coords.sum() is not copied: one launch per backward call).
        grad = soft_argmax_backward_op(grad_coords, heatmaps, coords, log_normaliser, ctx.beta)
        return grad, None

    torch.library.register_autograd(soft_argmax, backward, setup_context=setup_context)
