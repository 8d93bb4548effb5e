"""Embedded default dataset: COCO-format person keypoints on rendered stick-figure people.

Each image has a gradient + noise-texture background with clutter, and 1-3 articulated figures
(head with eyes/nose/ears, filled torso, thick limbs) in sampled poses, sizes, positions and
colours, drawn facing the camera (so the person's left is on the image's right, as for a real
frontal person; that cue survives horizontal-flip augmentation, which swaps the labels). The two
body sides get two different colours, randomly assigned per person, so limbs are easy to trace
without a colour -> side shortcut that flipping would contradict.

Labels follow COCO: ``v=2`` visible, ``v=1`` labelled but occluded (covered by a later person
or an occluder box), ``v=0`` outside the image (stored as ``0, 0, 0``); ``num_keypoints``
counts ``v > 0``; ``bbox`` is the tight box and ``area`` the pixel count of the figure's
silhouette inside the image. Everything is a pure function of ``(seed, split, image index)``.

CLI: ``python -m kpfast.data.synthetic OUT --images N [--val-images M] [--seed S]`` (OUT must be new
or empty, or already hold exactly that dataset; nothing else is ever written into).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np

from .info import COCO_KEYPOINT_NAMES, COCO_SKELETON

__all__ = ["generate_synthetic_dataset", "ensure_synthetic_dataset", "render_synthetic_image",
           "default_cache_root", "DataRootExistsError", "GENERATOR_VERSION"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 1, "val": 2}
_CATEGORY = {"supercategory": "person", "id": 1, "name": "person",
             "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": [list(p) for p in COCO_SKELETON]}
_SKIN = np.array([[224, 189, 160], [198, 150, 115], [160, 110, 80], [110, 75, 50], [240, 210, 185]],
                 dtype=np.float64)  # RGB


def _hsv_colour(rng, hue=None, sat=(0.55, 1.0), val=(0.55, 1.0)):
    h = rng.uniform(0, 180) if hue is None else hue % 180
    hsv = np.uint8([[[h, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _background(rng, h, w) -> np.ndarray:
    """Two-colour linear gradient, low-frequency noise texture and a few clutter shapes."""
    c0 = _hsv_colour(rng, sat=(0.0, 0.5), val=(0.2, 0.9))
    c1 = _hsv_colour(rng, sat=(0.0, 0.5), val=(0.2, 0.9))
    angle = rng.uniform(0, 2 * math.pi)
    # Built at 1/4 resolution and upsampled: the gradient and the texture are smooth anyway.
    sh, sw = max(2, h // 4), max(2, w // 4)
    xs = np.arange(sw, dtype=np.float32)[None, :] * math.cos(angle)
    ys = np.arange(sh, dtype=np.float32)[:, None] * math.sin(angle)
    t = xs + ys
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    small = (c0.astype(np.float32)[None, None] + (c1 - c0).astype(np.float32)[None, None] * t[..., None])
    cells = rng.integers(4, 16)
    noise = rng.normal(0, rng.uniform(8, 30), (cells, cells, 3)).astype(np.float32)
    small += cv2.resize(noise, (sw, sh), interpolation=cv2.INTER_CUBIC)
    img = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    # Fine grain from a small random tile (cheap, still deterministic for the seed).
    tile = rng.integers(-6, 7, (64, 64, 3), dtype=np.int16)
    grain = np.tile(tile, (h // 64 + 1, w // 64 + 1, 1))[:h, :w]
    img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 5)):  # clutter: muted rectangles and circles
        colour = tuple(float(v) for v in _hsv_colour(rng, sat=(0.0, 0.4), val=(0.2, 0.9)))
        if rng.random() < 0.5:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (p0[0] + int(rng.integers(10, w // 3)), p0[1] + int(rng.integers(10, h // 3)))
            cv2.rectangle(img, p0, p1, colour, -1)
        else:
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                       int(rng.integers(5, min(h, w) // 6)), colour, -1, cv2.LINE_AA)
    return img


def _sample_pose(rng, pelvis: np.ndarray, height: float):
    """17 COCO keypoints (K, 2) of a frontal figure plus drawing parameters."""
    u = height
    lean = math.radians(rng.normal(0, 8))
    up = np.array([math.sin(lean), -math.cos(lean)])
    side = np.array([math.cos(lean), math.sin(lean)])  # towards the person's LEFT (image right)
    down = -up
    kp = np.zeros((17, 2))
    neck = pelvis + up * 0.30 * u
    head_r = 0.065 * u
    head = neck + up * (0.045 * u + head_r)
    yaw = rng.uniform(-0.45, 0.45)  # >0: face turned towards the image right
    kp[0] = head + side * yaw * 0.6 * head_r - up * 0.12 * head_r          # nose
    for idx, sgn in ((1, 1), (2, -1)):                                          # eyes
        kp[idx] = head + up * 0.22 * head_r + side * (sgn * 0.38 + yaw * 0.5) * head_r
    for idx, sgn in ((3, 1), (4, -1)):                                          # ears
        kp[idx] = head + side * (sgn * 0.95 + yaw * 0.15) * head_r
    shoulder_half = rng.uniform(0.11, 0.14) * u
    hip_half = rng.uniform(0.075, 0.095) * u
    kp[5], kp[6] = neck + side * shoulder_half, neck - side * shoulder_half
    kp[11], kp[12] = pelvis + side * hip_half, pelvis - side * hip_half

    def direction(angle_deg, outward):
        a = math.radians(angle_deg)
        return down * math.cos(a) + outward * math.sin(a)

    upper_arm, forearm = rng.uniform(0.14, 0.17) * u, rng.uniform(0.13, 0.16) * u
    thigh, shin = rng.uniform(0.21, 0.24) * u, rng.uniform(0.20, 0.23) * u
    for sho, elb, wri, sgn in ((5, 7, 9, 1), (6, 8, 10, -1)):
        outward = side * sgn
        abduction = rng.uniform(-25, 165)
        bend = rng.uniform(-20, 130) * (1 if rng.random() < 0.7 else -1)
        kp[elb] = kp[sho] + direction(abduction, outward) * upper_arm
        kp[wri] = kp[elb] + direction(abduction + bend, outward) * forearm
    for hip, knee, ank, sgn in ((11, 13, 15, 1), (12, 14, 16, -1)):
        outward = side * sgn
        abduction = rng.uniform(-8, 40)
        bend = rng.uniform(-60, 25)
        kp[knee] = kp[hip] + direction(abduction, outward) * thigh
        kp[ank] = kp[knee] + direction(abduction + bend, outward) * shin
    hidden_ear = None
    if abs(yaw) > 0.3:  # the ear on the side the face turns to goes behind the head
        hidden_ear = 3 if yaw > 0 else 4
    return kp, dict(head=head, head_r=head_r, up=up, side=side, neck=neck, yaw=yaw,
                    hidden_ear=hidden_ear)


def _draw_person(canvas, kp, geo, colours, thickness, value=None):
    """Draw one figure; with ``value`` set, draw the silhouette in that value (mask mode)."""
    aa = cv2.LINE_AA if value is None else cv2.LINE_8

    def col(name):
        return value if value is not None else tuple(float(v) for v in colours[name])

    def pt(p):
        return (int(round(p[0] * 16)), int(round(p[1] * 16)))  # 4-bit sub-pixel precision

    def line(a, b, name, t):
        cv2.line(canvas, pt(a), pt(b), col(name), max(1, int(round(t))), aa, shift=4)

    def circle(c, r, name):
        cv2.circle(canvas, pt(c), max(1, int(round(r * 16))), col(name), -1, aa, shift=4)

    limb_t, leg_t = thickness
    # Legs (behind the torso), left side colour "a" or "b" as assigned.
    for hip, knee, ank, side in ((11, 13, 15, "left"), (12, 14, 16, "right")):
        line(kp[hip], kp[knee], side + "_leg", leg_t)
        line(kp[knee], kp[ank], side + "_leg", leg_t * 0.9)
        circle(kp[knee], leg_t * 0.5, side + "_leg")
        circle(kp[ank], leg_t * 0.55, "shoe")
    # Torso: a filled quadrilateral shoulders -> hips.
    quad = np.array([pt(kp[5]), pt(kp[6]), pt(kp[12]), pt(kp[11])], dtype=np.int32)
    cv2.fillConvexPoly(canvas, quad, col("shirt"), aa, shift=4)
    line(geo["neck"], geo["head"], "skin", limb_t * 0.9)
    # Arms in front of the torso.
    for sho, elb, wri, side in ((5, 7, 9, "left"), (6, 8, 10, "right")):
        circle(kp[sho], limb_t * 0.6, side + "_arm")
        line(kp[sho], kp[elb], side + "_arm", limb_t)
        line(kp[elb], kp[wri], side + "_arm", limb_t * 0.85)
        circle(kp[elb], limb_t * 0.45, side + "_arm")
        circle(kp[wri], limb_t * 0.55, "skin")
    # Head with face: ears, eyes, nose.
    r = geo["head_r"]
    for ear in (3, 4):
        if ear != geo["hidden_ear"]:
            circle(kp[ear], r * 0.28, "ear")
    circle(geo["head"], r, "skin")
    circle(geo["head"] + geo["up"] * 0.75 * r, r * 0.55, "hair")
    for eye in (1, 2):
        circle(kp[eye], max(1.0, r * 0.16), "eye")
    circle(kp[0], max(1.0, r * 0.16), "nose")


def render_synthetic_image(seed: int, split: str, index: int):
    """Render image ``index`` of ``split``: returns ``(rgb uint8 (H, W, 3), people)`` where each
    person is ``{"keypoints": (17, 3) x, y, v, "bbox": [x, y, w, h], "area": float}``."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed, _SPLIT_CODES[split], index])
    h, w = int(rng.integers(224, 321)), int(rng.integers(256, 385))
    img = _background(rng, h, w)
    n_people = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20]))
    ids = np.zeros((h, w), dtype=np.int16)  # which person (1-based) owns each pixel; 0: none
    people = []
    for pid in range(1, n_people + 1):
        height = rng.uniform(0.45, 0.9) * h
        # Mostly in frame; sometimes partly cut by the image border.
        margin = 0.25 * height
        px = rng.uniform(0.08 * w, 0.92 * w)
        lo, hi = 0.42 * height, h - 0.5 * height
        py = rng.uniform(lo, max(lo + 1, hi)) if rng.random() > 0.15 else rng.uniform(lo - margin, h - 0.3 * height)
        kp, geo = _sample_pose(rng, np.array([px, py]), height)
        hue_a = rng.uniform(0, 180)
        side_a = _hsv_colour(rng, hue=hue_a)
        side_b = _hsv_colour(rng, hue=hue_a + rng.uniform(50, 130))
        left, right = (side_a, side_b) if rng.random() < 0.5 else (side_b, side_a)
        skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.05)
        colours = {"left_arm": left, "right_arm": right, "left_leg": left * 0.65,
                   "right_leg": right * 0.65, "shirt": _hsv_colour(rng, sat=(0.2, 0.9)),
                   "skin": np.clip(skin, 0, 255), "ear": np.clip(skin * 0.8, 0, 255),
                   "hair": _hsv_colour(rng, sat=(0.2, 0.8), val=(0.05, 0.45)),
                   "eye": np.array([20.0, 20.0, 30.0]), "nose": np.array([200.0, 40.0, 40.0]),
                   "shoe": np.array([35.0, 30.0, 30.0])}
        thickness = (rng.uniform(0.045, 0.06) * height, rng.uniform(0.06, 0.075) * height)
        _draw_person(img, kp, geo, colours, thickness)
        own = np.zeros((h, w), dtype=np.uint8)
        _draw_person(own, kp, geo, colours, thickness, value=1)
        ids[own > 0] = pid
        people.append({"kp": kp, "own": own, "hidden_ear": geo["hidden_ear"]})
    if rng.random() < 0.3:  # occluder boxes over parts of the scene
        for _ in range(int(rng.integers(1, 3))):
            bw, bh = int(rng.uniform(0.1, 0.3) * w), int(rng.uniform(0.1, 0.3) * h)
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            colour = tuple(float(v) for v in _hsv_colour(rng, sat=(0.0, 0.6), val=(0.2, 0.8)))
            cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), colour, -1)
            ids[y0:y0 + bh + 1, x0:x0 + bw + 1] = -1
    result = []
    for pid, person in enumerate(people, start=1):
        ys, xs = np.nonzero(person["own"])
        if xs.size == 0:
            continue  # entirely outside the image
        kps = np.zeros((17, 3))
        for k, (x, y) in enumerate(person["kp"]):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                continue  # outside the image: v=0 with zero coordinates (COCO)
            owner = ids[int(round(y)), int(round(x))]
            visible = owner == pid and k != person["hidden_ear"]
            kps[k] = (x, y, 2 if visible else 1)
        x0, y0 = float(xs.min()), float(ys.min())
        result.append({"keypoints": kps,
                       "bbox": [x0, y0, float(xs.max()) - x0 + 1.0, float(ys.max()) - y0 + 1.0],
                       "area": float(xs.size)})
    return img, result


