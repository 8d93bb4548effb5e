"""Op 1: Gaussian heatmap rendering (docs/design.md), on the four backends."""

from __future__ import annotations

import torch

from kpfast import _extension, backends
from kpfast import reference as _reference
from kpfast.ops._checks import (ENCODINGS, HEATMAP_DTYPES, check_choice, check_float, check_output_elements,
                                check_size, keypoint_arguments, materialise_sigma, materialise_weights, sigma_argument)
from kpfast.ops import _render_autograd

# Every implementation takes (keypoints (B, N, K, 2), weights (B, N, K) or None, sigma (B, K) view or
# None, sigma_value, height, width, encoding, dtype): the kernels read absent weights and a float
# sigma as such, so a call is one kernel launch with nothing materialised around it.


def _torch(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype):
    """The reference needs real tensors: ones for absent weights, a full (B, K) sigma for a float."""
    batch, _, num_keypoints = keypoints.shape[:3]
    weights = materialise_weights(weights, keypoints)
    sigma = materialise_sigma(sigma, sigma_value, batch, num_keypoints, keypoints.dtype, keypoints.device)
    return _reference.render_heatmaps(keypoints, weights, sigma, height, width, encoding, dtype)


def _compiled(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype):
    return torch.ops.kpfast.render_heatmaps(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype)


_triton_loaded = False


def _load_triton() -> None:
    """Import the Triton kernels (and so triton) on first use only: importing kpfast must not."""
    global _triton_loaded
    if not _triton_loaded:
        import kpfast.triton.render  # noqa: F401  (defines the kpfast_triton ops)

        _render_autograd.register("kpfast_triton", "render_heatmaps_backward")
        _triton_loaded = True


def _triton(keypoints, weights, sigma, sigma_value, height, width, encoding, dtype):
    _load_triton()
    return torch.ops.kpfast_triton.render_heatmaps(keypoints, weights, sigma, sigma_value, height, width, encoding,
                                                   dtype)


def _float32_only(compute_dtype: torch.dtype, **_) -> str | None:
    if compute_dtype != torch.float32:
        return f"computes in float32 only, keypoints are {compute_dtype}"
    return None


RENDER = backends.OpBackends(
    "render_heatmaps",
    implementations={"torch": _torch, "cpu": _compiled, "cuda": _compiled, "triton": _triton},
    input_checks={"triton": _float32_only},
)

if _extension.is_loaded():
    _render_autograd.register("kpfast", "_render_heatmaps_backward")


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
    keypoints4, weights3, has_instances = keypoint_arguments(keypoints, weights)
    height, width = check_size("size", size)
    check_choice("encoding", encoding, ENCODINGS)
    compute = keypoints4.dtype
    allowed = HEATMAP_DTYPES + ((torch.float64,) if compute == torch.float64 else ())
    if dtype not in allowed:
        raise TypeError(f"dtype: expected one of {[str(d) for d in allowed]}, got {dtype}")
    batch, _, num_keypoints = keypoints4.shape[:3]
    check_output_elements("size", (batch, num_keypoints, height, width))
    sigma2, sigma_value = sigma_argument(sigma, batch, num_keypoints, compute, keypoints4.device)
    implementation = RENDER.select(backend, keypoints4.device, compute_dtype=compute)
    heatmaps, weights_out = implementation(keypoints4, weights3, sigma2, sigma_value, height, width, encoding, dtype)
    if not has_instances:
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
