"""The typed ``data:`` section of a training config: what kpfast.data's dataset and loader
factories take (docs/data.md, "Config"). kpfast/engine/config.py composes it into the whole config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from kpfast.schema import FieldInvalid, Float, Section, field, not_empty
from pydantic import field_validator, model_validator

__all__ = ["DataConfig", "LoaderConfig", "SEED_MAX", "MAX_WORKERS"]

SEED_MAX = 2**32 - 1  # numpy.random.seed's range
# Machine-independent bound; per machine, the trainer's start-up check also bounds workers by
# the CPU count (kpfast.engine.arguments.check_environment).
MAX_WORKERS = 256


class DataConfig(Section):
    """Where the data comes from and how samples are prepared."""

    # A name in kpfast.data.DATASETS: "synthetic" (generated, cached) or "coco" (any COCO-format
    # keypoint file: K, flip pairs, skeleton and sigmas from its category or dataset_options).
    dataset: str = "synthetic"
    # COCO layout root (annotations/person_keypoints_{split}.json, images/{split}/).
    # For "synthetic", None means the package's cache directory.
    root: Optional[str] = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    input_size: list = field([256, 192], resume=True)  # (H, W) of the crop
    # Synthetic dataset generation (only used when dataset == "synthetic").
    synthetic_num_train: int = field(512, ge=1)
    synthetic_num_val: int = field(64, ge=1)
    synthetic_seed: int = field(0, ge=0, le=SEED_MAX)
    # Validation boxes: ground truth, or a detector's COCO-results JSON.
    use_gt_boxes: bool = True
    detections: Optional[str] = None
    det_score_threshold: Float = field(0.0, ge=0.0, le=1.0)
    # "default", "none", or a mapping merged over kpfast.data.DEFAULT_AUGMENTATION.
    augmentation: Union[dict, str] = "default"
    # Extra keyword arguments for the dataset constructor (validated there), e.g. dataset_info.
    dataset_options: dict = field({})
    # DataLoader worker processes.
    num_workers: int = field(2, ge=0, le=MAX_WORKERS)
    # "cuda": training workers hand over JPEG bytes, decoded, warped and photometrically augmented
    # on the GPU (kpfast.data.gpu_pipeline, kpfast.data.gpu_photometric; needs the gpu-decode extra).
    # Evaluation always decodes on the CPU.
    decode_device: Literal["cpu", "cuda"] = "cpu"
    # Training JPEGs decoded at 1/2..1/8 in the DCT domain when the crop keeps at least this many
    # reduced pixels per input pixel (kpfast.data.jpeg); null: always in full. Off by default: it
    # changes the pixels of crops shrunk 2x or more (docs/data.md, "Config"). Evaluation: in full.
    decode_reduction_margin: Optional[Float] = field(None, gt=0.0)

    @field_validator("dataset")
    @classmethod
    def _registered(cls, value: str) -> str:
        from kpfast.data.registry import DATASETS

        return DATASETS.check(value)

    @field_validator("input_size")
    @classmethod
    def _height_width(cls, size: list) -> list:
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ValueError(f"expected [H, W] positive ints, got {size!r}")
        return size

    @field_validator("root", "detections", "train_split", "val_split")
    @classmethod
    def _not_empty(cls, value):
        return not_empty(value)

    @field_validator("train_split", "val_split")
    @classmethod
    def _split_name(cls, value: str) -> str:
        if any(sep in value for sep in ("/", "\\")) or value in (".", ".."):
            raise ValueError(f"expected a split name such as 'val2017', got {value!r}")
        return value

    @field_validator("augmentation")
    @classmethod
    def _augmentation(cls, value):
        from kpfast.data.augment import resolve_augmentation_config

        try:
            resolve_augmentation_config(value)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _detections_when_no_gt_boxes(self):
        if not self.use_gt_boxes and self.detections is None:
            raise FieldInvalid("detections", "required when data.use_gt_boxes is false")
        return self


@dataclass(frozen=True)
class LoaderConfig:
    """How one DataLoader batches a dataset (kpfast.data.build_loader): set by the caller per use
    (training and evaluation batch differently), not read from YAML."""

    batch_size: int
    num_workers: int = 2
    pin_memory: bool = False
    # The trainer builds one loader per epoch so that a resumed run can start mid-epoch.
    persistent_workers: bool = False
    prefetch_factor: int = 2