def _write_split(out: Path, split: str, count: int, seed: int, quality: int) -> dict:
    tag = f"{split}2017"
    image_dir = out / "images" / tag
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rgb, people = render_synthetic_image(seed, split, i)
        image_id = i + 1
        name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for synthetic image {name}")
        (image_dir / name).write_bytes(buf.tobytes())
        images.append({"id": image_id, "file_name": name, "height": rgb.shape[0],
                       "width": rgb.shape[1], "license": 0})
        for person in people:
            kps = person["keypoints"]
            flat = []
            for x, y, v in kps:
                flat += [round(float(x), 2), round(float(y), 2), int(v)]
            annotations.append({
                "id": len(annotations) + 1 + _SPLIT_CODES[split] * 10_000_000,
                "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "keypoints": flat, "num_keypoints": int((kps[:, 2] > 0).sum()),
                "bbox": [round(v, 2) for v in person["bbox"]], "area": person["area"],
            })
    data = {"info": {"description": "kpfast synthetic COCO-format person keypoints",
                     "version": GENERATOR_VERSION, "seed": seed, "split": split},
            "licenses": [{"id": 0, "name": "generated by kpfast", "url": ""}],
            "categories": [_CATEGORY], "images": images, "annotations": annotations}
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"person_keypoints_{tag}.json").write_text(json.dumps(data))
    return {"images": count, "annotations": len(annotations)}


