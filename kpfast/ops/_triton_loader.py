"""The one lazy loader of the Triton kernels, for every op.

Importing kpfast must not import triton (docs/design.md: the kernel layer needs only torch and
numpy), so the ``kpfast_triton`` ops are defined on the first Triton call of each kernel module:
import ``kpfast.triton.<module>`` (which defines the custom ops), then run the op's registration
module (fake kernels and autograd) for the ``kpfast_triton`` namespace. A plain module-level set,
not a lock or a ContextVar, so that torch.compile traces a loaded check without a graph break.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import torch

TRITON_NAMESPACE = "kpfast_triton"
COMPILED_NAMESPACE = "kpfast"

_loaded: set[str] = set()


def triton_ops(module: str, register: Callable[[str], None]):
    """``torch.ops.kpfast_triton`` once ``kpfast.triton.<module>`` is imported and ``register``
    (the op's ``_<op>_registration.register``) has run for the Triton namespace."""
    if module not in _loaded:
        importlib.import_module(f"kpfast.triton.{module}")
        register(TRITON_NAMESPACE)
        _loaded.add(module)
    return torch.ops.kpfast_triton


def backward_op_name(namespace: str, forward_name: str) -> str:
    """The backward op of ``forward_name`` in ``namespace``: private in the compiled schema
    (csrc/library.cpp: ``_render_heatmaps_backward``), public among the Triton ops."""
    prefix = "_" if namespace == COMPILED_NAMESPACE else ""
    return f"{prefix}{forward_name}_backward"


class DifferentiableOp(NamedTuple):
    """What a registration module needs of an op with a backward op: both qualified names (for
    ``torch.library.register_fake`` / ``register_autograd``) and the backward op to call."""

    forward: str
    backward: str
    backward_op: Callable


def differentiable_op(namespace: str, forward_name: str) -> DifferentiableOp:
    """``forward_name`` in ``namespace`` and its backward op (:func:`backward_op_name`)."""
    backward_name = backward_op_name(namespace, forward_name)
    return DifferentiableOp(f"{namespace}::{forward_name}", f"{namespace}::{backward_name}",
                            getattr(getattr(torch.ops, namespace), backward_name))
