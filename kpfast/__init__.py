"""kpfast: fused heatmap kernels and a Lite-HRNet trainer for top-down human keypoint detection."""

from kpfast import _extension
from kpfast.backends import BACKENDS, BackendUnavailableError, default_backend, use_backend
from kpfast.ops import *  # noqa: F401,F403  (the public ops, re-exported)
from kpfast.ops import __all__ as _ops_all

__version__ = "0.1.0"


def extension_status() -> dict:
    """Whether the compiled backends can run here, and why not when they cannot."""
    return {
        "loaded": _extension.is_loaded(),
        "cuda_kernels": _extension.has_cuda_kernels(),
        "reason": _extension.unavailable_reason(),
    }


__all__ = ["BACKENDS", "BackendUnavailableError", "default_backend", "extension_status", "use_backend", *_ops_all]
