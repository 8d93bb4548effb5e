"""The backend registry: which implementation of an op runs, and why another cannot.

Every op has four backends (DESIGN.md): ``torch`` (the pure-PyTorch reference), ``cpu`` and
``cuda`` (the compiled extension) and ``triton``. The choice, strongest first:

1. the op's ``backend=`` argument;
2. the innermost :func:`use_backend` context;
3. the ``KPFAST_BACKEND`` environment variable;
4. ``"auto"``: on CUDA tensors the backend the benchmarks on that device show faster (each op
   records its order with the figure behind it), on CPU tensors ``cpu``, falling back to
   ``torch`` only when the extension is not built, with one warning.

A backend asked for explicitly that cannot run the given inputs raises
:class:`BackendUnavailableError` saying why, e.g. ``"cuda: tensor is on cpu"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from kpfast import _extension

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

    ``implementations`` maps a backend name to a callable taking the op's normalised inputs.
    ``input_checks`` maps a backend name to a callable returning why that backend cannot run
    those inputs (beyond the device rules), or None. ``auto_cuda_order`` is the order ``auto``
    tries on CUDA tensors, set from the benchmarks.
    """

    op_name: str
    implementations: dict[str, Callable] = field(default_factory=dict)
    input_checks: dict[str, Callable[..., str | None]] = field(default_factory=dict)
    auto_cuda_order: Sequence[str] = ("cuda", "triton")

    def why_not(self, backend: str, device: torch.device, **facts) -> str | None:
        if backend not in self.implementations:
            return f"{backend}: {self.op_name} has no {backend} implementation"
        reason = _device_reason(backend, device)
        if reason is None and backend in self.input_checks:
            reason = self.input_checks[backend](**facts)
            if reason is not None:
                reason = f"{backend}: {reason}"
        return reason

    def select(self, requested: str | None, device: torch.device, **facts) -> Callable:
        """The implementation to run, following the rules in this module's docstring."""
        name = default_backend() if requested is None else _check_name(requested, "backend")
        if name != "auto":
            reason = self.why_not(name, device, **facts)
            if reason is not None:
                raise BackendUnavailableError(f"{self.op_name}: backend {name!r} cannot run these inputs: {reason}")
            return self.implementations[name]
        candidates = list(self.auto_cuda_order) if device.type == "cuda" else ["cpu"]
        reasons = []
        for candidate in candidates:
            reason = self.why_not(candidate, device, **facts)
            if reason is None:
                return self.implementations[candidate]
            reasons.append(reason)
        _warn_fallback(self.op_name, reasons)
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
