"""Training augmentation configured from a plain (YAML-friendly) dict.

Two stages:

1. Box-level jitter, applied through the crop's affine matrix so the image is warped once:
   half-body, random scale, rotation, centre shift and horizontal flip with left/right swap.
2. Albumentations 2.0.8 transforms on the crop, keypoints carried through (format ``"xy"``,
   which uses kpfast's pixel-centre rule ``x = column``). ``HorizontalFlip`` entries swap the
   left/right keypoints as well.

Config layout (every key optional; missing keys take :data:`DEFAULT_AUGMENTATION`'s values)::

    flip:      {p: 0.5}
    half_body: {p: 0.3, min_keypoints: 8, padding: 1.5}
    scale:     {p: 1.0, range: [0.75, 1.25]}
    rotation:  {p: 0.6, max_degrees: 40}
    shift:     {p: 0.3, factor: 0.16}
    albumentations:            # ordered; entries with p == 0 are not built at all
      - {type: HueSaturationValue, p: 0.3, hue_shift_limit: 10, ...}
      - ...

Any albumentations transform name may be used in ``albumentations``; the ones kpfast documents
and tests are listed in :data:`DEFAULT_AUGMENTATION` (the costly ones with ``p: 0``).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .info import DatasetInfo

__all__ = ["DEFAULT_AUGMENTATION", "NO_AUGMENTATION", "resolve_augmentation_config",
           "BoxJitter", "CropAugmenter"]

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "flip": {"p": 0.5},
    "half_body": {"p": 0.3, "min_keypoints": 8, "padding": 1.5},
    "scale": {"p": 1.0, "range": [0.75, 1.25]},
    "rotation": {"p": 0.6, "max_degrees": 40.0},
    "shift": {"p": 0.3, "factor": 0.16},
    "albumentations": [
        # Cheap photometric transforms, on by default.
        {"type": "HueSaturationValue", "p": 0.3, "hue_shift_limit": 10, "sat_shift_limit": 25,
         "val_shift_limit": 20},
        {"type": "RandomGamma", "p": 0.3, "gamma_limit": [80, 120]},
        {"type": "GaussianBlur", "p": 0.1, "blur_limit": [3, 5], "sigma_limit": [0.3, 1.5]},
        # allow_shifted=False and direction_range 0 keep the blur kernel centred and symmetric,
        # so content does not move off its keypoints.
        {"type": "MotionBlur", "p": 0.1, "blur_limit": [3, 7], "allow_shifted": False,
         "direction_range": [0.0, 0.0]},
        {"type": "CoarseDropout", "p": 0.2, "num_holes_range": [1, 2],
         "hole_height_range": [0.1, 0.25], "hole_width_range": [0.1, 0.25], "fill": 0},
        # Costly or rarely useful for COCO: documented here, off by default (p: 0).
        {"type": "CLAHE", "p": 0.0, "clip_limit": 2.0, "tile_grid_size": [8, 8]},
        {"type": "ISONoise", "p": 0.0, "color_shift": [0.01, 0.05], "intensity": [0.1, 0.5]},
        {"type": "Perspective", "p": 0.0, "scale": [0.02, 0.06], "keep_size": True},
        # Albumentations 2.0.8 maps keypoints through the displacement field only approximately
        # (~1.5 px error, measured in tests/data/test_augment.py); "direct" beats "mask".
        {"type": "ElasticTransform", "p": 0.0, "alpha": 120.0, "sigma": 12.0,
         "keypoint_remapping_method": "direct"},
        # The affine flip above is cheaper; this is for pipelines that want albumentations' own.
        {"type": "HorizontalFlip", "p": 0.0},
    ],
}

NO_AUGMENTATION: dict[str, Any] = {
    "flip": {"p": 0.0}, "half_body": {"p": 0.0}, "scale": {"p": 0.0}, "rotation": {"p": 0.0},
    "shift": {"p": 0.0}, "albumentations": [],
}

_BOX_KEYS = {
    "flip": {"p"},
    "half_body": {"p", "min_keypoints", "padding"},
    "scale": {"p", "range"},
    "rotation": {"p", "max_degrees"},
    "shift": {"p", "factor"},
}


def _check_p(p, where):
    if not _is_number(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation {where}.p must be a probability in [0, 1], got {p!r}")
    return float(p)


# Allowed ranges of the box-level numbers (what the jitter in BoxJitter can use meaningfully).
_NUMBER_RANGES = {
    ("half_body", "padding"): (0.0, 100.0, "a factor > 0", True),
    ("rotation", "max_degrees"): (0.0, 180.0, "degrees in [0, 180]", False),
    ("shift", "factor"): (0.0, 1.0, "a fraction of the box in [0, 1]", False),
}
_MAX_SCALE = 100.0
_MAX_MIN_KEYPOINTS = 10_000


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(value, where: str, lo: float, hi: float, what: str, lo_exclusive: bool) -> float:
    ok = _is_number(value) and (value > lo if lo_exclusive else value >= lo) and value <= hi
    if not ok:
        raise ValueError(f"augmentation {where} must be {what}, got {value!r}")
    return float(value)


def _check_box_numbers(out: dict) -> None:
    """Every box-level number finite and in range: a NaN angle or a string must fail here, while
    the config is validated, not inside a worker after the run directory exists."""
    for (section, key), (lo, hi, what, lo_exclusive) in _NUMBER_RANGES.items():
        _check_number(out[section][key], f"{section}.{key}", lo, hi, what, lo_exclusive)
    count = out["half_body"]["min_keypoints"]
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_MIN_KEYPOINTS:
        raise ValueError(f"augmentation half_body.min_keypoints must be an int in [0, {_MAX_MIN_KEYPOINTS}], "
                         f"got {count!r}")
    scale = out["scale"]["range"]
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(_is_number(v) for v in scale)
            and 0 < scale[0] <= scale[1] <= _MAX_SCALE):
        raise ValueError(f"augmentation scale.range must be [lo, hi] with 0 < lo <= hi <= {_MAX_SCALE:g}, "
                         f"got {scale!r}")


def resolve_augmentation_config(config: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Merge a user config over :data:`DEFAULT_AUGMENTATION` and check it.

    ``None`` or ``"default"`` gives the default; ``"none"`` disables everything. A user dict's
    box-level sections are merged key by key; its ``albumentations`` list replaces the default list.
    """
    if config is None or config == "default":
        return copy.deepcopy(DEFAULT_AUGMENTATION)
    if config == "none":
        return copy.deepcopy(NO_AUGMENTATION)
    if not isinstance(config, Mapping):
        raise TypeError(f"augmentation config must be a dict, 'default', 'none' or None, got "
                        f"{type(config).__name__}")
    unknown = set(config) - set(_BOX_KEYS) - {"albumentations"}
    if unknown:
        raise ValueError(f"unknown augmentation section(s) {sorted(unknown)}; expected "
                         f"{sorted(_BOX_KEYS) + ['albumentations']}")
    out = copy.deepcopy(DEFAULT_AUGMENTATION)
    for key, allowed in _BOX_KEYS.items():
        section = config.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise TypeError(f"augmentation {key} must be a dict, got {type(section).__name__}")
        bad = set(section) - allowed
        if bad:
            raise ValueError(f"unknown key(s) {sorted(bad)} in augmentation {key}; "
                             f"expected {sorted(allowed)}")
        out[key].update(section)
    if "albumentations" in config:
        entries = config["albumentations"] or []
        if not isinstance(entries, (list, tuple)):
            raise TypeError("augmentation albumentations must be a list of {type: ..., p: ...}")
        out["albumentations"] = [dict(e) for e in entries]
    for key in _BOX_KEYS:
        _check_p(out[key]["p"], key)
    _check_box_numbers(out)
    for entry in out["albumentations"]:
        if not isinstance(entry, Mapping) or "type" not in entry:
            raise ValueError(f"each albumentations entry needs a 'type', got {entry!r}")
        _check_p(entry.get("p", 0.5), f"albumentations[{entry['type']}]")
    return out


