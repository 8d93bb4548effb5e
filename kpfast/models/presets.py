"""Named Lite-HRNet configurations and :func:`build_model`."""

from __future__ import annotations

import dataclasses

from .litehrnet import LiteHRNetConfig
from .pose_model import PoseModel

__all__ = ["PRESETS", "available_models", "build_model", "model_options"]

# The published configs (HRNet/Lite-HRNet configs/top_down/{lite_hrnet,naive_litehrnet}/coco).
PRESETS: dict[str, LiteHRNetConfig] = {
    "litehrnet_18": LiteHRNetConfig(base_width=40, num_modules=(2, 4, 2)),
    "litehrnet_30": LiteHRNetConfig(base_width=40, num_modules=(3, 8, 3)),
    "naive_litehrnet_18": LiteHRNetConfig(base_width=30, num_modules=(2, 4, 2), block_type="naive"),
    "wider_naive_litehrnet_18": LiteHRNetConfig(base_width=40, num_modules=(2, 4, 2), block_type="naive"),
    # Widened variant for the improved COCO recipe: Lite-HRNet-18 depth, branches 48/96/192/384.
    "litehrnet_w48_b4": LiteHRNetConfig(base_width=48, num_branches=4, num_modules=(2, 4, 2)),
}

_BUILD_OPTIONS = ("gradient_checkpointing",)


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(PRESETS)


def model_options() -> list[str]:
    """Keyword overrides accepted by :func:`build_model` besides num_keypoints/visibility_head."""
    return [f.name for f in dataclasses.fields(LiteHRNetConfig)] + list(_BUILD_OPTIONS)


def build_model(
    name: str, num_keypoints: int = 17, visibility_head: bool = False, **overrides
) -> PoseModel:
    """Build a preset by name; ``overrides`` replace any :class:`LiteHRNetConfig` field
    (``base_width``, ``num_branches``, ``num_modules``, ``num_blocks``, ``reduce_ratios``,
    ``with_fuse``, ``block_type``, ``stem_channels``, ...) or set ``gradient_checkpointing``.

    >>> model = build_model("litehrnet_18", num_keypoints=17, visibility_head=True)
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    unknown = sorted(set(overrides) - set(model_options()))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid options: num_keypoints, visibility_head, {', '.join(model_options())}"
        )
    gradient_checkpointing = overrides.pop("gradient_checkpointing", False)
    preset = PRESETS[name]
    if "num_modules" in overrides and not isinstance(overrides["num_modules"], int):
        # Changing the number of stages: per-stage options the caller did not give follow it
        # when the preset uses one value for all stages (every published preset does).
        num_stages = len(overrides["num_modules"])
        for option in ("num_blocks", "reduce_ratios"):
            values = getattr(preset, option)
            if option not in overrides and len(values) != num_stages and len(set(values)) == 1:
                overrides[option] = (values[0],) * num_stages
    config = dataclasses.replace(preset, **overrides)
    model = PoseModel(config, num_keypoints=num_keypoints, visibility_head=visibility_head)
    model.set_gradient_checkpointing(gradient_checkpointing)
    return model
