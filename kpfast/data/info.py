"""Dataset metadata (keypoint names, flip pairs, skeleton, OKS sigmas) as a small dataclass.

Everything is read from the COCO category of the annotation file and optionally overridden
from a config dict, so a category with K != 17 keypoints needs no code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["DatasetInfo", "COCO_KEYPOINT_NAMES", "COCO_SKELETON", "COCO_SIGMAS"]

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# The COCO person category's skeleton, 1-based as in the annotation files.
COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
# Per-keypoint OKS sigmas of the COCO keypoint evaluation (cocoeval.py).
COCO_SIGMAS = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07,
    0.87, 0.87, 0.89, 0.89,
)
COCO_SIGMAS = tuple(s / 10.0 for s in COCO_SIGMAS)

# Name fragments that put a keypoint in the lower body for half-body augmentation.
_LOWER_BODY_WORDS = ("hip", "knee", "ankle", "foot", "heel", "toe")


def _infer_flip_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """Pair ``left_X`` with ``right_X`` (also ``l_X``/``r_X`` and ``X_left``/``X_right``)."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        for left, right in (("left_", "right_"), ("l_", "r_"), ("_left", "_right")):
            if left.startswith("_"):
                if name.endswith(left):
                    other = name[: -len(left)] + right
                else:
                    continue
            elif name.startswith(left):
                other = right + name[len(left):]
            else:
                continue
            j = index.get(other)
            if j is not None:
                pairs.append((i, j))
            break
    return pairs


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """Metadata of one keypoint category.

    Attributes:
        keypoint_names: the K keypoint names, in annotation order.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        skeleton: 0-based ``(a, b)`` index pairs, for drawing.
        sigmas: ``(K,)`` OKS sigmas, or ``None`` when unknown (OKS evaluation then needs them
            from the config).
        upper_body_ids / lower_body_ids: keypoint indices for half-body augmentation.
        category_id / name: the COCO category.
    """

    keypoint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: np.ndarray | None
    upper_body_ids: tuple[int, ...]
    lower_body_ids: tuple[int, ...]
    category_id: int = 1
    name: str = "person"

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def flip_index(self) -> np.ndarray:
        """``(K,)`` permutation: keypoint ``k`` of a flipped sample is keypoint ``flip_index[k]``."""
        index = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    def to_dict(self) -> dict:
        """The metadata a checkpoint stores (names, flip pairs, skeleton, sigmas), so that
        prediction needs no dataset: :meth:`from_dict` reads it back."""
        return {
            "keypoint_names": list(self.keypoint_names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(p) for p in self.skeleton],
            "sigmas": None if self.sigmas is None else [float(s) for s in self.sigmas],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetInfo":
        """The inverse of :meth:`to_dict` (validated as config overrides are)."""
        return cls.from_category({"keypoints": list(data["keypoint_names"])},
                                 {key: data[key] for key in ("flip_pairs", "skeleton", "sigmas")})

    @classmethod
    def coco(cls) -> "DatasetInfo":
        """The 17-keypoint COCO person category with the standard OKS sigmas."""
        return cls.from_category({"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
                                  "skeleton": [list(p) for p in COCO_SKELETON]})

    @classmethod
    def from_category(cls, category: Mapping[str, Any],
                      overrides: Mapping[str, Any] | None = None) -> "DatasetInfo":
        """Build from a COCO category dict, then apply ``overrides`` from the config.

        ``overrides`` may set ``keypoint_names``, ``flip_pairs`` (index pairs or name pairs),
        ``skeleton`` (0-based index pairs), ``sigmas``, ``upper_body_ids``, ``lower_body_ids``.
        Missing pieces default to: flip pairs from ``left_``/``right_`` names, the category's
        skeleton, the COCO sigmas when the names are COCO's, name-based upper/lower body split.
        """
        overrides = dict(overrides or {})
        unknown = set(overrides) - {"keypoint_names", "flip_pairs", "skeleton", "sigmas",
                                    "upper_body_ids", "lower_body_ids"}
        if unknown:
            raise ValueError(f"unknown dataset info override(s) {sorted(unknown)}; expected some of "
                             "keypoint_names, flip_pairs, skeleton, sigmas, upper_body_ids, "
                             "lower_body_ids")
        names = tuple(overrides.get("keypoint_names") or category.get("keypoints") or ())
        if not names:
            raise ValueError(f"category {category.get('id')!r} ({category.get('name')!r}) has no "
                             "'keypoints' names and the config gives no keypoint_names")
        k = len(names)

        def check_index(i, what):
            if not isinstance(i, (int, np.integer)) or not 0 <= i < k:
                raise ValueError(f"{what} index must be an int in [0, {k}), got {i!r}")
            return int(i)

        if "flip_pairs" in overrides:
            pairs = []
            for a, b in overrides["flip_pairs"]:
                if isinstance(a, str):
                    if a not in names or b not in names:
                        raise ValueError(f"flip_pairs name pair {(a, b)!r} not in keypoint names")
                    a, b = names.index(a), names.index(b)
                pairs.append((check_index(a, "flip_pairs"), check_index(b, "flip_pairs")))
        else:
            pairs = _infer_flip_pairs(names)

        if "skeleton" in overrides:
            skeleton = [(check_index(a, "skeleton"), check_index(b, "skeleton"))
                        for a, b in overrides["skeleton"]]
        else:  # the annotation file's skeleton is 1-based
            skeleton = [(check_index(a - 1, "skeleton"), check_index(b - 1, "skeleton"))
                        for a, b in category.get("skeleton") or ()]

        sigmas = overrides.get("sigmas")
        if sigmas is None and names == COCO_KEYPOINT_NAMES:
            sigmas = COCO_SIGMAS
        if sigmas is not None:
            sigmas = np.asarray(sigmas, dtype=np.float64)
            if sigmas.shape != (k,) or not np.all(sigmas > 0):
                raise ValueError(f"sigmas must be {k} positive numbers, got {sigmas.tolist()!r}")

        if "upper_body_ids" in overrides or "lower_body_ids" in overrides:
            upper = [check_index(i, "upper_body_ids") for i in overrides.get("upper_body_ids", ())]
            lower = [check_index(i, "lower_body_ids") for i in overrides.get("lower_body_ids", ())]
        else:
            lower = [i for i, n in enumerate(names) if any(w in n.lower() for w in _LOWER_BODY_WORDS)]
            upper = [i for i in range(k) if i not in lower]
        return cls(keypoint_names=names, flip_pairs=tuple(pairs), skeleton=tuple(skeleton),
                   sigmas=sigmas, upper_body_ids=tuple(upper), lower_body_ids=tuple(lower),
                   category_id=int(category.get("id", 1)), name=str(category.get("name", "")))
