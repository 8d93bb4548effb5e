"""The top-down predictor: person crops -> model -> optional flip test -> decode -> image pixels.

Every consumer of a trained model goes through this one pipeline: the trainer's evaluation and
validation images (kpfast.engine), ``python -m kpfast.eval`` and ``python -m kpfast.predict``, so
an AP measured during training is the AP a user gets from the checkpoint (docs/training.md).
Geometry, flip rule and decoding belong to the :class:`~kpfast.codecs.HeatmapCodec`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from kpfast import geometry
from kpfast.codecs import HeatmapCodec, build_codec
from kpfast.data.normalize import prepare_images
from kpfast.inference.autocast import autocast_context

__all__ = ["Predictor", "CropPrediction", "BOX_PADDING"]

# A person box is padded 1.25x before cropping (HRNet / MMPose top-down, kpfast.data's crops).
BOX_PADDING = 1.25


@dataclass
class CropPrediction:
    """Decoded keypoints of a batch of crops: ``coords (B, K, 2)`` (heatmap or crop pixels), ``scores (B, K)``."""

    coords: np.ndarray
    scores: np.ndarray


class Predictor:
    """Runs ``model`` on crops and decodes with ``codec``. Crops are uint8 RGB ``(B, 3, H, W)``,
    as kpfast.data's samples and :meth:`crop` give them, normalised on the model's device
    (kpfast/data/normalize.py); floating-point crops are taken as already normalised.

    ``flip_test``: average with the prediction of the mirrored crop (codec.flip_merge).
    ``precision``: "fp32", "bf16" or "fp16" autocast. ``channels_last``: feed the crops in the
    channels-last layout (as the model was trained with ``model.channels_last``). ``box_padding``:
    the factor person boxes are padded by before cropping (:meth:`crop`).
    """

    def __init__(self, model: torch.nn.Module, codec: HeatmapCodec, device: torch.device | str = "cpu", *,
                 flip_test: bool = False, precision: str = "fp32", channels_last: bool = False,
                 box_padding: float = BOX_PADDING):
        self.model = model
        self.codec = codec
        self.device = torch.device(device)
        self.flip_test = bool(flip_test)
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.box_padding = float(box_padding)

    @classmethod
    def from_config(cls, config, model: torch.nn.Module, device, flip_pairs=()) -> "Predictor":
        """The predictor a training configuration evaluates with (``eval.flip_test``,
        ``train.precision``, ``model.channels_last``; the codec from kpfast.codecs.build_codec)."""
        return cls(model, build_codec(config, flip_pairs, model), device, flip_test=config.eval.flip_test,
                   precision=config.train.precision, channels_last=config.model.channels_last)

    @contextmanager
    def _eval_mode(self):
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """Float32 score heatmaps of crops ``(B, 3, H, W)`` (uint8 RGB, or normalised floats):
        activated and, with the flip test, merged with the flipped-back prediction of the
        mirrored crops."""
        crops = prepare_images(crops, self.device, self.channels_last)
        with self._eval_mode(), autocast_context(crops.device, self.precision):
            heatmaps = self.codec.activate(self.model(crops)["heatmaps"].float())
            if self.flip_test:
                flipped = self.codec.activate(self.model(crops.flip(-1))["heatmaps"].float())
                heatmaps = self.codec.flip_merge(heatmaps, flipped)
        return heatmaps

    def predict_crops(self, crops: torch.Tensor, space: str = "heatmap") -> CropPrediction:
        """Keypoints of crops (uint8 RGB, or normalised floats) in heatmap pixels, or input-crop
        pixels (``space="crop"``)."""
        if space not in ("heatmap", "crop"):
            raise ValueError(f"space: expected 'heatmap' or 'crop' (image pixels need each crop's affine: "
                             f"predict_batch / predict_image), got {space!r}")
        coords, scores = self.codec.decode(self.heatmaps(crops), space=space)
        return CropPrediction(coords, scores)

    def predict_batch(self, batch: dict, metas: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """A kpfast.data batch -> ``(keypoints (B, K, 2) in image pixels, scores (B, K))``;
        ``metas``: the batch's per-sample meta dicts (their ``affine`` inverts each crop)."""
        prediction = self.predict_crops(batch["image"])
        return self.codec.heatmap_to_image(prediction.coords, self.codec.sample_matrices(metas)), prediction.scores

    def crop(self, image: np.ndarray, boxes) -> tuple[torch.Tensor, np.ndarray]:
        """uint8 RGB crops ``(N, 3, H, W)`` of person ``boxes`` ``[[x, y, w, h], ...]`` on a BGR
        uint8 image (normalised on the device by :meth:`heatmaps`), and their image -> heatmap
        matrices ``(N, 2, 3)``.

        Each box is widened to the input's aspect ratio and padded ``box_padding`` times, as
        kpfast.data crops its samples, so a model sees people at the scale it was trained on."""
        import cv2

        from kpfast.data.transforms import to_chw

        in_w, in_h = self.codec.input_wh
        crops, matrices = [], []
        for bbox in boxes:
            center, scale = geometry.bbox_xywh_to_center_scale(bbox, in_w / in_h, self.box_padding)
            crop = cv2.warpAffine(image, np.asarray(self.codec.crop_matrix(center, scale), np.float64), (in_w, in_h),
                                  flags=cv2.INTER_LINEAR)
            crops.append(to_chw(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)))
            matrices.append(self.codec.image_to_heatmap_matrix(center, scale))
        return torch.stack(crops), np.stack(matrices)

    def predict_image(self, image: np.ndarray, boxes) -> np.ndarray:
        """Keypoints ``(N, K, 3 = x, y, score)`` in image pixels for person ``boxes``
        ``[[x, y, w, h], ...]`` on one BGR uint8 image (the frame of its stored pixels).

        All boxes of the image run as one batch; a box is only checked to be four numbers (which
        boxes are worth predicting is the caller's choice, e.g. kpfast.predict.box_problem)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected an (H, W, 3) uint8 BGR array, got shape {image.shape} {image.dtype}")
        boxes = [_box(b) for b in boxes]
        if not boxes:
            return np.zeros((0, getattr(self.model, "num_keypoints", 0), 3))
        crops, to_heatmap = self.crop(image, boxes)
        prediction = self.predict_crops(crops)
        image_xy = self.codec.heatmap_to_image(prediction.coords, to_heatmap)
        return np.concatenate([image_xy, prediction.scores[..., None]], axis=-1)

    def predict(self, images, boxes) -> list[np.ndarray]:
        """:meth:`predict_image` of each image with its own list of boxes (``boxes[i]`` for ``images[i]``)."""
        if len(images) != len(boxes):
            raise ValueError(f"boxes: expected one list of boxes per image, got {len(boxes)} for {len(images)} images")
        return [self.predict_image(image, image_boxes) for image, image_boxes in zip(images, boxes)]


def _box(value) -> list[float]:
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = None
    if box is None or len(box) != 4:
        raise ValueError(f"boxes: expected [x, y, w, h] (four numbers) per box, got {value!r}")
    return box
