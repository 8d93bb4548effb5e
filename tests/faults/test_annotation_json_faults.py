"""Annotation JSON a careless or hostile source produces: deep nesting, numbers Python will not
convert, ids outside int64. Each is one AnnotationError naming the file or the entry
(docs/files.md, "Errors")."""

import pytest

from kpfast.data.validate import AnnotationError, load_json, validate_keypoint_annotations


def test_deeply_nested_json_annotations_name_the_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(AnnotationError, match="ann.json.*nested too deeply"):
        load_json(path)


def test_a_5000_digit_number_in_annotations_names_the_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [{"id": ' + "9" * 5000 + "}]}")
    with pytest.raises(AnnotationError, match="ann.json"):
        load_json(path)


def test_image_id_beyond_int64_is_an_annotation_problem():
    data = {"images": [{"id": 2**63, "file_name": "a.jpg", "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 1, "name": "person", "keypoints": ["a"], "skeleton": []}]}
    with pytest.raises(AnnotationError, match=r"'id' must be an integer in \[-2\*\*63"):
        validate_keypoint_annotations(data, "ann.json")


@pytest.mark.parametrize("text", ["[" * 200000 + "]" * 200000, '[{"image_id": ' + "9" * 5000 + "}]", "{not json"])
def test_predict_boxes_that_cannot_be_read_name_the_file(tmp_path, text):
    from pathlib import Path

    from kpfast.predict import load_boxes

    boxes = tmp_path / "boxes.json"
    boxes.write_text(text)
    with pytest.raises(ValueError, match=r"--boxes .*boxes\.json"):
        load_boxes(str(boxes), [Path("a.jpg")])
