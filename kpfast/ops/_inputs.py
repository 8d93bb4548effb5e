"""One validated inputs object per op: what a public op checked, in the form its kernels take.

``build`` runs every argument check of the op (kpfast/ops/_checks.py: one-line errors naming the
argument) and normalises the arguments as the kernels take them (docs/design.md: absent weights
stay None, a float sigma stays a float, a (K,) sigma is an expanded view, so a call is one kernel
launch). ``kernel_args`` is the positional list of the op's schema (csrc/library.cpp), the same
for the compiled, Triton and reference implementations. The backend registry
(kpfast/backends.py) reads the object to say why a backend cannot run it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kpfast import vocabulary
from kpfast.ops._checks import (FLOAT_DTYPES, HEATMAP_DTYPES, MAX_BLUR_KERNEL, check_choice, check_float,
                                check_heatmaps, check_int, check_odd, check_output_elements, check_same_device,
                                check_size, check_tensor, keypoint_arguments, sigma_argument, whole_map_distance,
                                whole_map_window)


@dataclass(frozen=True)
class RenderInputs:
    keypoints: torch.Tensor  # (B, N, K, 2), contiguous, compute dtype
    weights: torch.Tensor | None  # (B, N, K) or None: every weight 1
    sigma: torch.Tensor | None  # (B, K) view or None: sigma_value everywhere
    sigma_value: float
    height: int
    width: int
    encoding: str
    dtype: torch.dtype
    has_instances: bool  # the caller passed (B, N, K, 2): weights_out keeps the N axis

    @classmethod
    def build(cls, keypoints, weights, size, sigma, encoding, dtype) -> "RenderInputs":
        keypoints4, weights3, has_instances = keypoint_arguments(keypoints, weights)
        height, width = check_size("size", size)
        check_choice("encoding", encoding, vocabulary.ENCODINGS)
        compute = keypoints4.dtype
        allowed = HEATMAP_DTYPES + ((torch.float64,) if compute == torch.float64 else ())
        if dtype not in allowed:
            raise TypeError(f"dtype: expected one of {[str(d) for d in allowed]}, got {dtype}")
        batch, _, num_keypoints = keypoints4.shape[:3]
        check_output_elements("size", (batch, num_keypoints, height, width))
        sigma2, sigma_value = sigma_argument(sigma, batch, num_keypoints, compute, keypoints4.device)
        return cls(keypoints4, weights3, sigma2, sigma_value, height, width, encoding, dtype, has_instances)

    @property
    def device(self) -> torch.device:
        return self.keypoints.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.keypoints.dtype

    def kernel_args(self) -> tuple:
        return (self.keypoints, self.weights, self.sigma, self.sigma_value, self.height, self.width, self.encoding,
                self.dtype)


@dataclass(frozen=True)
class LossOptions:
    """The loss settings, checked, with the kind's defaults (kpfast.vocabulary.LossKind) filled in."""

    kind: str
    alpha: float
    gamma: float
    beta: float
    keypoint_weight: float
    background_weight: float
    threshold: float
    l1_weight: float
    reduction: str

    @classmethod
    def build(cls, kind: str = "focal", alpha=None, gamma=2.0, beta=4.0, keypoint_weight=15.0,
              background_weight=1.0, threshold=0.1, l1_weight=None, reduction="mean") -> "LossOptions":
        check_choice("kind", kind, vocabulary.LOSS_KINDS)
        check_choice("reduction", reduction, vocabulary.REDUCTIONS)
        traits = vocabulary.loss_kind(kind)
        alpha = traits.default_alpha if alpha is None else alpha
        l1_weight = traits.default_l1_weight if l1_weight is None else l1_weight
        return cls(
            kind=kind,
            alpha=check_float("alpha", alpha, low=0.0, high=1.0 if traits.alpha_at_most_one else None),
            gamma=check_float("gamma", gamma, low=0.0),
            beta=check_float("beta", beta, low=0.0),
            keypoint_weight=check_float("keypoint_weight", keypoint_weight, low=0.0),
            background_weight=check_float("background_weight", background_weight, low=0.0),
            threshold=check_float("threshold", threshold),
            l1_weight=check_float("l1_weight", l1_weight, low=0.0),
            reduction=reduction,
        )

    @property
    def traits(self) -> vocabulary.LossKind:
        return vocabulary.loss_kind(self.kind)

    def as_dict(self) -> dict:
        return asdict(self)

    def kernel_args(self) -> tuple:
        """The schema's kind and its parameters (the reduction is applied in Python)."""
        return (self.kind, self.alpha, self.gamma, self.beta, self.keypoint_weight, self.background_weight,
                self.threshold, self.l1_weight)


