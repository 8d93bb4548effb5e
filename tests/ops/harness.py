"""The shared test harness of the ops (the way torchvision's RoIOpTester serves every RoI op).

* Backends: :func:`backend_params` parametrizes a test over the kernel backends (and optionally
  the ``torch`` reference), each skipped with the registry's own reason when it cannot run here.
* Input factories, one of each: keypoints with border / outside / invisible / non-finite entries,
  sigma in its three forms, predictions, smooth Gaussian maps and hand-made edge-case maps
  (ties, borders, constant, negative), and maps with NaN / +inf / -inf pixels.
* One tolerance table, :data:`TOLERANCE`.
* :class:`OpCase`: what an op plugs into the generic tests of tests/ops/test_common.py (parity of
  values and gradients against the reference, half precision, empty batches, non-contiguous
  inputs, opcheck, torch.compile(fullgraph=True)). Each op's own behaviour is tested in its file.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from kpfast import backends, vocabulary

H, W = 13, 11  # odd, non-square maps catch row/column mix-ups
KERNEL_BACKENDS = ("cpu", "cuda", "triton")

# Tolerances, in one place. "value"/"grad": relative tolerance of a kernel backend against the
# torch reference in float32; half dtypes: the output (or gradient) is rounded once to that dtype
# by every backend, so they may differ by one unit in its last place.
TOLERANCE = {
    "render": {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3},
    "render_grad": 1e-4,
    "loss": 1e-5,
    "loss_grad": {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 8e-3},
    "decode": 1e-4,  # px, docs/design.md: kernels agree with the reference algorithm to 1e-4 px
    "soft_argmax": {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4},
    "soft_argmax_grad": 1e-4,
    # Half maps: the gradient is rounded once to the half dtype; p = exp(beta h - lse) carries the
    # rounding of the half input, hence more than one unit in the last place.
    "soft_argmax_grad_half": {torch.float16: 2e-3, torch.bfloat16: 1e-2},
    "compiled": 1e-6,  # torch.compile(fullgraph=True) against the same backend run eagerly
    # Two different compiled kernels of one backend that compute the same thing (the fused and the
    # separate loss forward, the HAS_WEIGHTS / HAS_SIGMA variants, a stride-1 specialisation):
    # on a GPU the compiler decides FMA contraction per kernel, so they may differ by an ulp of
    # each product; relative to the outputs' scale. Bit-identity is asserted only where one
    # kernel runs twice.
    "kernel_variants": 1e-6,
}


def assert_close_across_kernels(got, expected, what=""):
    """``got`` and ``expected`` from two different compiled kernels: within
    TOLERANCE["kernel_variants"] of the expected values' scale (see there)."""
    rtol = TOLERANCE["kernel_variants"]
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def kernel_device(backend: str) -> torch.device:
    """The device a backend's tests use: CUDA when there is one (cpu, and triton without a GPU: the CPU)."""
    if backend == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _backend_param(name: str):
    device = kernel_device(name)
    if name == "cuda" and not torch.cuda.is_available():
        reason = "cuda: no GPU on this machine"
    else:
        reason = backends.unavailable_reason(name, device)
    marks = [pytest.mark.skipif(reason is not None, reason=str(reason))]
    if name == "triton":
        marks.append(pytest.mark.triton)
    return pytest.param((name, device), id=name, marks=marks)


def backend_params(include_torch: bool = False) -> list:
    """``(backend, device)`` parameters: the kernel backends (and ``torch``), skipped with a reason."""
    names = (("torch",) if include_torch else ()) + KERNEL_BACKENDS
    return [_backend_param(name) for name in names]


def kernel_backends_and_torch() -> list:
    return backend_params(include_torch=True)


