"""Op 3: heatmap decoding (docs/design.md) on the four backends: argmax-based decoders with the
published sub-pixel refinements, soft-argmax with a fused backward, peak extraction, and the
flip-test merge."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kpfast import _extension, backends, vocabulary
from kpfast.ops import _decode_registration, _triton_loader
from kpfast.ops._checks import check_same_device, check_tensor
from kpfast.ops._inputs import DecodeInputs, PeakInputs, SoftArgmaxInputs
from kpfast.reference import decode as _reference

DECODE_METHODS = vocabulary.DECODE_METHODS


def _triton_ops():
    return _triton_loader.triton_ops("decode", _decode_registration.register)


# Every implementation takes its inputs object's kernel_args() (kpfast/ops/_inputs.py).
def _compiled_decode(*args):
    return torch.ops.kpfast.decode_heatmaps(*args)


def _triton_decode(*args):
    return _triton_ops().decode_heatmaps(*args)


def _compiled_soft_argmax(*args):
    return torch.ops.kpfast.soft_argmax(*args)[:2]


def _triton_soft_argmax(*args):
    return _triton_ops().soft_argmax(*args)[:2]


def _compiled_find_peaks(*args):
    return torch.ops.kpfast.find_peaks(*args)


def _triton_find_peaks(*args):
    return _triton_ops().find_peaks(*args)


def _no_float64(inputs: SoftArgmaxInputs) -> str | None:
    if inputs.heatmaps.dtype == torch.float64:
        return "computes in float32 only, heatmaps are torch.float64"
    return None


# auto: the order of kpfast.backends.AUTO_TABLE, with the measurement or reason behind it.
DECODE = backends.OpBackends(
    "decode_heatmaps",
    implementations={"torch": _reference.decode_heatmaps, "cpu": _compiled_decode, "cuda": _compiled_decode,
                     "triton": _triton_decode},
)
SOFT_ARGMAX = backends.OpBackends(
    "soft_argmax",
    implementations={"torch": _reference.soft_argmax, "cpu": _compiled_soft_argmax, "cuda": _compiled_soft_argmax,
                     "triton": _triton_soft_argmax},
    input_checks={"triton": _no_float64},
)
FIND_PEAKS = backends.OpBackends(
    "find_peaks",
    implementations={"torch": _reference.find_peaks, "cpu": _compiled_find_peaks, "cuda": _compiled_find_peaks,
                     "triton": _triton_find_peaks},
)

if _extension.is_loaded():
    _decode_registration.register(_triton_loader.COMPILED_NAMESPACE)


def decode_heatmaps(heatmaps: torch.Tensor, method: str = "dark", blur_kernel: int = 11, window: int = 3,
                    backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint coordinates and scores from heatmaps, by the published decoders.

    Args:
        heatmaps: ``(B, K, H, W)`` float32, float16 or bfloat16 (math in float32); any strides.
        method: ``"argmax"`` (first maximum in row-major order), ``"quarter"`` (HRNet: when
            1 < x < W-1 and 1 < y < H-1, 0.25 px towards the higher neighbour along each axis),
            ``"dark"`` (DARK Taylor step on the log of the Gaussian-blurred map, refined when
            1 < x < W-2 and 1 < y < H-2), ``"udp"`` (MMPose's UDP refinement: clipped blurred map,
            edge padding, everywhere) or ``"local_mean"`` (centroid of the ``window x window``
            neighbourhood weighted by the positive heatmap values).
        blur_kernel: odd kernel size of the DARK/UDP blur (OpenCV's default sigma for it), 1..31.
        window: odd window of ``local_mean``; a window wider than ``2 max(H, W) - 1`` already
            covers the whole map from any argmax and is clamped to that (same result, bounded work).
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"`` (None: the default).

    Returns:
        ``coords (B, K, 2)`` float32 ``(x, y)`` in heatmap pixels (pixel ``(i, j)`` at ``x=j, y=i``),
        ``-1`` where the map maximum is <= 0; ``scores (B, K)`` float32, the map maximum.
        Not differentiable (the outputs never require grad). Non-finite pixels, the same on
        every backend: NaN is skipped (never the maximum; an all-NaN map gives ``-1`` and score
        NaN); ``+inf``/``-inf`` are ordinary values (``+inf`` can be the maximum, score ``+inf``);
        a non-finite value in the refinement patch leaves the integer argmax.

    Deviations from the published code, where it fails: ``dark``/``udp`` coordinates are clipped
    to the map's area ``[-0.5, W-0.5] x [-0.5, H-0.5]`` (a near-singular Hessian, e.g. on noise-only maps, makes the step
    arbitrarily long and the published code returns points off the map); a map whose maximum is <= 0 keeps
    ``-1`` also for ``udp`` (MMPose refines it with wrapped indices); a singular Hessian
    (``det == 0``) or a non-finite step leaves the argmax (numpy's inverse would raise).
    """
    inputs = DecodeInputs.build(heatmaps, method, blur_kernel, window)
    implementation = DECODE.select(backend, inputs.device, inputs)
    # Every backend clips dark/udp points to the map itself (reference.clip_to_map): no extra
    # elementwise launches after the kernel.
    return implementation(*inputs.kernel_args())


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0, backend: str | None = None):
    """Differentiable sub-pixel coordinates: the expectation of ``(x, y)`` under
    ``softmax(beta * h)`` over each map (pixel ``(i, j)`` at ``x=j, y=i``).

    Args:
        heatmaps: ``(B, K, H, W)`` float32, float16, bfloat16 (math in float32) or float64
            (math in float64; not on ``triton``).
        beta: inverse temperature, a float > 0 (not a tensor: no gradient w.r.t. it).

    Returns:
        ``coords (B, K, 2)`` (float32, float64 for float64 maps), differentiable w.r.t. the
        heatmaps through each backend's fused backward kernel; ``scores (B, K)``: the map
        maximum, not differentiable.
    """
    inputs = SoftArgmaxInputs.build(heatmaps, beta)
    implementation = SOFT_ARGMAX.select(backend, inputs.device, inputs)
    return implementation(*inputs.kernel_args())


