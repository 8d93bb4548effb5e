"""HeatmapCodec: everything that ties keypoints to Gaussian heatmaps for one configuration.

Training, evaluation and prediction must agree on the encoding, sigma, crop/heatmap sizes, the
decoder, the flip test and whether the network emits logits; one object holds those settings so
that they cannot drift apart (the shape of MMPose's ``mmpose/codecs/udp_heatmap.py``, with
kpfast's ops underneath). The coordinate conventions are kpfast.geometry's (docs/design.md,
"Shared conventions"): MSRA heatmaps use the ``"standard"`` crop, UDP and DARK the ``"udp"`` one.

Sizes here are ``(H, W)`` like tensors; kpfast.geometry takes ``(w, h)``, converted at the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kpfast import geometry
# LOGIT_LOSS_KINDS: the loss kinds trained on logits (docs/design.md, "Loss"); their maps go through
# a sigmoid before decoding and flip averaging, so that scores are probabilities in [0, 1].
from kpfast.vocabulary import ENCODINGS, LOGIT_LOSS_KINDS

__all__ = ["HeatmapCodec", "build_codec", "crop_convention", "LOGIT_LOSS_KINDS", "DECODE_SPACES"]

DECODE_SPACES = ("heatmap", "crop", "image")


def crop_convention(encoding: str) -> str:
    """The kpfast.geometry crop convention of a heatmap encoding: MSRA -> ``"standard"``, UDP and
    DARK -> ``"udp"``. The data pipeline crops with it, so that its keypoints land where the codec
    renders and decodes them."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: expected one of {ENCODINGS}, got {encoding!r}")
    return "standard" if encoding == "msra" else "udp"


def _size(name: str, value) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (H, W) of ints, got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name}: expected positive (H, W), got {tuple(value)!r}")
    return h, w


