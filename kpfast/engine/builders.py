"""The glue between the engine and kpfast.models / kpfast.data / kpfast.geometry.

Everything the trainer, evaluation, prediction and export need from the other packages goes
through this module, so the engine itself never depends on their internals.
"""

from __future__ import annotations

import numpy as np
import torch

from kpfast.engine.config import Config, ModelConfig

__all__ = [
    "build_model",
    "model_from_checkpoint",
    "convention",
    "collate",
    "meta_list",
    "denormalize",
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
