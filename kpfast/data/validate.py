"""Validation of COCO keypoint annotation files and detector results before they are used.

Every problem names the file and the annotation or image id; up to ``max_errors`` problems are
collected so one run shows what is wrong instead of failing one problem at a time.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from pathlib import Path
from typing import Any

__all__ = ["AnnotationError", "load_json", "validate_keypoint_annotations", "validate_detections"]


class AnnotationError(ValueError):
    """An annotation or detection file that cannot be used; the message lists the problems."""


# The value of a "segmentation" key when it is a polygon list: a list of lists holding only
# number characters. It cannot contain a quote, so it can neither start nor end inside a string.
_NUMBERS = rb"\[[-+.0-9eE\s,]*\]"
_POLYGONS = re.compile(rb'"segmentation"\s*:\s*\[\s*(?:' + _NUMBERS + rb"\s*(?:,\s*" + _NUMBERS
                       + rb"\s*)*)?\]")


def load_json(path: str | Path, drop_polygons: bool = False) -> Any:
    """Load a JSON file; invalid JSON raises :class:`AnnotationError` naming line and column.

    ``drop_polygons``: replace every polygon ``segmentation`` value by ``null`` before parsing.
    Polygons are most of a COCO keypoint file (their floats most of its parsing time) and the
    keypoint loader never reads them; crowd RLE segmentations are left as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    raw = path.read_bytes()
    if drop_polygons:
        raw = _POLYGONS.sub(b'"segmentation":null', raw)
    try:
        return json.loads(raw)
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        if drop_polygons:  # report the position in the file as it is
            return load_json(path)
        raise AnnotationError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: "
                              f"{err.msg}") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply to read") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise AnnotationError(f"{path}: unreadable number in the JSON ({' '.join(str(err).split())[:160]})") from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id_problem(v) -> str:
    if _is_int(v):
        return f"'id' must be an integer in [-2**63, 2**63), got {v}"
    return f"'id' must be an integer, got {_show(v)}"


def _is_id(v) -> bool:
    """An integer id that fits the int64 arrays ids are kept in (and pycocotools' numpy)."""
    return _is_int(v) and -(2**63) <= v < 2**63


def _all_finite_numbers(values: list) -> bool:
    """``_is_number`` for every element, at C speed (COCO train has 262k annotations x 51)."""
    types = set(map(type, values))
    if types <= {int}:
        return True
    return types <= {int, float} and all(map(math.isfinite, values))


