"""Pure-PyTorch reference implementations of every kpfast op.

Short, obviously correct, differentiable by autograd, and the yardstick every kernel is tested
against. They take the normalised inputs the public ops prepare (see kpfast/ops)."""

from kpfast.reference.render import gaussian_maps, render_heatmaps

__all__ = ["gaussian_maps", "render_heatmaps"]

# Op 2: fused heatmap loss.
from kpfast.reference.loss import heatmap_loss, heatmap_loss_maps, reduce_map_losses  # noqa: E402

__all__ += ["heatmap_loss", "heatmap_loss_maps", "reduce_map_losses"]
