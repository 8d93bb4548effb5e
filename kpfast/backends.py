"""The backend registry: which implementation of an op runs, and why another cannot.

Every op has four backends (docs/design.md): ``torch`` (the pure-PyTorch reference), ``cpu`` and
``cuda`` (the compiled extension) and ``triton``. The choice, strongest first:

1. the op's ``backend=`` argument;
2. the innermost :func:`use_backend` context;
3. the ``KPFAST_BACKEND`` environment variable;
4. ``"auto"``: the order of :data:`AUTO_TABLE` for the op and the device kind (``cpu`` on CPU
   tensors; ``cuda``/``triton`` on CUDA tensors, in the order the benchmarks on a GPU show faster,
   each entry recording its figure or, until a GPU has measured it, its written reason), falling
   back to ``torch`` only when no listed backend can run, with one warning.

A backend asked for explicitly that cannot run the given inputs raises
:class:`BackendUnavailableError` saying why, e.g. ``"cuda: tensor is on cpu"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from kpfast import _cuda_compat, _extension

BACKENDS = ("torch", "cpu", "cuda", "triton")
ENV_VAR = "KPFAST_BACKEND"

# The context-manager stack. A plain module-level list (not a ContextVar) so that torch.compile
# can trace the selection without a graph break; like torch.backends flags it is process-wide.
_backend_stack: list[str] = []
_warned_fallback = False


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run these inputs; the message says why."""