@dataclass
class JitteredBox:
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool


class BoxJitter:
    """Box-level augmentation (half-body, scale, rotation, shift, flip) as HRNet/MMPose do it,
    returning the box parameters the affine crop is built from."""

    def __init__(self, config: Mapping[str, Any], info: DatasetInfo, aspect_ratio: float):
        self.cfg = config
        self.info = info
        self.aspect_ratio = aspect_ratio
        self.upper = np.asarray(info.upper_body_ids, dtype=np.int64)
        self.lower = np.asarray(info.lower_body_ids, dtype=np.int64)

    def _half_body(self, keypoints: np.ndarray, visible: np.ndarray, rng: np.random.Generator):
        """Centre/scale of the upper or lower body's visible keypoints, or None."""
        upper = self.upper[visible[self.upper]] if self.upper.size else self.upper
        lower = self.lower[visible[self.lower]] if self.lower.size else self.lower
        if rng.random() < 0.5 and len(upper) > 2:
            chosen = upper
        else:
            chosen = lower if len(lower) > 2 else upper
        if len(chosen) < 2:
            return None
        pts = keypoints[chosen]
        center = pts.mean(0)
        w, h = pts.max(0) - pts.min(0)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        else:
            w = h * self.aspect_ratio
        if w <= 0 or h <= 0:
            return None
        return center, np.array([w, h]) * float(self.cfg["half_body"]["padding"])

    def __call__(self, center, scale, keypoints, visible, rng: np.random.Generator) -> JitteredBox:
        center = np.array(center, dtype=np.float64)
        scale = np.array(scale, dtype=np.float64)
        cfg = self.cfg
        hb = cfg["half_body"]
        if (hb["p"] > 0 and visible.sum() > hb.get("min_keypoints", 8) and rng.random() < hb["p"]):
            half = self._half_body(keypoints, visible, rng)
            if half is not None:
                center, scale = half
        if cfg["shift"]["p"] > 0 and rng.random() < cfg["shift"]["p"]:
            center = center + rng.uniform(-1, 1, 2) * cfg["shift"]["factor"] * scale
        if cfg["scale"]["p"] > 0 and rng.random() < cfg["scale"]["p"]:
            lo, hi = cfg["scale"]["range"]
            scale = scale * rng.uniform(lo, hi)
        rotation = 0.0
        if cfg["rotation"]["p"] > 0 and rng.random() < cfg["rotation"]["p"]:
            rotation = float(rng.uniform(-1, 1) * cfg["rotation"]["max_degrees"])
        flipped = bool(cfg["flip"]["p"] > 0 and rng.random() < cfg["flip"]["p"])
        return JitteredBox(center, scale, rotation, flipped)