def generate_synthetic_dataset(out: str | Path, num_train: int = 2000, num_val: int = 200,
                               seed: int = 0, quality: int = 90) -> Path:
    """Write the synthetic dataset under ``out`` (COCO layout) and return ``out``.

    Layout: ``annotations/person_keypoints_{train,val}2017.json``, ``images/{train,val}2017/``
    and a ``manifest.json`` recording the parameters (used to recognise a valid cache).
    """
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {split: _write_split(out, split, n, seed, quality)
             for split, n in (("train", num_train), ("val", num_val))}
    manifest = {"generator_version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val,
                "seed": seed, "quality": quality, "stats": stats}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def default_cache_root() -> Path:
    """``$KPFAST_CACHE`` or ``~/.cache/kpfast``."""
    return Path(os.environ.get("KPFAST_CACHE") or Path.home() / ".cache" / "kpfast")


class DataRootExistsError(FileExistsError, ValueError):
    """The data root exists and is not the requested synthetic dataset (nothing was changed).

    A ``FileExistsError`` (an ``OSError``) and a ``ValueError`` (a bad argument), so every CLI
    reports it as a one-line error.
    """


def _describe_mismatch(root: Path, num_train: int, num_val: int, seed: int) -> str | None:
    """``None`` when ``root`` holds exactly the requested synthetic dataset, else what differs."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        return "no kpfast synthetic manifest.json"
    except (OSError, ValueError) as err:
        return f"an unreadable manifest.json ({err})"
    if not isinstance(manifest, dict):
        return "a manifest.json that is not a kpfast synthetic manifest"
    found = tuple(manifest.get(k) for k in ("generator_version", "num_train", "num_val", "seed"))
    wanted = (GENERATOR_VERSION, num_train, num_val, seed)
    if found != wanted:
        return ("a synthetic dataset with generator_version=%r, num_train=%r, num_val=%r, seed=%r"
                % found)
    for split, n in (("train", num_train), ("val", num_val)):
        if not (root / "annotations" / f"person_keypoints_{split}2017.json").is_file():
            return f"an incomplete synthetic dataset (no {split} annotation file)"
        image_dir = root / "images" / f"{split}2017"
        count = sum(1 for _ in image_dir.iterdir()) if image_dir.is_dir() else 0
        if n and count != n:
            return f"an incomplete synthetic dataset ({count} of {n} {split} images)"
    return None


def _cache_is_valid(root: Path, num_train: int, num_val: int, seed: int) -> bool:
    return root.is_dir() and _describe_mismatch(root, num_train, num_val, seed) is None


def ensure_synthetic_dataset(root: str | Path | None = None, num_train: int = 2000,
                             num_val: int = 200, seed: int = 0) -> Path:
    """Return the root of the requested synthetic dataset, generating it only when needed.

    Default root: ``default_cache_root() / f"synthetic_v{V}_s{seed}_{num_train}_{num_val}"``.
    A folder is reused only when its manifest matches the parameters exactly and all files are
    present. Nothing that exists is ever deleted or overwritten: a missing (or empty) ``root`` is
    generated in a fresh temporary sibling directory and renamed into place atomically, so an
    interrupted or concurrent run never leaves a half-written dataset; any other existing
    ``root`` (another dataset, another size, an incomplete cache) raises ``FileExistsError``
    saying what is there and what to do.
    """
    if root is None:
        root = default_cache_root() / f"synthetic_v{GENERATOR_VERSION}_s{seed}_{num_train}_{num_val}"
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataRootExistsError(f"{root} is a file, not a dataset directory; pass another data root")
    if root.is_dir() and any(root.iterdir()):
        mismatch = _describe_mismatch(root, num_train, num_val, seed)
        if mismatch is None:
            return root
        raise DataRootExistsError(
            f"{root} holds {mismatch}, not the requested synthetic dataset (generator_version="
            f"{GENERATOR_VERSION}, num_train={num_train}, num_val={num_val}, seed={seed}); "
            "kpfast never deletes it: pass another data root (an empty or new folder), "
            "or delete that folder yourself")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp", dir=root.parent))  # ours: created here
    try:
        generate_synthetic_dataset(tmp, num_train, num_val, seed)
        try:
            # rename(2) replaces only a missing or empty directory, never a filled one.
            os.rename(tmp, root)
        except OSError:
            if not _cache_is_valid(root, num_train, num_val, seed):  # not a concurrent twin
                raise DataRootExistsError(
                    f"{root} appeared while the synthetic dataset was being generated and is "
                    "not the requested one; pass another data root") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # only our own temporary directory
    log.info("generated synthetic dataset at %s", root)
    return root


def main(argv=None) -> int:
    """Writes only a new (or empty) ``OUT``: an existing dataset or any other filled folder is
    refused in one line and left as it is (:func:`ensure_synthetic_dataset`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     prog="python -m kpfast.data.synthetic")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--images", type=int, default=2000, help="number of train images")
    parser.add_argument("--val-images", type=int, default=200, help="number of val images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = ensure_synthetic_dataset(args.out, args.images, args.val_images, args.seed)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"{out}: {json.dumps(manifest['stats'])}")
    return 0


if __name__ == "__main__":
    import sys

    from kpfast.cli import run_cli

    sys.exit(run_cli(main))