# ----------------------------------------------------------------------------- keypoints
def edge_case_keypoints(batch=3, instances=None, num_keypoints=9, seed=0, device="cpu", height=H, width=W):
    """Keypoints ``(B, K, 2)`` / ``(B, N, K, 2)`` and weights covering the interior, borders, corners,
    partly and wholly outside the map, invisible (weight 0.3), NaN / +inf / -inf coordinates,
    a weight above 1 and, with instances, a map whose every instance is invisible."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch,) + ((instances,) if instances else ()) + (num_keypoints,)
    xy = torch.rand(shape + (2,), generator=generator) * torch.tensor([width + 6.0, height + 6.0]) - 3.0
    # Keep sub-pixel parts away from .5, where the MSRA rounding (and so the reference) jumps.
    xy = torch.where((xy.frac().abs() - 0.5).abs() < 0.02, xy + 0.1, xy)
    weights = torch.ones(shape)
    flat_xy, flat_w = xy.view(-1, 2), weights.view(-1)
    specials = [(0.0, 0.0), (width - 1.0, height - 1.0), (-2.2, 5.3), (width + 1.7, 4.2), (-1.3, 4.2),
                (-9.0, -9.0), (60.0, 3.0)]
    for i, (x, y) in enumerate(specials[: flat_xy.shape[0]]):
        flat_xy[i] = torch.tensor([x, y])
    n = flat_xy.shape[0]
    flat_w[n // 2] = 0.3  # invisible
    flat_xy[n // 2 + 1, 0] = float("nan")
    flat_xy[n // 2 + 2, 1] = float("inf")
    flat_xy[n // 2 + 3, 0] = -float("inf")
    flat_w[n // 2 + 4] = 2.0  # weights above 1 are kept as given
    if instances and batch > 1:
        weights[1, :, 0] = 0.0  # a map whose every instance is invisible
    return xy.to(device), weights.to(device)


def sigma_forms(batch, num_keypoints, device):
    """sigma as a float, per keypoint ``(K,)`` and per sample ``(B, K)``."""
    generator = torch.Generator().manual_seed(1)
    return {
        "float": 1.7,
        "per_keypoint": (torch.rand(num_keypoints, generator=generator) * 2 + 0.8).to(device),
        "per_sample": (torch.rand(batch, num_keypoints, generator=generator) * 2 + 0.8).to(device),
    }


def predictions(kind, batch, num_keypoints, device, dtype=torch.float32, seed=3, height=H, width=W):
    """Loss predictions: probabilities for mse, logits (std 3) for the logit kinds."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "mse":
        pred = torch.rand(batch, num_keypoints, height, width, generator=generator)
    else:
        pred = torch.randn(batch, num_keypoints, height, width, generator=generator) * 3
    return pred.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- heatmaps