class CropAugmenter:
    """The albumentations stage: crops (H, W, 3) uint8 RGB with (K, 2) keypoints in crop pixels.

    Each entry's probability is drawn here from the generator the dataset hands it (the sample's
    albumentations stream, docs/data.md "Random streams") and only the transforms
    that fire are run (built with ``p=1``): calling a whole ``A.Compose`` per sample costs more
    than the cheap photometric transforms themselves. Image-only transforms are called on the
    image alone; spatial ones go through a one-transform ``A.Compose`` that carries the keypoints
    (``remove_invisible=False`` keeps all K rows). ``HorizontalFlip`` also swaps left/right.
    """

    def __init__(self, entries, flip_index: np.ndarray):
        import albumentations as A

        self.flip_index = np.asarray(flip_index)
        self.steps = []  # (name, p, kind, callable) with kind in {"pixel", "spatial", "hflip"}
        kp_params = dict(format="xy", remove_invisible=False, check_each_transform=False)
        for entry in entries:
            params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
                      if k not in ("type", "p")}
            p = float(entry.get("p", 0.5))
            if p == 0:
                continue
            name = entry["type"]
            cls = getattr(A, name, None)
            if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
                raise ValueError(f"unknown albumentations transform {name!r}")
            accepted = inspect.signature(cls.__init__).parameters
            if not any(a.kind is a.VAR_KEYWORD for a in accepted.values()):
                unknown = sorted(set(params) - set(accepted))
                if unknown:  # albumentations itself only warns
                    raise ValueError(f"bad parameters for albumentations {name}: unknown {unknown}; "
                                     f"accepted: {sorted(set(accepted) - {'self', 'p'})}")
            try:
                transform = cls(p=1.0, **params)
            except Exception as err:  # albumentations validates parameters with pydantic
                raise ValueError(f"bad parameters for albumentations {name}: {params!r}: {err}") from None
            if isinstance(transform, A.ImageOnlyTransform):
                self.steps.append((name, p, "pixel", transform))
            else:
                compose = A.Compose([transform], keypoint_params=A.KeypointParams(**kp_params))
                self.steps.append((name, p, "hflip" if name == "HorizontalFlip" else "spatial", compose))

    def __bool__(self):
        return bool(self.steps)

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator):
        """Returns ``(image, keypoints, swaps)``; ``swaps`` counts applied horizontal flips (the
        keypoint rows are already swapped; the caller swaps its visibility flags when odd)."""
        swaps = 0
        kps = np.asarray(keypoints, dtype=np.float32)
        for _name, p, kind, transform in self.steps:
            if rng.random() >= p:
                continue
            transform.set_random_seed(int(rng.integers(2**31)))
            if kind == "pixel":
                image = transform(image=image)["image"]
                continue
            out = transform(image=image, keypoints=kps)
            image = out["image"]
            kps = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
            if kind == "hflip":
                kps = kps[self.flip_index]
                swaps += 1
        return image, kps, swaps
