"""nn.Modules built on kpfast's fused ops."""

from kpfast.nn.heatmap_loss import HeatmapLoss

__all__ = ["HeatmapLoss"]
