"""Missing, corrupt and malformed inputs: skipped and counted, or rejected with clear messages."""

import json
import logging

import pytest
import torch

from kpfast.data import AnnotationError, BadDataError, CocoKeypointDataset, build_dataloader
from kpfast.data.validate import validate_keypoint_annotations

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

ANN = "annotations/person_keypoints_val2017.json"
IMG = "images/val2017"
# Instances (num_keypoints > 0) per image in coco_sample.
PER_IMAGE = {785: 1, 40083: 2, 196141: 4, 197388: 5}


def _ann(root):
    return json.loads((root / ANN).read_text())


def _write(root, data):
    (root / ANN).write_text(json.dumps(data))


def test_missing_images_skipped_counted_and_reported_once(coco_copy, caplog):
    (coco_copy / IMG / "000000040083.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="kpfast.data.coco"):
        ds = CocoKeypointDataset(coco_copy, "val", train=False, max_bad_fraction=0.5)
    assert len(ds) == 12 - PER_IMAGE[40083]
    assert ds.skipped_missing == PER_IMAGE[40083]
    assert [p.name for p in ds.missing_files] == ["000000040083.jpg"]
    warnings = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(warnings) == 1 and "2 instance(s)" in warnings[0].getMessage()
    assert all(ds[i]["meta"]["image_id"] != 40083 for i in range(len(ds)))
    assert ds.epoch_counts()["skipped_missing"] == 2


def test_too_many_missing_images_stop_the_run(coco_copy):
    (coco_copy / IMG / "000000197388.jpg").unlink()  # 5 of 12 instances
    with pytest.raises(BadDataError, match="missing image files"):
        CocoKeypointDataset(coco_copy, "val", max_bad_fraction=0.2)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_undecodable_image_is_skipped_and_another_sample_drawn(coco_copy, damage, caplog):
    path = coco_copy / IMG / "000000000785.jpg"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an image at all" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    ds = CocoKeypointDataset(coco_copy, "val", train=False, max_bad_fraction=0.5)
    bad = [i for i, inst in enumerate(ds.instances) if inst.image_id == 785]
    assert bad == [0]
    with caplog.at_level(logging.WARNING, logger="kpfast.data.coco"):
        sample = ds[0]
    assert sample["meta"]["image_id"] != 785  # a real other sample, never a placeholder
    assert sample["meta"]["index"] != 0
    assert any("cannot decode" in r.getMessage() and "785" in r.getMessage() for r in caplog.records)
    ds[0]  # known-bad file: counted again, not decoded again
    counts = ds.epoch_counts()
    assert counts["failed_decodes"] == 2 and counts["loaded"] == 4
    assert ds.epoch_counts()["failed_decodes"] == 0  # reset per epoch
    assert ds.failed_decodes == 2  # total since construction


def test_decode_failures_in_workers_reach_the_main_process(coco_copy):
    (coco_copy / IMG / "000000040083.jpg").write_bytes(b"\xff\xd8 broken jpeg")  # 2 instances
    cfg = {"root": str(coco_copy), "train_split": "val", "input_size": [32, 24], "batch_size": 2,
           "num_workers": 2, "max_bad_fraction": 0.5, "persistent_workers": True}
    loader = build_dataloader(cfg, "train")
    ds = loader.dataset
    for epoch in range(2):
        ds.set_epoch(epoch)
        ids = torch.cat([b["meta"]["image_id"] for b in loader])
        assert len(ids) == 12 and 40083 not in ids.tolist()
        counts = ds.epoch_counts()
        assert counts["failed_decodes"] >= 2 and counts["loaded"] >= 12 + 2, counts
    assert ds.failed_decodes >= 4


def test_too_many_decode_failures_stop_the_run(coco_copy):
    (coco_copy / IMG / "000000197388.jpg").write_bytes(b"garbage")  # 5 of 12 instances
    ds = CocoKeypointDataset(coco_copy, "val", max_bad_fraction=0.1)
    with pytest.raises(BadDataError, match="decode failures"):
        for i in range(len(ds)):
            ds[i]


def test_invalid_json_names_file_line_and_column(coco_copy):
    lines = json.dumps(_ann(coco_copy), indent=1).splitlines()
    lines.insert(2, ' "oops": ,')  # becomes line 3; the value is missing at column 10
    (coco_copy / ANN).write_text("\n".join(lines))
    with pytest.raises(AnnotationError, match=r"person_keypoints_val2017\.json: invalid JSON at line 3, column 10"):
        CocoKeypointDataset(coco_copy, "val")


@pytest.mark.parametrize("corrupt,message", [
    (lambda d: d["annotations"][0].update(keypoints=[1, 2, 2] * 16), r"annotation id 442619 .*3\*K = 51 numbers, got 48"),
    (lambda d: d["annotations"][1]["keypoints"].__setitem__(2, 3), r"annotation id 198196 .*visibility flags must be 0, 1 or 2, got \[3\]"),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 0, 5]), r"annotation id 230195 .*non-positive size"),
    (lambda d: d["annotations"][4].update(image_id=999), r"annotation id 460541 .*unknown image_id 999"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), r"image id 785: file_name '../../etc/passwd' escapes"),
    (lambda d: d["images"][1].update(file_name="/abs/x.jpg"), r"image id 40083: file_name '/abs/x.jpg' escapes"),
])
def test_malformed_annotations_are_rejected_naming_the_id(coco_copy, corrupt, message):
    data = _ann(coco_copy)
    corrupt(data)
    _write(coco_copy, data)
    with pytest.raises(AnnotationError, match=message):
        CocoKeypointDataset(coco_copy, "val")