def gaussian_maps(batch, num_keypoints, height, width, seed=0, noise=0.0, device="cpu"):
    """Smooth maps: one Gaussian per map at a random sub-pixel centre (some near the borders),
    random sigma and amplitude, plus optional uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, num_keypoints)
    cx = torch.rand(shape, generator=generator) * (width + 1) - 1.0
    cy = torch.rand(shape, generator=generator) * (height + 1) - 1.0
    sigma = torch.rand(shape, generator=generator) * 1.5 + 1.2
    amplitude = torch.rand(shape, generator=generator) * 0.8 + 0.3
    cols = torch.arange(width, dtype=torch.float32)
    rows = torch.arange(height, dtype=torch.float32)
    d2 = (cols - cx[..., None, None]) ** 2 + (rows[:, None] - cy[..., None, None]) ** 2
    maps = amplitude[..., None, None] * torch.exp(-d2 / (2 * sigma[..., None, None] ** 2))
    if noise:
        maps = maps + noise * (torch.rand(maps.shape, generator=generator) - 0.5)
    return maps.to(device)


def special_maps(height, width, device="cpu"):
    """Edge cases, one per map (1, M, H, W): all zero, negative, ties, peaks on corners and within
    1-2 px of the borders, two equal peaks, a constant map."""
    maps = []
    blank = torch.zeros(height, width)

    def with_peaks(points, base=None):
        m = (blank.clone() if base is None else base.clone())
        rows = torch.arange(height, dtype=torch.float32)[:, None]
        cols = torch.arange(width, dtype=torch.float32)
        for x, y, a in points:
            m = torch.maximum(m, a * torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 4.5))
        return m

    maps.append(blank.clone())                                       # all zero: coords -1, score 0
    maps.append(-1.0 - torch.rand(height, width, generator=torch.Generator().manual_seed(3)))  # negative
    tie = blank.clone()
    tie[2, 7] = tie[5, 3] = tie[9, 1] = 0.8                          # ties: the first in row-major order
    maps.append(tie)
    maps.append(with_peaks([(0, 0, 1.0)]))                           # corner
    maps.append(with_peaks([(width - 1, height - 1, 0.9)]))          # opposite corner
    maps.append(with_peaks([(1, height // 2, 0.7)]))                 # 1 px from the left border
    maps.append(with_peaks([(width // 2, 1.3, 0.7)]))                # near the top border
    maps.append(with_peaks([(width - 3.2, height - 3.4, 0.7)]))      # 2 px from the far borders
    maps.append(with_peaks([(2.0, 2.0, 0.6), (width - 3.0, 5.0, 0.6)]))  # two equal peaks
    maps.append(torch.full((height, width), 0.5))                    # a constant map
    return torch.stack(maps)[None].to(device)


def decode_test_maps(device, seed=0, height=H, width=W):
    """Smooth, noisy and edge-case maps in one (B, K, H, W) batch: what the decoders are tested on."""
    smooth = gaussian_maps(2, 5, height, width, seed=seed)
    noisy = gaussian_maps(1, 5, height, width, seed=seed + 1, noise=0.05)
    special = special_maps(height, width)
    special = special[:, : 5 * (special.shape[1] // 5)].reshape(-1, 5, height, width)
    return torch.cat([smooth, noisy, special]).to(device)


def non_finite_maps(height=H, width=W, device="cpu"):
    """(1, 6, H, W) maps with NaN / +inf / -inf at the argmax, beside it and filling a whole map."""
    base = gaussian_maps(1, 6, height, width, seed=7)[0]
    maps = []
    for k, value in enumerate((float("nan"), float("inf"), -float("inf"))):
        m = base[k].clone()
        index = int(m.argmax())
        y, x = divmod(index, width)
        m[y, x] = value                                  # at the argmax
        m2 = base[k + 3].clone()
        y2, x2 = divmod(int(m2.argmax()), width)
        m2[y2, min(x2 + 1, width - 1)] = value           # beside it
        maps += [m, m2]
    return torch.stack(maps)[None].to(device)


# ----------------------------------------------------------------------------- op cases
class OpCase:
    """One op as the generic tests see it. Subclasses say how to build inputs and call the op.

    ``inputs(device, dtype, batch)`` returns the op's positional tensors (``batch`` may be 0);
    ``call(backend, *tensors)`` returns a tuple of output tensors; ``grad_inputs`` are the indices
    of the tensors the op is differentiable w.r.t.; ``tolerance(dtype)`` the absolute tolerance of
    the outputs against the reference, one float for all outputs or a tuple with one per output,
    multiplied by the outputs' scale (their largest finite magnitude, at least 1) unless
    ``absolute_tolerance`` (decoders: coordinates in pixels, scores exact); ``output_dtypes``, when
    set, the dtypes the outputs must have whatever the input dtype."""

    name = ""
    grad_inputs: tuple[int, ...] = ()
    half_dtypes = (torch.float16, torch.bfloat16)
    absolute_tolerance = False
    output_dtypes: tuple[torch.dtype, ...] | None = None

    def inputs(self, device, dtype, batch):
        raise NotImplementedError

    def call(self, backend, *tensors):
        raise NotImplementedError

    def tolerance(self, dtype) -> float:
        raise NotImplementedError

    def grad_tolerance(self) -> float:
        """Gradients against the reference's, in float32 (relative to their scale)."""
        raise NotImplementedError(f"{self.name} has grad_inputs but no gradient tolerance")

    def half_grad_tolerance(self, dtype) -> float | None:
        """Gradients of half inputs against the reference's (they must have the inputs' dtype);
        None: test_half_precision compares values only (the op's file tests its half gradients)."""
        return None

    def __repr__(self) -> str:
        return self.name


class RenderCase(OpCase):
    grad_inputs = (0, 1)  # keypoints, sigma

    def __init__(self, encoding):
        self.encoding = encoding
        self.name = f"render_heatmaps[{encoding}]"

    def inputs(self, device, dtype, batch):
        keypoints, weights = edge_case_keypoints(batch=max(batch, 1), instances=2, num_keypoints=5, device=device)
        keypoints, weights = keypoints[:batch], weights[:batch]
        sigma = sigma_forms(max(batch, 1), 5, device)["per_keypoint"]
        return keypoints, sigma, weights

    def call(self, backend, keypoints, sigma, weights, dtype=torch.float32):
        from kpfast.ops import render_heatmaps

        return render_heatmaps(keypoints, weights, size=(H, W), sigma=sigma, encoding=self.encoding, dtype=dtype,
                               backend=backend)

    def tolerance(self, dtype):
        return TOLERANCE["render"][dtype]

    def grad_tolerance(self):
        return TOLERANCE["render_grad"]


