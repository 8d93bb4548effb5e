"""The glue between the engine and kpfast.models / kpfast.data / kpfast.geometry.

Everything the trainer, evaluation, prediction and export need from the other packages goes
through this module, so the engine itself never depends on their internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kpfast.engine.config import Config, ModelConfig

__all__ = [
    "DataBundle",
    "build_model",
    "model_from_checkpoint",
    "convention",
    "data_section",
    "loader_section",
    "build_data",
    "collate",
    "meta_list",
    "denormalize",
    "info_from_dict",
]


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """``kpfast.models.build_model`` with the config's name, keypoints, head and overrides."""
    from kpfast.models import build_model as build

    overrides = dict(cfg.overrides)
    if cfg.gradient_checkpointing:
        overrides["gradient_checkpointing"] = True
    for key, value in list(overrides.items()):
        if isinstance(value, list):  # YAML lists -> the tuples LiteHRNetConfig expects
            overrides[key] = tuple(value)
    return build(cfg.name, num_keypoints=cfg.num_keypoints, visibility_head=cfg.visibility_head, **overrides)


def model_from_checkpoint(state: dict, config: Config, weights: str = "auto") -> torch.nn.Module:
    """Rebuild the network of a checkpoint and load its weights (EMA ones when asked/auto).

    Weights that do not fit the config's network (another model, other overrides, a foreign
    state dict) are one CheckpointError naming what differs, before anything is loaded."""
    model = build_model(config.model)
    ema = state.get("ema")
    if weights == "ema" and ema is None:
        raise ValueError("weights: 'ema' requested but the checkpoint has no EMA weights")
    if weights in ("auto", "ema") and ema is not None:
        stored, what = (ema.get("module") if isinstance(ema, dict) else None), "EMA weights"
    else:
        stored, what = state.get("model"), "weights"
    check_weights_fit(model, stored, what, config)
    model.load_state_dict(stored)
    return model


def check_weights_fit(model: torch.nn.Module, stored, what: str, config: Config) -> None:
    """Raise CheckpointError (one line) unless ``stored`` has exactly ``model``'s tensors and shapes."""
    from kpfast.engine.checkpointer import CheckpointError

    hint = (f"the checkpoint's {what} do not fit model {config.model.name!r} with overrides "
            f"{config.model.overrides or {}} (num_keypoints={config.model.num_keypoints}); drop --config/--set "
            "model.* to use the checkpoint's stored config, or pass the checkpoint these settings trained")
    if not isinstance(stored, dict) or not all(isinstance(v, torch.Tensor) for v in stored.values()):
        raise CheckpointError(f"{hint}: they are not a mapping of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [k for k in expected if k in stored and tuple(stored[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(stored[k].shape)} stored, "
                        f"{tuple(expected[k].shape)} expected)")
    if problems:
        raise CheckpointError(f"{hint}: {'; '.join(problems)}")


def convention(config: Config) -> str:
    """Crop/heatmap geometry matching the heatmap encoding: MSRA -> standard, UDP/DARK -> udp."""
    return "standard" if config.loss.encoding == "msra" else "udp"


def data_section(config: Config, train: bool) -> dict:
    """The ``data`` dict understood by ``kpfast.data.build_dataset``."""
    d = config.data
    section: dict[str, Any] = {
        "root": d.root,
        "train_split": d.train_split,
        "val_split": d.val_split,
        "input_size": list(d.input_size),
        "convention": convention(config),
        "augmentation": d.augmentation if train else "none",
        "detections": None if d.use_gt_boxes else d.detections,
        "det_score_threshold": d.det_score_threshold,
        "seed": config.train.seed,
        "protocol": "kpfast" if train else config.eval.protocol,  # the evaluation's ground-truth box clip
    }
    if d.dataset == "synthetic":
        from kpfast.data import ensure_synthetic_dataset

        section["root"] = str(
            ensure_synthetic_dataset(
                root=d.root, num_train=d.synthetic_num_train, num_val=d.synthetic_num_val, seed=d.synthetic_seed
            )
        )
    elif d.root is None:
        raise ValueError("data.root: required for dataset 'coco' (pass --data_root)")
    section.update(d.dataset_options)
    return section


def loader_section(config: Config, batch_size: int, device: torch.device) -> dict:
    """The ``data`` dict for ``kpfast.data.build_dataloader`` over an existing dataset.

    The keys are kpfast.data's own (``num_workers`` is ``data.num_workers`` of the config, the
    same name on both sides). Workers are not persistent: the trainer builds one loader per
    epoch so that a resumed run can start mid-epoch.
    """
    return {"data": {"batch_size": int(batch_size), "num_workers": config.data.num_workers,
                     "persistent_workers": False, "pin_memory": device.type == "cuda"}}


@dataclass
class DataBundle:
    train: Any  # torch Dataset, or None when only evaluating
    val: Any
    info: Any  # kpfast.data.DatasetInfo


def build_data(config: Config, train: bool = True) -> DataBundle:
    from kpfast.data import build_dataset

    train_set = build_dataset({"data": data_section(config, True)}, "train", train=True) if train else None
    val_set = build_dataset({"data": data_section(config, False)}, "val", train=False)
    info = val_set.info
    if info.sigmas is None:
        raise ValueError(
            "data.dataset_options.dataset_info.sigmas: the dataset's keypoints have no known OKS sigmas; "
            "give them in the config for COCO evaluation"
        )
    if info.num_keypoints != config.model.num_keypoints:
        raise ValueError(
            f"model.num_keypoints: the dataset has {info.num_keypoints} keypoints, the config says "
            f"{config.model.num_keypoints}"
        )
    return DataBundle(train=train_set, val=val_set, info=info)


def collate(samples):
    from kpfast.data import collate_samples

    return collate_samples(samples)


def meta_list(batch: dict) -> list[dict]:
    """The batch's collated ``meta`` as one plain dict per sample."""
    meta = batch["meta"]
    size = int(batch["image"].shape[0])
    out = [dict() for _ in range(size)]
    for key, values in meta.items():
        for i in range(size):
            value = values[i]
            if torch.is_tensor(value):
                value = value.item() if value.ndim == 0 else value.double().numpy()
            out[i][key] = value
    return out


def denormalize(images: torch.Tensor) -> list[np.ndarray]:
    """Normalised (B, 3, H, W) crops -> BGR uint8 images for OpenCV drawing."""
    from kpfast.data.transforms import denormalize_image

    return [np.ascontiguousarray(denormalize_image(img.float().cpu().numpy())[:, :, ::-1]) for img in images]


def info_from_dict(data: dict):
    """A DatasetInfo-like object from the dict stored in checkpoints (prediction without data)."""

    @dataclass(frozen=True)
    class StoredInfo:
        keypoint_names: tuple
        flip_pairs: tuple
        skeleton: tuple
        sigmas: np.ndarray

        @property
        def num_keypoints(self) -> int:
            return len(self.keypoint_names)

    return StoredInfo(
        keypoint_names=tuple(data["keypoint_names"]),
        flip_pairs=tuple(tuple(p) for p in data["flip_pairs"]),
        skeleton=tuple(tuple(p) for p in data["skeleton"]),
        sigmas=np.asarray(data["sigmas"], dtype=np.float64),
    )
