"""kpfast's public ops: fused heatmap rendering, loss and decoding on four backends.

See DESIGN.md for the contract. Every op takes ``backend=`` (``"auto"``, ``"torch"``, ``"cpu"``,
``"cuda"``, ``"triton"``); :func:`kpfast.use_backend` and ``KPFAST_BACKEND`` set the default.
"""

from kpfast.ops.render import adaptive_sigma, render_heatmaps

__all__ = ["adaptive_sigma", "render_heatmaps"]

# Op 2: fused heatmap loss.
from kpfast.ops.loss import heatmap_loss  # noqa: E402

__all__ += ["heatmap_loss"]
