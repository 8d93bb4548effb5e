"""Pure-PyTorch reference implementations of every kpfast op.

Short, obviously correct, differentiable by autograd, and the yardstick every kernel is tested
against. They take the normalised inputs the public ops prepare (see kpfast/ops)."""

from kpfast.reference.render import gaussian_maps, render_heatmaps

__all__ = ["gaussian_maps", "render_heatmaps"]

# Op 3: decoding.
from kpfast.reference.decode import decode_heatmaps, find_peaks, soft_argmax  # noqa: E402

__all__ += ["decode_heatmaps", "find_peaks", "soft_argmax"]