def _show(value) -> str:
    """A value and its type, for 'expected X, got Y' messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _duplicates(ids: list) -> list:
    seen, dup = set(), set()
    for i in ids:
        (dup if i in seen else seen).add(i)
    return sorted(dup)


def _list_ids(ids: list, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _escapes_root(file_name: str) -> bool:
    """True when ``file_name`` is absolute or leaves the image directory through ``..``."""
    name = file_name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return True
    normalized = posixpath.normpath(name)
    return normalized == ".." or normalized.startswith("../")


class _Problems:
    def __init__(self, source: str, max_errors: int):
        self.source, self.max_errors, self.items = source, max_errors, []
        self.total = 0

    def add(self, message: str):
        self.total += 1
        if len(self.items) < self.max_errors:
            self.items.append(message)

    def raise_if_any(self):
        if self.total == 1:  # the common case: one line naming the file, the entry and the field
            raise AnnotationError(f"{self.source}: {self.items[0]}")
        if self.total:
            more = f"\n  ... and {self.total - len(self.items)} more" if self.total > len(self.items) else ""
            raise AnnotationError(f"{self.source}: {self.total} problem(s) in the annotations:\n  "
                                  + "\n  ".join(self.items) + more)


def validate_keypoint_annotations(data: Any, source: str = "<annotations>",
                                  category_id: int | None = None, max_errors: int = 20) -> None:
    """Check a loaded COCO keypoint annotation dict; raise :class:`AnnotationError` on problems.

    Checks: the ``images``/``annotations``/``categories`` lists; a keypoint category; unique
    image ids and relative ``file_name``s that stay inside the image root; per annotation a known
    ``image_id``, a known category, ``keypoints`` of length ``3 * K`` with finite numbers and
    visibility in {0, 1, 2}, and a ``bbox`` of 4 finite numbers with positive width and height;
    integer annotation ids unique in the file (pycocotools keeps one annotation per id, so a
    duplicate would silently change the evaluation), ``iscrowd`` 0 or 1 and a finite ``area`` >= 0
    when present, and keypoint categories whose ``keypoints`` is a list of names.
    (``num_keypoints`` is not trusted: the loader counts the visibility flags itself.)
    """
    problems = _Problems(source, max_errors)
    if not isinstance(data, dict):
        raise AnnotationError(f"{source}: expected a JSON object with images/annotations/"
                              f"categories, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{source}: missing or non-list '{key}' "
                                  f"(got {type(data.get(key)).__name__})")
    categories, keypoint_cats = {}, {}
    for index, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            problems.add(f"category #{index} {str(cat)[:60]} has no 'id'")
            continue
        categories[cat["id"]] = cat
        names = cat.get("keypoints")
        if names is None or names == []:
            continue  # not a keypoint category
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            problems.add(f"category id {cat['id']!r}: 'keypoints' must be a list of keypoint names, "
                         f"got {_show(names)}")
            continue
        keypoint_cats[cat["id"]] = cat
    if category_id is not None and category_id not in keypoint_cats:
        problems.raise_if_any()
        raise AnnotationError(f"{source}: no keypoint category with id {category_id} "
                              f"(keypoint categories: {sorted(keypoint_cats)})")
    if not keypoint_cats:
        problems.raise_if_any()
        raise AnnotationError(f"{source}: no category has a 'keypoints' list")

    image_ids = set()
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            problem = (_id_problem(img.get("id")) if isinstance(img, dict)
                       else f"'id' must be an integer, got {_show(img)}")
            problems.add(f"image #{index}: {problem}")
            continue
        iid = img["id"]
        image_ids.add(iid)
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            problems.add(f"image id {iid}: missing 'file_name'")
        elif _escapes_root(name):
            problems.add(f"image id {iid}: file_name {name!r} escapes the image root "
                         "(absolute path or '..')")
        for dim in ("width", "height"):
            if dim in img and not (_is_number(img[dim]) and img[dim] > 0):
                problems.add(f"image id {iid}: {dim} must be positive, got {img[dim]!r}")
    duplicate_images = _duplicates([img["id"] for img in data["images"]
                                    if isinstance(img, dict) and _is_id(img.get("id"))])
    if duplicate_images:
        problems.add(f"duplicate image id(s) {_list_ids(duplicate_images)}: each image needs its own id")

    annotation_ids = []
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.add(f"annotation #{index}: not an object, got {_show(ann)}")
            continue
        aid = ann.get("id")
        where = (f"annotation id {aid} (#{index}, image id {ann.get('image_id')!r})" if _is_id(aid)
                 else f"annotation #{index} (image id {ann.get('image_id')!r})")
        if "id" not in ann:
            problems.add(f"{where}: missing 'id' (an integer unique in the file)")
        elif not _is_id(aid):
            problems.add(f"{where}: {_id_problem(aid)}")
        else:
            annotation_ids.append(aid)
        if ann.get("image_id") not in image_ids:
            problems.add(f"{where}: unknown image_id {ann.get('image_id')!r}")
        if "iscrowd" in ann and not (_is_int(ann["iscrowd"]) and ann["iscrowd"] in (0, 1)):
            problems.add(f"{where}: iscrowd must be 0 or 1, got {_show(ann['iscrowd'])}")
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            problems.add(f"{where}: area must be a finite number >= 0, got {_show(ann['area'])}")
        cat = keypoint_cats.get(ann.get("category_id"))
        if cat is None:
            if ann.get("category_id") not in categories:
                problems.add(f"{where}: unknown category_id {ann.get('category_id')!r}")
            continue  # non-keypoint (or already reported) categories are not ours to check further
        k = len(cat["keypoints"])
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k:
            n = len(kps) if isinstance(kps, list) else _show(kps)
            problems.add(f"{where}: keypoints must be a list of 3*K = {3 * k} numbers, got {n} "
                         f"(K = {k} keypoint names in category {cat['id']!r})")
        elif not _all_finite_numbers(kps):
            problems.add(f"{where}: keypoints contain non-numbers or non-finite values")
        else:
            bad = sorted(set(kps[2::3]) - {0, 1, 2})
            if bad:
                problems.add(f"{where}: visibility flags must be 0, 1 or 2, got {bad}")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.add(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
        elif not (box[2] > 0 and box[3] > 0):
            problems.add(f"{where}: bbox {box} has non-positive size (w={box[2]}, h={box[3]})")
    duplicate_annotations = _duplicates(annotation_ids)
    if duplicate_annotations:
        problems.add(f"duplicate annotation id(s) {_list_ids(duplicate_annotations)}: pycocotools "
                     "keeps one annotation per id, so evaluation would silently be wrong; "
                     "give each annotation its own id")
    problems.raise_if_any()


def validate_detections(data: Any, image_ids: set[int], source: str = "<detections>",
                        max_errors: int = 20) -> None:
    """Check a COCO results list of ``{image_id, category_id, bbox, score}`` detections."""
    if not isinstance(data, list):
        raise AnnotationError(f"{source}: expected a JSON list of detections, got "
                              f"{type(data).__name__}")
    problems = _Problems(source, max_errors)
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            problems.add(f"detection #{i}: not an object")
            continue
        where = f"detection #{i} (image id {det.get('image_id')!r})"
        if det.get("image_id") not in image_ids:
            problems.add(f"{where}: unknown image_id {det.get('image_id')!r}")
        box = det.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.add(f"{where}: bbox must be 4 finite numbers, got {box!r}")
        if not _is_number(det.get("score")):
            problems.add(f"{where}: score must be a finite number, got {det.get('score')!r}")
    problems.raise_if_any()