def find_peaks(heatmaps: torch.Tensor, threshold: float = 0.1, min_distance: int = 2, max_peaks: int = 20,
               backend: str | None = None):
    """Local maxima of each map after non-maximum suppression, the top ``max_peaks`` by score.

    A pixel is a peak when its value is > ``threshold``, >= every pixel within ``min_distance``
    (the ``(2d+1)^2`` window, clipped to the map; a ``min_distance`` >= ``max(H, W) - 1`` is the
    whole map and clamped to that) and > every such pixel earlier in row-major
    order (the first pixel of a plateau wins). Peaks are sorted by score (descending), ties by
    row-major index.

    Returns:
        ``coords (B, K, P, 2)`` float32 ``(x, y)``, ``-1`` in unused slots; ``scores (B, K, P)``
        float32, 0 in unused slots; ``valid (B, K, P)`` bool. Not differentiable.
    """
    inputs = PeakInputs.build(heatmaps, threshold, min_distance, max_peaks)
    implementation = FIND_PEAKS.select(backend, inputs.device, inputs)
    return implementation(*inputs.kernel_args())


def flip_merge(heatmaps: torch.Tensor, flipped_heatmaps: torch.Tensor, flip_pairs: Sequence[Sequence[int]],
               shift: bool = True) -> torch.Tensor:
    """Average the heatmaps of an image with those of its horizontal flip (flip test).

    ``flipped_heatmaps`` (predicted on the flipped image) are flipped back along W, their
    left/right channels swapped by ``flip_pairs`` (e.g. ``[(1, 2), (3, 4), ...]``) and, with
    ``shift=True``, moved one pixel right as HRNet's ``shift_heatmap`` does (column 0 keeps its
    value), then averaged with ``heatmaps``. Pure PyTorch (memory-bound), differentiable.
    """
    check_tensor("heatmaps", heatmaps, dims=(4,))
    check_tensor("flipped_heatmaps", flipped_heatmaps, dims=(4,))
    if flipped_heatmaps.shape != heatmaps.shape:
        raise ValueError(f"flipped_heatmaps: expected shape {tuple(heatmaps.shape)} (that of heatmaps), "
                         f"got {tuple(flipped_heatmaps.shape)}")
    check_same_device("heatmaps", heatmaps, flipped_heatmaps=flipped_heatmaps)
    num_keypoints = heatmaps.shape[1]
    permutation = list(range(num_keypoints))
    seen: set[int] = set()
    for pair in flip_pairs:
        if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair):
            raise TypeError(f"flip_pairs: expected pairs of two ints, got {pair!r}")
        left, right = pair
        if not (0 <= left < num_keypoints and 0 <= right < num_keypoints) or left == right:
            raise ValueError(f"flip_pairs: expected two distinct channels in [0, {num_keypoints}), got {tuple(pair)}")
        if left in seen or right in seen:
            raise ValueError(f"flip_pairs: expected each channel in at most one pair, got {tuple(pair)} again")
        seen.update((left, right))
        permutation[left], permutation[right] = right, left
    unflipped = flipped_heatmaps.flip(-1)[:, permutation]
    if shift:
        unflipped = torch.cat([unflipped[..., :1], unflipped[..., :-1]], dim=-1)
    return (heatmaps + unflipped) * 0.5
