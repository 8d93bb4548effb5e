"""Op 1: Gaussian heatmap rendering (docs/design.md), on the four backends."""

from __future__ import annotations

import torch

from kpfast import _extension, backends
from kpfast import reference as _reference
from kpfast.ops import _render_registration, _triton_loader
from kpfast.ops._checks import check_float, check_size
from kpfast.reference.render import materialise_sigma, materialise_weights
from kpfast.ops._inputs import RenderInputs

# Every implementation takes RenderInputs.kernel_args(): (keypoints (B, N, K, 2), weights (B, N, K)
# or None, sigma (B, K) view or None, sigma_value, height, width, encoding, dtype): the kernels read
# absent weights and a float sigma as such, so a call is one kernel launch with nothing
# materialised around it.


def _torch(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype):
    """The reference needs real tensors: ones for absent weights, a full (B, K) sigma for a float."""
    batch, _, num_keypoints = keypoints.shape[:3]
    weights = materialise_weights(weights, keypoints)
    sigma = materialise_sigma(sigma, sigma_value, batch, num_keypoints, keypoints.dtype, keypoints.device)
    return _reference.render_heatmaps(keypoints, weights, sigma, height, width, encoding, dtype)


def _compiled(*args):
    return torch.ops.kpfast.render_heatmaps(*args)


def _triton(*args):
    return _triton_loader.triton_ops("render", _render_registration.register).render_heatmaps(*args)


def _float32_only(inputs: RenderInputs) -> str | None:
    if inputs.compute_dtype != torch.float32:
        return f"computes in float32 only, keypoints are {inputs.compute_dtype}"
    return None


RENDER = backends.OpBackends(
    "render_heatmaps",
    implementations={"torch": _torch, "cpu": _compiled, "cuda": _compiled, "triton": _triton},
    input_checks={"triton": _float32_only},
)

if _extension.is_loaded():
    _render_registration.register(_triton_loader.COMPILED_NAMESPACE)


def render_heatmaps(keypoints: torch.Tensor, weights: torch.Tensor | None = None, size=(64, 48), sigma=2.0,
                    encoding: str = "udp", dtype: torch.dtype = torch.float32,
                    backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one Gaussian heatmap per keypoint.

    Args:
        keypoints: ``(B, K, 2)`` float ``(x, y)`` in heatmap pixels (pixel ``(i, j)`` has its centre
            at ``x=j, y=i``), or ``(B, N, K, 2)`` to render N people into one map per keypoint
            (element-wise max).
        weights: ``(B, K)`` / ``(B, N, K)`` visibility weights; a keypoint with weight < 0.5 or a
            non-finite coordinate is ignored. Default: all ones.
        size: ``(H, W)`` of the maps.
        sigma: float, or a tensor of shape ``(K,)`` or ``(B, K)``; > 0.
        encoding: ``"msra"`` (rounded centre, 3-sigma window), ``"udp"`` (exact centre, 3-sigma
            window) or ``"dark"`` (exact centre, whole map). A keypoint whose window lies wholly
            outside the map gets weight 0.
        dtype: heatmap dtype: float32, bfloat16 or float16 (float64 with float64 keypoints).
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None uses the
            current default (:func:`kpfast.use_backend`, ``KPFAST_BACKEND``, else ``"auto"``).

    Returns:
        ``heatmaps (B, K, H, W)`` and ``weights_out`` shaped like ``weights``: the input weight,
        or 0 for ignored keypoints. Differentiable w.r.t. the coordinates (``udp``, ``dark``) and
        a tensor sigma.
    """
    inputs = RenderInputs.build(keypoints, weights, size, sigma, encoding, dtype)
    implementation = RENDER.select(backend, inputs.device, inputs)
    heatmaps, weights_out = implementation(*inputs.kernel_args())
    if not inputs.has_instances:
        weights_out = weights_out.squeeze(1)
    if weights is not None:
        weights_out = weights_out.to(weights.dtype)
    return heatmaps, weights_out


def adaptive_sigma(size, base_sigma: float = 2.0, base_size=(64, 48)) -> float:
    """Sigma scaled with the heatmap size: ``base_sigma * sqrt(H W / (H0 W0))``.

    The standard sigma (2 at 64x48, the 256x192 input) grows with the map so that the Gaussian
    covers the same fraction of the person at every resolution (3 at 96x72)."""
    height, width = check_size("size", size)
    base_height, base_width = check_size("base_size", base_size)
    base_sigma = check_float("base_sigma", base_sigma, low=0, low_open=True)
    return base_sigma * ((height * width) / (base_height * base_width)) ** 0.5
