"""Lite-HRNet pose models: ``build_model(name, num_keypoints, visibility_head, **overrides)``."""

from .litehrnet import LiteHRNet, LiteHRNetConfig
from .pose_model import PoseModel, init_weights
from .presets import PRESETS, available_models, build_model, model_options
from .pretrained import LoadReport, PretrainedError, load_pretrained
from .summary import ModelComplexity, count_params_and_macs, model_complexity

__all__ = [
    "LiteHRNet",
    "LiteHRNetConfig",
    "LoadReport",
    "PRESETS",
    "PoseModel",
    "available_models",
    "build_model",
    "count_params_and_macs",
    "init_weights",
    "load_pretrained",
    "model_complexity",
    "model_options",
    "ModelComplexity",
    "PretrainedError",
]
