"""Loading the compiled extension, ``kpfast._C``, and saying clearly when it is unusable.

``kpfast._C`` is built on the LibTorch stable ABI: a binary built against any torch >= its
target version (2.11) loads in every torch >= that target, so only a torch OLDER than the
target is refused. ``import kpfast`` always works: when the extension is missing, fails to load,
or targets a newer torch than the installed one, the compiled backends (``cpu``, ``cuda``) report why they cannot run,
``backend="auto"`` falls back to the pure-PyTorch reference, and one warning says so.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

from kpfast.versions import minor

_loaded = False
_has_cuda_kernels = False
_unavailable_reason: str | None = None


def _load() -> None:
    global _loaded, _has_cuda_kernels, _unavailable_reason
    if importlib.util.find_spec("kpfast._C") is None:
        _unavailable_reason = (
            "the compiled extension kpfast._C is not built "
            "(install with `pip install .`, or build in place with "
            "`python setup.py build_ext --inplace`)"
        )
        return
    try:
        from kpfast import _C  # noqa: F401  (loading the library registers torch.ops.kpfast)
    except (ImportError, OSError) as error:
        # Undefined symbols are the usual sign of a binary built for another torch.
        _unavailable_reason = (
            f"the compiled extension kpfast._C failed to load ({error}); rebuild it with `pip install .` "
            f"(it must target a torch <= the installed {torch.__version__})"
        )
        return
    info = build_info()
    running = minor(torch.__version__)
    target = minor(info.get("target", ""))
    if info.get("abi") != "stable" or not target:
        _unavailable_reason = (
            f"the compiled extension does not say which stable ABI it targets (build info {info}): "
            "it is an old build; rebuild it with `pip install .`"
        )
        return
    if running < target:
        _unavailable_reason = (
            f"the compiled extension targets torch >= {info['target']} but torch {torch.__version__} "
            "is installed: upgrade torch or rebuild with `pip install .`"
        )
        return
    _loaded = True
    _has_cuda_kernels = info.get("cuda") == "1"


def build_info() -> dict[str, str]:
    """How the loaded ``kpfast._C`` was built: ``abi`` ("stable"), ``target`` (the oldest torch it
    loads in, "2.11"), ``torch`` (the torch it was compiled against), ``cuda`` ("1" with CUDA
    kernels) and ``arches`` (TORCH_CUDA_ARCH_LIST of those kernels, "_"-separated). Empty when
    the extension is not loaded."""
    if importlib.util.find_spec("kpfast._C") is None or not hasattr(torch.ops.kpfast, "build_info"):
        return {}
    return dict(item.split("=", 1) for item in torch.ops.kpfast.build_info().split(";"))


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
