"""Pure-PyTorch reference implementations of every kpfast op.

Short, obviously correct, differentiable by autograd, and the yardstick every kernel is tested
against. They take the normalised inputs the public ops prepare (see kpfast/ops)."""

from kpfast.reference.decode import decode_heatmaps, find_peaks, soft_argmax
from kpfast.reference.loss import heatmap_loss, heatmap_loss_maps, reduce_map_losses
from kpfast.reference.render import gaussian_maps, render_heatmaps

__all__ = ["decode_heatmaps", "find_peaks", "gaussian_maps", "heatmap_loss", "heatmap_loss_maps", "reduce_map_losses",
           "render_heatmaps", "soft_argmax"]