@dataclass(frozen=True)
class LossInputs:
    pred: torch.Tensor  # (B, K, H, W), any strides
    keypoints: torch.Tensor  # (B, N, K, 2) float32, detached
    weights: torch.Tensor | None  # (B, N, K) float32, detached, or None
    sigma: torch.Tensor | None  # (B, K) float32 view, detached, or None
    sigma_value: float
    encoding: str
    options: LossOptions

    @classmethod
    def build(cls, pred, keypoints, weights, sigma, encoding, options: LossOptions) -> "LossInputs":
        check_tensor("pred", pred, dims=(4,), dtypes=HEATMAP_DTYPES)
        check_choice("encoding", encoding, vocabulary.ENCODINGS)
        check_tensor("keypoints", keypoints, dims=(3, 4))
        if weights is not None:
            check_tensor("weights", weights, dims=(keypoints.dim() - 1,))
        keypoints4, weights3, _ = keypoint_arguments(keypoints.detach(), None if weights is None else weights.detach())
        check_same_device("pred", pred, keypoints=keypoints4)
        batch, _, num_keypoints = keypoints4.shape[:3]
        if tuple(pred.shape[:2]) != (batch, num_keypoints):
            raise ValueError(f"pred: expected shape ({batch}, {num_keypoints}, H, W) to match keypoints, "
                             f"got {tuple(pred.shape)}")
        if isinstance(sigma, torch.Tensor):
            sigma = sigma.detach()
        # The loss kernels compute in float32 (no-ops for float32 inputs).
        weights3 = None if weights3 is None else weights3.float()
        sigma2, sigma_value = sigma_argument(sigma, batch, num_keypoints, torch.float32, pred.device)
        return cls(pred, keypoints4.float(), weights3, sigma2, sigma_value, encoding, options)

    @property
    def device(self) -> torch.device:
        return self.pred.device

    @property
    def num_maps(self) -> int:
        return self.pred.shape[0] * self.pred.shape[1]

    @property
    def pixels_per_map(self) -> int:
        return self.pred.shape[2] * self.pred.shape[3]

    def kernel_args(self) -> tuple:
        """The 14 arguments of ``heatmap_loss(pred, keypoints, weights, sigma, sigma_value, encoding, kind, ...)``."""
        return (self.pred, self.keypoints, self.weights, self.sigma, self.sigma_value, self.encoding,
                *self.options.kernel_args())


@dataclass(frozen=True)
class DecodeInputs:
    heatmaps: torch.Tensor  # (B, K, H, W), contiguous, detached
    method: str
    blur_kernel: int
    window: int  # clamped to the whole map

    @classmethod
    def build(cls, heatmaps, method, blur_kernel, window) -> "DecodeInputs":
        check_heatmaps(heatmaps)
        check_choice("method", method, vocabulary.DECODE_METHODS)
        blur_kernel = check_odd("blur_kernel", blur_kernel, 1, MAX_BLUR_KERNEL)
        window = whole_map_window(check_odd("window", window, 1), *heatmaps.shape[-2:])
        return cls(heatmaps.detach().contiguous(), method, blur_kernel, window)

    @property
    def device(self) -> torch.device:
        return self.heatmaps.device

    def kernel_args(self) -> tuple:
        return (self.heatmaps, self.method, self.blur_kernel, self.window)


@dataclass(frozen=True)
class SoftArgmaxInputs:
    heatmaps: torch.Tensor  # (B, K, H, W), contiguous, differentiable
    beta: float

    @classmethod
    def build(cls, heatmaps, beta) -> "SoftArgmaxInputs":
        check_heatmaps(heatmaps, FLOAT_DTYPES)
        beta = check_float("beta", beta, low=0, low_open=True)
        return cls(heatmaps.contiguous(), beta)

    @property
    def device(self) -> torch.device:
        return self.heatmaps.device

    def kernel_args(self) -> tuple:
        return (self.heatmaps, self.beta)


@dataclass(frozen=True)
class PeakInputs:
    heatmaps: torch.Tensor  # (B, K, H, W), contiguous, detached
    threshold: float
    min_distance: int  # clamped to the whole map
    max_peaks: int

    @classmethod
    def build(cls, heatmaps, threshold, min_distance, max_peaks) -> "PeakInputs":
        check_heatmaps(heatmaps)
        threshold = check_float("threshold", threshold, finite=False)
        min_distance = whole_map_distance(check_int("min_distance", min_distance, low=0), *heatmaps.shape[-2:])
        max_peaks = check_int("max_peaks", max_peaks, low=1)
        check_output_elements("max_peaks", (*heatmaps.shape[:2], max_peaks, 2))
        return cls(heatmaps.detach().contiguous(), threshold, min_distance, max_peaks)

    @property
    def device(self) -> torch.device:
        return self.heatmaps.device

    def kernel_args(self) -> tuple:
        return (self.heatmaps, self.threshold, self.min_distance, self.max_peaks)
