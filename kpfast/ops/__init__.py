"""kpfast's public ops: fused heatmap rendering, loss and decoding on four backends.

See DESIGN.md for the contract. Every op takes ``backend=`` (``"auto"``, ``"torch"``, ``"cpu"``,
``"cuda"``, ``"triton"``); :func:`kpfast.use_backend` and ``KPFAST_BACKEND`` set the default.
"""

from kpfast.ops.render import adaptive_sigma, render_heatmaps

__all__ = ["adaptive_sigma", "render_heatmaps"]

# Op 3: decoding.
from kpfast.ops.decode import decode_heatmaps, find_peaks, flip_merge, soft_argmax  # noqa: E402

__all__ += ["decode_heatmaps", "find_peaks", "flip_merge", "soft_argmax"]
