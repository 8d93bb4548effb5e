"""Argument checks shared by the public ops.

Every failure names the argument, the expected and the actual value, so that a bad call is
fixed from the message alone. Checks that would read tensor values (and so synchronise a GPU
or break a torch.compile graph) are skipped while compiling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HEATMAP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def compiling() -> bool:
    return torch.compiler.is_compiling()


def check_tensor(name: str, value, *, dims: Sequence[int], dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dim() not in dims:
        expected = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name}: expected a {expected} tensor, got shape {tuple(value.shape)}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {value.dtype}")


def check_same_device(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, value in others.items():
        if isinstance(value, torch.Tensor) and value.device != reference.device:
            raise ValueError(f"{name}: expected a tensor on {reference.device} (the device of {reference_name}), got {value.device}")


def check_size(name: str, size) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"{name}: expected (H, W) as two ints, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"{name}: expected H >= 1 and W >= 1, got ({height}, {width})")
    return height, width


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def normalise_keypoints(keypoints: torch.Tensor, weights: torch.Tensor | None):
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


def normalise_sigma(sigma, batch: int, num_keypoints: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A float, (K,) or (B, K) sigma -> a contiguous (B, K) tensor (keeping autograd history)."""
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
        if not compiling() and sigma.numel() > 0:
            bad = ~(torch.isfinite(sigma) & (sigma > 0))
            if bool(bad.any()):
                raise ValueError(f"sigma: expected finite values > 0, got {sigma[bad].flatten()[0].item()!r}")
        return sigma.to(dtype).expand(batch, num_keypoints).contiguous()
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma: expected a float or a tensor of shape (K,) or (B, K), got {type(sigma).__name__}")
    if not (float(sigma) > 0 and float(sigma) < float("inf")):
        raise ValueError(f"sigma: expected a finite value > 0, got {sigma!r}")
    return torch.full((batch, num_keypoints), float(sigma), dtype=dtype, device=device)
