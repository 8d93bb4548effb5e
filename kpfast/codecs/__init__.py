"""Codecs: keypoints <-> network targets and outputs for one configuration (docs/design.md §Decode).

Used alike by training (targets, loss), evaluation and prediction (kpfast.inference), so all three
agree on the encoding, sizes, decoder and flip rule. Imports nothing from kpfast.engine.
"""

from kpfast.codecs.heatmap import DECODE_SPACES, LOGIT_LOSS_KINDS, HeatmapCodec, build_codec, crop_convention

__all__ = ["HeatmapCodec", "build_codec", "crop_convention", "LOGIT_LOSS_KINDS", "DECODE_SPACES"]
