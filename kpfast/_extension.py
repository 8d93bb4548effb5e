"""Loading the compiled extension, ``kpfast._C``, and saying clearly when it is unusable.

``import kpfast`` always works: when the extension is missing, fails to load, or was built
against another torch, the compiled backends (``cpu``, ``cuda``) report why they cannot run,
``backend="auto"`` falls back to the pure-PyTorch reference, and one warning says so.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

_loaded = False
_has_cuda_kernels = False
_unavailable_reason: str | None = None


def _load() -> None:
    global _loaded, _has_cuda_kernels, _unavailable_reason
    if importlib.util.find_spec("kpfast._C") is None:
        _unavailable_reason = (
            "the compiled extension kpfast._C is not built "
            "(install with `pip install --no-build-isolation .`, or build in place with "
            "`python setup.py build_ext --inplace`)"
        )
        return
    try:
        from kpfast import _C  # noqa: F401  (loading the library registers torch.ops.kpfast)
    except (ImportError, OSError) as error:
        # Undefined symbols are the usual sign of a binary built for another torch.
        _unavailable_reason = (
            f"the compiled extension kpfast._C failed to load ({error}); it was probably "
            f"built against another torch than the installed {torch.__version__}: rebuild it"
        )
        return
    info = dict(item.split("=", 1) for item in torch.ops.kpfast.build_info().split(";"))
    running = torch.__version__.split("+")[0]
    if info.get("torch") != running:
        _unavailable_reason = (
            f"the compiled extension was built against torch {info.get('torch')} but torch {running} "
            "is installed: rebuild it with `pip install --no-build-isolation .`"
        )
        return
    _loaded = True
    _has_cuda_kernels = info.get("cuda") == "1"


def is_loaded() -> bool:
    """True when ``torch.ops.kpfast`` holds the compiled CPU (and maybe CUDA) kernels."""
    return _loaded


def has_cuda_kernels() -> bool:
    """True when the loaded extension was compiled with its CUDA kernels."""
    return _loaded and _has_cuda_kernels


def unavailable_reason() -> str | None:
    """Why the compiled backends cannot run, or None when they can."""
    return _unavailable_reason


_load()
if _unavailable_reason is not None:
    warnings.warn(
        f"kpfast: compiled backends unavailable: {_unavailable_reason}. "
        "Falling back to the pure-PyTorch reference for backend='auto'.",
        RuntimeWarning,
        stacklevel=2,
    )
