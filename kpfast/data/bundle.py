"""The train and validation datasets of a typed data config, checked against the model they feed
(docs/data.md, "Config")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DataConfig
from .registry import create_dataset

__all__ = ["DataBundle", "build_data"]


@dataclass
class DataBundle:
    train: Any  # torch Dataset, or None when only evaluating
    val: Any
    info: Any  # kpfast.data.DatasetInfo


def build_data(config: DataConfig, *, num_keypoints: int, convention: str, seed: int = 0,
               train: bool = True, protocol: str = "kpfast") -> DataBundle:
    """The datasets ``config.dataset`` names (the training split only when ``train``), refused in
    one line when their keypoints have no OKS sigmas (COCO evaluation needs them) or are not the
    model's ``num_keypoints``. ``convention`` is the crop geometry of the heatmap encoding
    ("standard" for MSRA, "udp" otherwise; docs/design.md). ``protocol`` (``eval.protocol``) decides
    the validation split's ground-truth box clip; training always uses kpfast's."""
    options = dict(convention=convention, seed=seed)
    train_set = create_dataset(config, "train", train=True, **options) if train else None
    val_set = create_dataset(config, "val", train=False, protocol=protocol, **options)
    info = val_set.info
    if info.sigmas is None:
        raise ValueError(
            "data.dataset_options.dataset_info.sigmas: the dataset's keypoints have no known OKS sigmas; "
            "give them in the config for COCO evaluation"
        )
    if info.num_keypoints != num_keypoints:
        raise ValueError(
            f"model.num_keypoints: the dataset has {info.num_keypoints} keypoints, the config says {num_keypoints}"
        )
    return DataBundle(train=train_set, val=val_set, info=info)
