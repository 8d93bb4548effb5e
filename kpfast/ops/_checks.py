"""Every argument check of the public ops, in one place.

Each failure raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
naming the argument, the expected and the actual value, so that a bad call is fixed from the
message alone.

No check synchronises the host with a GPU: tensor *values* are read only on CPU tensors (a
CUDA tensor's values stay on the device, so CUDA-graph capture and asynchronous training steps
keep working) and never while torch.compile traces. Shapes, dtypes and devices are checked
everywhere, since they are host-side metadata.

Every input that sizes an allocation (``size``, ``max_peaks``) or a loop (``window``,
``min_distance``) is bounded here, before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HEATMAP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# A map side is at most 2^15 so that a pixel index row * W + col fits the int32 the kernels use
# within a map (H * W <= 2^30), and so that an absurd ``size`` fails here with its name instead
# of deep inside the allocator.
MAX_MAP_SIDE = 2**15
# The largest output the ops allocate, in elements (B * K * H * W, B * K * max_peaks): beyond it a
# call is a mistake (8 GiB of float32), not a workload; the message says which argument sized it.
MAX_OUTPUT_ELEMENTS = 2**31 - 1
MAX_BLUR_KERNEL = 31  # csrc/kpfast/decode.h kMaxBlurKernel: the kernels' fixed tap buffer


def compiling() -> bool:
    return torch.compiler.is_compiling()


def _type_name(value) -> str:
    return type(value).__name__


def check_tensor(name: str, value, *, dims: Sequence[int], dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {_type_name(value)}")
    if value.dim() not in dims:
        expected = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name}: expected a {expected} tensor, got shape {tuple(value.shape)}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {value.dtype}")


def check_same_device(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, value in others.items():
        if isinstance(value, torch.Tensor) and value.device != reference.device:
            raise ValueError(f"{name}: expected a tensor on {reference.device} (the device of {reference_name}), got {value.device}")


def check_heatmaps(heatmaps, dtypes: Sequence[torch.dtype] = HEATMAP_DTYPES) -> None:
    check_tensor("heatmaps", heatmaps, dims=(4,), dtypes=dtypes)
    if heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise ValueError(f"heatmaps: expected H >= 1 and W >= 1, got shape {tuple(heatmaps.shape)}")


def check_size(name: str, size) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"{name}: expected (H, W) as two ints, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if not (1 <= height <= MAX_MAP_SIDE and 1 <= width <= MAX_MAP_SIDE):
        raise ValueError(f"{name}: expected 1 <= H <= {MAX_MAP_SIDE} and 1 <= W <= {MAX_MAP_SIDE}, "
                         f"got ({height}, {width})")
    return height, width


def check_output_elements(name: str, shape: Sequence[int]) -> None:
    """Reject an output of more than MAX_OUTPUT_ELEMENTS elements before it is allocated."""
    elements = 1
    for extent in shape:  # a plain loop: torch.compile traces it without a graph break
        elements *= int(extent)
    if elements > MAX_OUTPUT_ELEMENTS:
        raise ValueError(f"{name}: expected an output of at most {MAX_OUTPUT_ELEMENTS} elements, got shape "
                         f"{tuple(shape)} ({elements} elements)")


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, finite: bool = True) -> float:
    """A Python number (not a bool, not a tensor, not NaN; finite unless ``finite=False``) within
    [low, high] ((low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {_type_name(value)} {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    bad_value = math.isnan(value) or (finite and math.isinf(value))
    if bad_value or too_low or too_high:
        lower = "" if low is None else f"> {low}" if low_open else f">= {low}"
        bounds = f"in [{low}, {high}]" if (high is not None and low is not None) else lower or ""
        kind = "a finite value" if finite else "a value (not NaN)"
        raise ValueError(f"{name}: expected {kind} {bounds}, got {value!r}")
    return value


def check_int(name: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {_type_name(value)} {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")
    return value


def check_odd(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an odd int, got {_type_name(value)} {value!r}")
    if value % 2 != 1 or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an odd int {bound}, got {value}")
    return value


def whole_map_window(window: int, height: int, width: int) -> int:
    """``window`` clamped to ``2 max(H, W) - 1``: from any pixel, that window already covers the whole
    map, so every larger window gives the same result (and bounds the kernels' loops)."""
    return min(window, 2 * max(height, width) - 1)


def whole_map_distance(min_distance: int, height: int, width: int) -> int:
    """``min_distance`` clamped to ``max(H, W) - 1``, beyond which the suppression window (clipped to
    the map) no longer grows: the same peaks, bounded loops."""
    return min(min_distance, max(height, width) - 1)


# Every sigma must exceed this (docs/ops-arguments-and-precision.md): 2 sigma^2 stays a normal
# float32, so 1 / (2 sigma^2) is finite on every backend (1e-30 underflowed to 0 and rendered NaN).
SIGMA_FLOOR = 1e-5


def check_sigma_type(sigma) -> None:
    """A float or a tensor (the module form of HeatmapLoss keeps it until the call)."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, torch.Tensor)):
        raise TypeError(f"sigma: expected a float or a tensor of shape (K,) or (B, K), got {_type_name(sigma)}")


def normalise_keypoints(keypoints, weights):
    """(B, K, 2) or (B, N, K, 2) keypoints and matching weights -> (B, N, K, 2), (B, N, K), had_instance_axis.

    The compute dtype is float64 for float64 keypoints and float32 otherwise.
    """
    check_tensor("keypoints", keypoints, dims=(3, 4))
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints: expected the last dimension to be 2 (x, y), got shape {tuple(keypoints.shape)}")
    compute = torch.float64 if keypoints.dtype == torch.float64 else torch.float32
    has_instances = keypoints.dim() == 4
    expected_weights = tuple(keypoints.shape[:-1])
    if weights is None:
        weights = torch.ones(expected_weights, dtype=compute, device=keypoints.device)
    else:
        check_tensor("weights", weights, dims=(len(expected_weights),))
        if tuple(weights.shape) != expected_weights:
            raise ValueError(f"weights: expected shape {expected_weights} to match keypoints, got {tuple(weights.shape)}")
        check_same_device("keypoints", keypoints, weights=weights)
    if not has_instances:
        keypoints, weights = keypoints.unsqueeze(1), weights.unsqueeze(1)
    return keypoints.to(compute).contiguous(), weights.to(compute).contiguous(), has_instances


# ---- arguments as the kernels take them: one launch per op call --------------------------------
# The compiled and Triton kernels take absent weights as None (every weight 1) and sigma as either
# a (B, K) view with any strides (a (K,) sigma expanded, not copied) or None plus one float, so a
# call with a float sigma and no weights launches nothing besides the kernel itself.


def keypoint_arguments(keypoints, weights):
    """Like :func:`normalise_keypoints`, but absent weights stay None (no ``torch.ones`` launch).

    Returns ``(keypoints (B, N, K, 2), weights (B, N, K) or None, had_instance_axis)``; the tensors
    are contiguous and of the compute dtype (float64 for float64 keypoints, else float32)."""
    if weights is not None:
        return normalise_keypoints(keypoints, weights)
    check_tensor("keypoints", keypoints, dims=(3, 4))
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints: expected the last dimension to be 2 (x, y), got shape {tuple(keypoints.shape)}")
    compute = torch.float64 if keypoints.dtype == torch.float64 else torch.float32
    has_instances = keypoints.dim() == 4
    if not has_instances:
        keypoints = keypoints.unsqueeze(1)
    return keypoints.to(compute).contiguous(), None, has_instances


def sigma_argument(sigma, batch: int, num_keypoints: int, dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor | None, float]:
    """A float, (K,) or (B, K) sigma -> ``(tensor, value)`` as the kernels take it.

    A tensor sigma becomes a ``(B, K)`` view of ``dtype`` (expanded, not copied; autograd history
    kept) and value 1.0; a float becomes ``(None, float(sigma))``. Values are checked on CPU tensors only (a GPU read would sync the host); a bad
    sigma in a CUDA tensor is the caller's error: its maps come out NaN or zero.
    """
    if isinstance(sigma, torch.Tensor):
        if sigma.dim() == 0:
            sigma = sigma.reshape(1, 1)
        check_tensor("sigma", sigma, dims=(1, 2))
        if sigma.device != device:
            raise ValueError(f"sigma: expected a tensor on {device} (the device of keypoints), got {sigma.device}")
        if sigma.dim() == 1 and sigma.shape[0] != num_keypoints and not (sigma.shape[0] == 1):
            raise ValueError(f"sigma: expected shape ({num_keypoints},) (one per keypoint), got {tuple(sigma.shape)}")
        if sigma.dim() == 2 and tuple(sigma.shape) not in ((batch, num_keypoints), (1, 1)):
            raise ValueError(f"sigma: expected shape ({batch}, {num_keypoints}) (per sample and keypoint), got {tuple(sigma.shape)}")
        if sigma.device.type == "cpu" and not compiling() and sigma.numel() > 0:
            bad = ~(torch.isfinite(sigma) & (sigma > SIGMA_FLOOR))
            if bool(bad.any()):
                raise ValueError(f"sigma: expected finite values > 0, got {sigma[bad].flatten()[0].item()!r} "
                                 f"(it must exceed {SIGMA_FLOOR:g})")
        return sigma.to(dtype).expand(batch, num_keypoints), 1.0
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma: expected a float or a tensor of shape (K,) or (B, K), got {_type_name(sigma)}")
    if not (float(sigma) > SIGMA_FLOOR and float(sigma) < float("inf")):
        raise ValueError(f"sigma: expected a finite value > 0, got {sigma!r} (it must exceed {SIGMA_FLOOR:g})")
    return None, float(sigma)