@dataclass(frozen=True)
class HeatmapCodec:
    """Encode keypoints to heatmaps, decode heatmaps to keypoints, and map between the frames.

    Args:
        input_size: ``(H, W)`` of the network's input crop.
        heatmap_size: ``(H, W)`` of its heatmaps.
        encoding: ``"msra"``, ``"udp"`` or ``"dark"`` (kpfast.ops.render_heatmaps).
        sigma: Gaussian sigma in heatmap pixels (already scaled when adaptive).
        decoder, blur_kernel: kpfast.ops.decode_heatmaps' ``method`` and ``blur_kernel``.
        flip_pairs: left/right keypoint pairs swapped by the flip test.
        flip_shift: shift the flipped-back maps one pixel (HRNet's ``shift_heatmap``); None: only
            for MSRA, whose "standard" crop does not map pixel centres onto pixel centres.
        logits: the network emits logits (a logit loss kind): decoding applies a sigmoid first.
        backend: the ops backend of render and decode.
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    encoding: str = "udp"
    sigma: float = 2.0
    decoder: str = "dark"
    blur_kernel: int = 11
    flip_pairs: tuple[tuple[int, int], ...] = ()
    flip_shift: bool | None = None
    logits: bool = False
    backend: str = "auto"
    convention: str = field(init=False)

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding: expected one of {ENCODINGS}, got {self.encoding!r}")
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        set_(self, "input_size", _size("input_size", self.input_size))
        set_(self, "heatmap_size", _size("heatmap_size", self.heatmap_size))
        set_(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        if self.flip_shift is None:
            set_(self, "flip_shift", self.encoding == "msra")
        set_(self, "convention", crop_convention(self.encoding))

    # ------------------------------------------------------------------ sizes as kpfast.geometry wants them
    @property
    def input_wh(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[0]

    @property
    def heatmap_wh(self) -> tuple[int, int]:
        return self.heatmap_size[1], self.heatmap_size[0]

    # ------------------------------------------------------------------ training
    def encode(self, keypoints: torch.Tensor, weights: torch.Tensor | None = None):
        """Target heatmaps ``(B, K, H, W)`` and weights for keypoints ``(B, K, 2)`` in heatmap pixels
        (kpfast.ops.render_heatmaps: a keypoint off the map gets weight 0)."""
        from kpfast.ops import render_heatmaps

        return render_heatmaps(keypoints, weights, size=self.heatmap_size, sigma=self.sigma,
                               encoding=self.encoding, backend=self.backend)

    def loss(self, kind: str, **options):
        """kpfast.nn.HeatmapLoss of ``kind`` with this codec's sigma and encoding, so that the
        training targets are the ones :meth:`encode` renders and :meth:`decode` inverts."""
        from kpfast.nn import HeatmapLoss

        return HeatmapLoss(kind, sigma=self.sigma, encoding=self.encoding, backend=self.backend, **options)

    # ------------------------------------------------------------------ inference
    def activate(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Network output -> maps to decode: probabilities for a logit network, else unchanged."""
        return heatmaps.sigmoid() if self.logits else heatmaps

    def flip_merge(self, heatmaps: torch.Tensor, flipped_heatmaps: torch.Tensor) -> torch.Tensor:
        """The flip test's average with the prediction on the mirrored crop (kpfast.ops.flip_merge)."""
        from kpfast.ops import flip_merge

        return flip_merge(heatmaps, flipped_heatmaps, self.flip_pairs, shift=self.flip_shift)

    def decode(self, heatmaps: torch.Tensor, space: str = "heatmap", to_heatmap=None):
        """Keypoints ``(B, K, 2)`` and scores ``(B, K)`` (float64 numpy) from activated heatmaps.

        ``space``: ``"heatmap"`` pixels, ``"crop"`` (input-crop) pixels, or ``"image"`` pixels,
        which needs ``to_heatmap``, the ``(B, 2, 3)`` image -> heatmap affine of each crop.
        """
        from kpfast.ops import decode_heatmaps

        if space not in DECODE_SPACES:
            raise ValueError(f"space: expected one of {DECODE_SPACES}, got {space!r}")
        if space == "image" and to_heatmap is None:
            raise ValueError("to_heatmap: required for space='image' (the image -> heatmap affine of each crop)")
        coords, scores = decode_heatmaps(heatmaps, method=self.decoder, blur_kernel=self.blur_kernel,
                                         backend=self.backend)
        coords = coords.float().cpu().numpy().astype(np.float64)
        scores = scores.float().cpu().numpy().astype(np.float64)
        if space == "crop":
            coords = self.heatmap_to_crop(coords)
        elif space == "image":
            coords = self.heatmap_to_image(coords, to_heatmap)
        return coords, scores

    # ------------------------------------------------------------------ coordinate frames
    def crop_matrix(self, center, scale, rotation=0.0):
        """Image -> input-crop affine ``(..., 2, 3)`` of boxes (``center``, ``scale`` in pixels)."""
        return geometry.crop_matrix(center, scale, rotation, self.input_wh, self.convention)

    def image_to_heatmap_matrix(self, center, scale, rotation=0.0, flipped=False):
        """Image -> heatmap affine ``(..., 2, 3)``: the crop, an optional mirror, the heatmap scaling."""
        return geometry.image_to_heatmap_matrix(center, scale, rotation, self.input_wh, self.heatmap_wh,
                                                self.convention, flipped)

    def sample_matrices(self, metas: list[dict]) -> np.ndarray:
        """Image -> heatmap affines ``(B, 2, 3)`` of data samples (kpfast.data's ``meta``): the
        recorded ``affine`` when present, else rebuilt from centre, scale, rotation and flip."""
        if metas and "affine" in metas[0]:
            return np.stack([np.asarray(m["affine"], dtype=np.float64) for m in metas])
        return self.image_to_heatmap_matrix(
            np.stack([m["center"] for m in metas]), np.stack([m["scale"] for m in metas]),
            np.array([m.get("rotation", 0.0) for m in metas]),
            np.array([bool(m.get("flipped", False)) for m in metas]))

    def heatmap_to_image(self, points, to_heatmap) -> np.ndarray:
        """Heatmap pixels ``(B, K, 2)`` -> image pixels, inverting each crop's image -> heatmap affine."""
        return geometry.transform_points(np.asarray(points, dtype=np.float64), geometry.invert_affine(to_heatmap))

    def heatmap_to_crop(self, points) -> np.ndarray:
        """Heatmap pixels -> input-crop pixels (the convention's scaling)."""
        return geometry.heatmap_to_crop(np.asarray(points, np.float64), self.input_wh, self.heatmap_wh,
                                        self.convention)

    def crop_to_heatmap(self, points) -> np.ndarray:
        """Input-crop pixels -> heatmap pixels."""
        return geometry.crop_to_heatmap(np.asarray(points, np.float64), self.input_wh, self.heatmap_wh,
                                        self.convention)


def build_codec(config, flip_pairs=(), model=None) -> HeatmapCodec:
    """The codec of a training config (read duck-typed: ``data.input_size``, ``loss.*``,
    ``eval.decoder``/``blur_kernel``, ``train.ops_backend``) and its network.

    The heatmap size is the input size divided by the model's stride (4 without a model), checked
    by the model when it can; an adaptive sigma is scaled to that size (kpfast.ops.adaptive_sigma).
    """
    stride = getattr(model, "stride", 4) if model is not None else 4
    h, w = (int(v) for v in config.data.input_size)
    if model is not None and hasattr(model, "check_input_size"):
        model.check_input_size(h, w)
    heatmap_size = (h // stride, w // stride)
    loss = config.loss
    sigma = float(loss.sigma)
    if loss.adaptive_sigma:
        from kpfast.ops import adaptive_sigma

        sigma = float(adaptive_sigma(heatmap_size, loss.sigma))
    return HeatmapCodec(input_size=(h, w), heatmap_size=heatmap_size, encoding=loss.encoding, sigma=sigma,
                        decoder=config.eval.decoder, blur_kernel=config.eval.blur_kernel,
                        flip_pairs=tuple(flip_pairs), logits=loss.kind in LOGIT_LOSS_KINDS,
                        backend=config.train.ops_backend)
