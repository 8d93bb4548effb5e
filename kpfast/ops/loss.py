"""Op 2: the fused weighted heatmap loss that renders its target on the fly (docs/design.md)."""

from __future__ import annotations

import torch

from kpfast import _extension, backends
from kpfast import reference as _reference
from kpfast import vocabulary
from kpfast.ops import _loss_registration, _triton_loader
from kpfast.ops._inputs import LossInputs, LossOptions

KINDS = vocabulary.LOSS_KINDS


def _compiled(*args):
    return torch.ops.kpfast.heatmap_loss(*args)


def _triton_namespace():
    return _triton_loader.triton_ops("loss", _loss_registration.register)


def _triton(*args):
    return _triton_namespace().heatmap_loss(*args)


# Every implementation takes LossInputs.kernel_args() (the schema's 14 arguments, csrc/library.cpp).
LOSS = backends.OpBackends(
    "heatmap_loss",
    implementations={"torch": _reference.heatmap_loss_maps, "cpu": _compiled, "cuda": _compiled, "triton": _triton},
)

if _extension.is_loaded():
    _loss_registration.register(_triton_loader.COMPILED_NAMESPACE)


def heatmap_loss(pred: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None, sigma=2.0,
                 encoding: str = "udp", kind: str = "focal", alpha: float | None = None, gamma: float = 2.0,
                 beta: float = 4.0, keypoint_weight: float = 15.0, background_weight: float = 1.0,
                 threshold: float = 0.1, l1_weight: float | None = None, reduction: str = "mean",
                 backend: str | None = None, fused_gradient: bool = False) -> torch.Tensor:
    """Weighted heatmap loss of ``pred`` against Gaussian targets rendered from ``keypoints`` on the fly.

    No (B, K, H, W) target, weight or intermediate tensor is allocated; the backward pass writes
    the one gradient buffer. Per pixel, with ``t`` the target of :func:`render_heatmaps` (same
    encodings, sigma forms and instance axis: the max over instances) and ``p`` the prediction
    (``p = sigmoid(z)`` for the logit kinds), one formula per kind of kpfast/vocabulary.py (its traits
    say which kinds take logits, their defaults and normalisation):

    * ``"mse"``: ``(p - t)^2`` on raw values;
    * ``"focal"`` (logits): ``a_t |t - p|^gamma BCEWithLogits(z, t)``, ``a_t = alpha t + (1 - alpha)(1 - t)``;
      RetinaNet's sigmoid focal loss for ``t`` in {0, 1};
    * ``"cornernet"`` (logits): CenterNet's penalty-reduced focal loss, ``(1 - p)^alpha (-log p)`` at the
      positive pixels ``floor(kp + 0.5)`` of the valid keypoints, ``(1 - t)^beta p^alpha (-log(1 - p))`` elsewhere.

    plus ``l1_weight * |p - t|``, all times the pixel weight ``w = keypoint_weight if t > threshold else
    background_weight``, times the map's keypoint weight (the max over instances of the render rule's
    output weight: ignored keypoints count 0). Logit kinds use stable log-sigmoid forms (finite for
    any finite logit).

    Args:
        pred: ``(B, K, H, W)`` float32/bfloat16/float16 predictions (logits for the logit kinds); any strides.
        keypoints, weights, sigma, encoding: as :func:`kpfast.ops.render_heatmaps` (``(B, K, 2)`` or
            ``(B, N, K, 2)``). The loss is not differentiable w.r.t. them (they are detached).
        kind: one of the kinds above (``kpfast.vocabulary.LOSS_KINDS``).
        alpha: focal class balance (default 0.25) or cornernet exponent (default 2); unused by mse.
        gamma: focal exponent (default 2). beta: cornernet negative exponent (default 4).
        keypoint_weight, background_weight, threshold: the pixel weighting (15, 1, 0.1).
        l1_weight: weight of the L1 term (default 0.1 for focal, 0 otherwise).
        reduction: ``"mean"`` (over all B*K*H*W pixels), ``"sum"``, or ``"none"`` -> per-keypoint ``(B, K)``
            losses (the map's pixel mean, so ``none.mean() == mean``). For ``cornernet`` (CenterNet
            normalisation) ``mean`` and ``sum`` both divide the batch total by the total number of
            positives (by 1 when there are none) and ``none`` divides each map by its own positives.
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"`` (None: the current default).
        fused_gradient: opt-in (experimental) gradient-in-forward: the forward also writes the gradient
            w.r.t. ``pred`` for the upstream ``loss.backward()`` gives, and the first backward only
            rescales it where the upstream differs (checked on the device). Used with the ``triton``
            backend for the kinds with the ``fused_gradient`` trait (``kpfast.vocabulary``) in eager
            mode when ``pred`` requires a gradient; every other call (and torch.compile) takes the
            separate backward kernel. It pays when the upstream is the plain one (no AMP loss
            scale): see kpfast/ops/_loss_registration.py.

    Returns:
        A float32 scalar (``mean``/``sum``; 0 for an empty batch) or ``(B, K)`` float32 losses (``none``).
        The gradient w.r.t. ``pred`` is returned in ``pred``'s dtype.
    """
    options = LossOptions.build(kind, alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight,
                                reduction)
    inputs = LossInputs.build(pred, keypoints, weights, sigma, encoding, options)
    implementation = LOSS.select(backend, inputs.device, inputs)
    if not isinstance(fused_gradient, bool):
        raise TypeError(f"fused_gradient: expected a bool, got {type(fused_gradient).__name__}")
    if (fused_gradient and implementation is _triton and options.traits.fused_gradient and pred.requires_grad
            and torch.is_grad_enabled() and not torch.compiler.is_compiling()):
        _triton_namespace()
        expected = _loss_registration.expected_upstream(options.reduction, inputs.num_maps, inputs.pixels_per_map)
        map_losses, positives = _loss_registration.FusedGradientLoss.apply(*inputs.kernel_args(), expected)
    else:
        map_losses, positives = implementation(*inputs.kernel_args())
    return _reference.reduce_map_losses(map_losses, positives, options.kind, options.reduction,
                                        inputs.pixels_per_map)