def _check_name(name: str, source: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"{source}: expected one of {('auto',) + BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run kpfast ops inside the block on backend ``name`` unless a call names its own."""
    _backend_stack.append(_check_name(name, "use_backend(name)"))
    try:
        yield
    finally:
        _backend_stack.pop()


def default_backend() -> str:
    """The backend used when an op is called with ``backend=None``."""
    if _backend_stack:
        return _backend_stack[-1]
    env = os.environ.get(ENV_VAR)
    if env:
        return _check_name(env, f"environment variable {ENV_VAR}")
    return "auto"


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_triton_installed: bool | None = None


def triton_available() -> bool:
    global _triton_installed
    if _triton_installed is None:
        _triton_installed = importlib.util.find_spec("triton") is not None
    return _triton_installed


@dataclass(frozen=True)
class AutoChoice:
    """The order ``auto`` tries the kernel backends in, for one op on one device kind, and why."""

    order: tuple[str, ...]
    evidence: str  # "measured: ..." (a file under benchmarks/results/) or "provisional: ..." (the reason)


_CPU_RESULTS = "benchmarks/results/cpu-amd-epyc-2t.json (AMD EPYC, 2 threads, torch 2.14.1)"
_NO_GPU_RUN = "provisional: no GPU has measured this op (benchmarks/results/ holds CPU runs only)"

# ``auto`` per op and device kind. Each entry names the measurement behind it or, until a GPU has
# measured the op, the reason for the provisional order. Replace a provisional entry with the
# figure as soon as benchmarks/results/ holds a GPU run (see benchmarks/report.py).
AUTO_TABLE: dict[tuple[str, str], AutoChoice] = {
    # --- CPU: the cpu kernels against the best of torch eager / torch.compile of the reference.
    ("render_heatmaps", "cpu"): AutoChoice(("cpu",), f"measured: {_CPU_RESULTS}: faster in 7 of 8 cases, median "
                                                      "74x; a tie (0.99x) at B=256 96x72 float32 udp"),
    ("heatmap_loss", "cpu"): AutoChoice(("cpu",), f"measured: {_CPU_RESULTS}: faster in 8 of 8 fwd+bwd cases, "
                                                   "4.3x to 36x"),
    ("decode_heatmaps", "cpu"): AutoChoice(("cpu",), f"measured: {_CPU_RESULTS}: faster or equal in 23 of 23 "
                                                      "cases, median 11x (argmax/quarter about 1-2.5x, dark/udp "
                                                      "up to 296x)"),
    ("soft_argmax", "cpu"): AutoChoice(("cpu",), f"measured: {_CPU_RESULTS}: faster in 9 of 10 cases, median 2x; "
                                                  "slower (0.52x of eager) at B=32 64x48 float32 forward+backward, "
                                                  "the one case a per-size choice would send to torch"),
    ("find_peaks", "cpu"): AutoChoice(("cpu",), "provisional: not benchmarked; the kernel makes one pass per map "
                                                 "where the reference runs (2d+1)^2 / 2 shifted comparisons and a "
                                                 "full sort of every map"),
    # --- CUDA: cuda (C++ kernels) vs triton. No GPU measurement exists, so every order is
    # provisional, argued from the static figures of benchmarks/results/RESOURCES.md (SASS
    # instructions per element of each hot loop, bytes in flight; a model, not a measurement).
    ("render_heatmaps", "cuda"): AutoChoice(("cuda", "triton"), f"{_NO_GPU_RUN}. Both are store-bound; the CUDA "
                                            "forward writes 16-byte vectors from separable row/column factors "
                                            "(about 6.5 SASS instructions per fp32 pixel, no exp per pixel) and "
                                            "its C++ dispatch costs a few us per call where Triton's Python "
                                            "launcher costs tens: the 8 us target at B=64 64x48 is launch-bound"),
    ("heatmap_loss", "cuda"): AutoChoice(("cuda", "triton"), f"{_NO_GPU_RUN}. Same traffic (read pred once, write "
                                         "the gradient once); the CUDA kernels read 16-byte chunks against "
                                         "separable target tables in shared memory with fixed exponents for the "
                                         "published defaults, fewer instructions per pixel than the Triton "
                                         "tiles (RESOURCES.md), and launch with less host overhead"),
    ("decode_heatmaps", "cuda"): AutoChoice(("cuda", "triton"), f"{_NO_GPU_RUN}. The CUDA kernel gives each map a "
                                            "128-thread block with four 16-byte loads in flight per thread (about "
                                            "7.7 SASS instructions per fp32 element, one wave at B=64); the Triton "
                                            "program needs about 18 per element and a Python launch"),
    ("soft_argmax", "cuda"): AutoChoice(("cuda", "triton"), f"{_NO_GPU_RUN}. The CUDA forward is an online "
                                        "softmax by chunks of 16-byte loads (one exp per element, about 17 SASS "
                                        "instructions per element) against about 45 for the Triton program; "
                                        "both backwards are elementwise, CUDA's with 16-byte accesses"),
    ("find_peaks", "cuda"): AutoChoice(("cuda", "triton"), f"{_NO_GPU_RUN}. The CUDA kernel stages a map of up to "
                                       "7680 pixels in shared memory with 16-byte loads and tests windows there; "
                                       "the Triton kernel tests windows with shifted global (L1) loads"),
}


def auto_choice(op_name: str, device_type: str) -> AutoChoice:
    """The ``auto`` order for ``op_name`` on a device kind (``"cpu"``, ``"cuda"``), with its evidence."""
    try:
        return AUTO_TABLE[(op_name, device_type)]
    except KeyError:
        raise ValueError(f"op_name/device_type: expected one of {sorted(AUTO_TABLE)}, "
                         f"got {(op_name, device_type)!r}") from None


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device`` at all, whatever the op (None: it can)."""
    return _device_reason(_check_name(backend, "backend"), torch.device(device))


def _device_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device`` at all, whatever the op."""
    if backend == "torch":
        return None
    if backend in ("cpu", "cuda"):
        if not _extension.is_loaded():
            return f"{backend}: {_extension.unavailable_reason()}"
        if backend == "cuda" and not _extension.has_cuda_kernels():
            return "cuda: the extension was built without CUDA"
        if device.type != backend:
            return f"{backend}: tensor is on {device.type}"
        if backend == "cuda":  # the build's architectures and runtime against the device and driver
            return _cuda_compat.device_reason(device.index)
        return None
    # triton
    if not triton_available():
        return "triton: the triton package is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if triton_interpreting():
            return None
        return "triton: tensor is on cpu (Triton runs on CPU tensors only under TRITON_INTERPRET=1)"
    return f"triton: tensor is on {device.type}"


@dataclass
class OpBackends:
    """The implementations of one op and the rules for choosing among them.

    ``implementations`` maps a backend name to a callable taking the op's ``inputs.kernel_args()``
    (kpfast/ops/_inputs.py). ``input_checks`` maps a backend name to a callable returning why that
    backend cannot run given inputs (beyond the device rules), or None. ``auto`` tries the order of
    :data:`AUTO_TABLE` for the op and the tensors' device kind.
    """

    op_name: str
    implementations: dict[str, Callable] = field(default_factory=dict)
    input_checks: dict[str, Callable[[object], str | None]] = field(default_factory=dict)

    def not_supported_reasons(self, backend: str, device: torch.device, inputs=None) -> list[str]:
        """Every reason ``backend`` cannot run ``inputs`` on ``device`` (empty: it can), each
        prefixed with the backend's name (as xformers' ``not_supported_reasons``). Without
        ``inputs`` only the device and build rules are checked."""
        if backend not in self.implementations:
            return [f"{backend}: {self.op_name} has no {backend} implementation"]
        reasons = []
        device_reason = _device_reason(backend, device)
        if device_reason is not None:
            reasons.append(device_reason)
        if inputs is not None and backend in self.input_checks:
            input_reason = self.input_checks[backend](inputs)
            if input_reason is not None:
                reasons.append(f"{backend}: {input_reason}")
        return reasons

    def select(self, requested: str | None, device: torch.device, inputs=None) -> Callable:
        """The implementation to run, following the rules in this module's docstring."""
        name = default_backend() if requested is None else _check_name(requested, "backend")
        if name != "auto":
            reasons = self.not_supported_reasons(name, device, inputs)
            if reasons:
                raise BackendUnavailableError(f"{self.op_name}: backend {name!r} cannot run these inputs: "
                                              f"{'; '.join(reasons)}")
            return self.implementations[name]
        candidates = auto_choice(self.op_name, "cuda" if device.type == "cuda" else "cpu").order
        all_reasons = []
        for candidate in candidates:
            reasons = self.not_supported_reasons(candidate, device, inputs)
            if not reasons:
                return self.implementations[candidate]
            all_reasons.extend(reasons)
        _warn_fallback(self.op_name, all_reasons)
        return self.implementations["torch"]


def _warn_fallback(op_name: str, reasons: list[str]) -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"kpfast: {op_name} falls back to the pure-PyTorch reference ({'; '.join(reasons)}). "
            "This warning is shown once.",
            RuntimeWarning,
            stacklevel=3,
        )