class LossCase(OpCase):
    grad_inputs = (0,)  # pred
    output_dtypes = (torch.float32,)  # the loss is float32 also for half predictions

    def __init__(self, kind):
        self.kind = kind
        self.name = f"heatmap_loss[{kind}]"

    def inputs(self, device, dtype, batch):
        keypoints, weights = edge_case_keypoints(batch=max(batch, 2), num_keypoints=5, device=device)
        pred = predictions(self.kind, max(batch, 2), 5, device, dtype=dtype)
        return pred[:batch], keypoints[:batch], weights[:batch]

    def call(self, backend, pred, keypoints, weights):
        from kpfast.ops import heatmap_loss

        return (heatmap_loss(pred, keypoints, weights, sigma=1.7, kind=self.kind, reduction="none",
                             backend=backend),)

    def tolerance(self, dtype):
        return TOLERANCE["loss"]  # computed in float32 from the same (half) inputs

    def grad_tolerance(self):
        return TOLERANCE["loss_grad"][torch.float32]

    def half_grad_tolerance(self, dtype):
        return TOLERANCE["loss_grad"][dtype]


class DecodeCase(OpCase):
    name = "decode_heatmaps"
    absolute_tolerance = True
    output_dtypes = (torch.float32, torch.float32)  # coordinates, scores (also from half maps)

    def __init__(self, method):
        self.method = method
        self.name = f"decode_heatmaps[{method}]"

    def inputs(self, device, dtype, batch):
        maps = decode_test_maps(device)
        return (maps[:batch].to(dtype),)

    def call(self, backend, maps):
        from kpfast.ops import decode_heatmaps

        return decode_heatmaps(maps, self.method, backend=backend)

    def tolerance(self, dtype):
        return (TOLERANCE["decode"], 0.0)  # coordinates to 1e-4 px; scores are copied map values: exact


class SoftArgmaxCase(OpCase):
    name = "soft_argmax"
    grad_inputs = (0,)
    output_dtypes = (torch.float32, torch.float32)  # coordinates, scores (also from half maps)

    def inputs(self, device, dtype, batch):
        return (decode_test_maps(device)[:batch].to(dtype),)

    def call(self, backend, maps):
        from kpfast.ops import soft_argmax

        return soft_argmax(maps, beta=3.0, backend=backend)

    def tolerance(self, dtype):
        return (TOLERANCE["soft_argmax"][dtype], 0.0)  # scores are the maps' maxima: exact

    def grad_tolerance(self):
        return TOLERANCE["soft_argmax_grad"]

    def half_grad_tolerance(self, dtype):
        return TOLERANCE["soft_argmax_grad_half"][dtype]


class FindPeaksCase(OpCase):
    name = "find_peaks"

    def inputs(self, device, dtype, batch):
        return (decode_test_maps(device)[:batch].to(dtype),)

    def call(self, backend, maps):
        from kpfast.ops import find_peaks

        return find_peaks(maps, 0.1, 1, 6, backend=backend)

    def tolerance(self, dtype):
        return 0.0  # integer positions and copied scores: exact


OP_CASES = [
    *(RenderCase(encoding) for encoding in vocabulary.ENCODINGS),
    *(LossCase(kind) for kind in vocabulary.LOSS_KINDS),
    *(DecodeCase(method) for method in vocabulary.DECODE_METHODS),
    SoftArgmaxCase(),
    FindPeaksCase(),
]


class RecordOps(TorchDispatchMode):
    """Every tensor op that reaches the dispatcher below autograd, with its tensor arguments: the
    one-launch-per-call tests (docs/design.md, Performance) check that a call runs its kernel op and
    views only, never a fill, cast or copy of an argument."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        self.calls.append((func, tensors))
        return func(*args, **kwargs)

    @property
    def names(self) -> list[str]:
        return [str(func) for func, _ in self.calls]
