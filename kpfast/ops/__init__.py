"""kpfast's public ops: fused heatmap rendering, loss and decoding on four backends.

See docs/design.md for the contract. Every op takes ``backend=`` (``"auto"``, ``"torch"``, ``"cpu"``,
``"cuda"``, ``"triton"``); :func:`kpfast.use_backend` and ``KPFAST_BACKEND`` set the default.
"""

from kpfast.ops.decode import decode_heatmaps, find_peaks, flip_merge, soft_argmax  # Op 3
from kpfast.ops.loss import heatmap_loss  # Op 2
from kpfast.ops.render import adaptive_sigma, render_heatmaps  # Op 1

__all__ = ["adaptive_sigma", "decode_heatmaps", "find_peaks", "flip_merge", "heatmap_loss", "render_heatmaps",
           "soft_argmax"]