def _set_category_keypoints(d, value):
    d["categories"][0]["keypoints"] = value


@pytest.mark.parametrize("corrupt,message", [
    (lambda d: d["annotations"][3].pop("id"), r"annotation #3 \(image id \d+\): missing 'id'"),
    (lambda d: d["annotations"][3].update(id="abc"), r"annotation #3 .*'id' must be an integer, got str 'abc'"),
    (lambda d: d["annotations"][3].update(id=True), r"annotation #3 .*'id' must be an integer, got bool True"),
    (lambda d: d["annotations"][2].update(area="big"),
     r"annotation id 230195 \(#2, .*area must be a finite number >= 0, got str 'big'"),
    (lambda d: d["annotations"][2].update(iscrowd="0"),
     r"annotation id 230195 \(#2, .*iscrowd must be 0 or 1, got str '0'"),
    (lambda d: d["annotations"][2].update(iscrowd=2), r"annotation id 230195 .*iscrowd must be 0 or 1, got int 2"),
    (lambda d: _set_category_keypoints(d, "nose,eyes"),
     r"category id 1: 'keypoints' must be a list of keypoint names, got str 'nose,eyes'"),
    (lambda d: d["annotations"][5].update(id=d["annotations"][1]["id"]),
     r"duplicate annotation id\(s\) 198196: pycocotools keeps one annotation per id"),
    (lambda d: d["images"][2].update(id=d["images"][0]["id"]), r"duplicate image id\(s\) 785"),
])
def test_bad_annotation_fields_are_one_line_naming_entry_field_and_value(coco_copy, corrupt, message):
    """Each problem is one line naming the entry, the field, expected and got (docs/data.md)."""
    data = _ann(coco_copy)
    corrupt(data)
    _write(coco_copy, data)
    with pytest.raises(AnnotationError, match=message) as err:
        CocoKeypointDataset(coco_copy, "val")
    text = str(err.value)
    if "duplicate image" not in text:  # (a duplicate image id also leaves annotations unmatched)
        assert "\n" not in text and text.startswith(str(coco_copy / ANN))
    assert "3*K" not in text  # a string 'keypoints' is not reported as a length problem


def test_duplicate_annotation_ids_name_every_duplicate(coco_sample):
    data = _ann(coco_sample)
    for i, j in ((1, 0), (4, 3), (7, 3)):
        data["annotations"][i]["id"] = data["annotations"][j]["id"]
    ids = sorted({data["annotations"][0]["id"], data["annotations"][3]["id"]})
    with pytest.raises(AnnotationError, match=rf"duplicate annotation id\(s\) {ids[0]}, {ids[1]}:"):
        validate_keypoint_annotations(data, "x.json")


def test_validation_collects_several_problems_and_passes_real_data(coco_sample):
    data = _ann(coco_sample)
    validate_keypoint_annotations(data)  # the real file is valid
    data["annotations"][0]["bbox"] = [0, 0, -1, 3]
    data["annotations"][3]["keypoints"][5] = 7
    with pytest.raises(AnnotationError) as err:
        validate_keypoint_annotations(data, "x.json")
    assert "2 problem(s)" in str(err.value) and "442619" in str(err.value) and "1202706" in str(err.value)


def test_detections_with_unknown_image_are_rejected(coco_copy):
    dets = json.loads((coco_copy / "detections/person_detections_val2017.json").read_text())
    dets[3]["image_id"] = 4242
    (coco_copy / "d.json").write_text(json.dumps(dets))
    with pytest.raises(AnnotationError, match=r"detection #3 \(image id 4242\): unknown image_id"):
        CocoKeypointDataset(coco_copy, "val", train=False, detections=coco_copy / "d.json")


def test_missing_paths_are_reported(tmp_path, coco_sample):
    with pytest.raises(FileNotFoundError, match="no image directory"):
        CocoKeypointDataset(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoKeypointDataset(None, "val", ann_file=tmp_path / "nope.json", image_dir=coco_sample / IMG)
    # Explicit paths work without a root, with the ROOT/{split}2017 layout too.
    (tmp_path / "val2017").symlink_to(coco_sample / IMG)
    (tmp_path / "annotations").symlink_to(coco_sample / "annotations")
    assert len(CocoKeypointDataset(tmp_path, "val")) == 12
    assert len(CocoKeypointDataset(None, "val", ann_file=coco_sample / ANN, image_dir=coco_sample / IMG)) == 12


def test_polygon_dropping_keeps_everything_else_and_never_touches_strings(tmp_path):
    from kpfast.data.validate import load_json

    data = {"images": [{"id": 1, "file_name": 'a"segmentation": [[1]]'}],
            "annotations": [{"segmentation": [[1.5, 2e3, -3], [4, 5]], "note": '"segmentation":[[1, 2]]'},
                            {"segmentation": {"counts": "]]}x[", "size": [1, 2]}},
                            {"segmentation": []}, {"segmentation": [[]]}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    loaded = load_json(path, drop_polygons=True)
    assert [a["segmentation"] for a in loaded["annotations"]] == [None, {"counts": "]]}x[", "size": [1, 2]},
                                                                  None, None]
    for got, want in zip(loaded["annotations"], data["annotations"]):
        assert {k: v for k, v in got.items() if k != "segmentation"} == \
            {k: v for k, v in want.items() if k != "segmentation"}
    assert loaded["images"] == data["images"]
    # Invalid JSON inside a polygon stays an error, reported at its place in the file as it is.
    path.write_text('{"segmentation": [[1] [2]]}')
    with pytest.raises(AnnotationError, match="invalid JSON at line 1, column 23"):
        load_json(path, drop_polygons=True)
