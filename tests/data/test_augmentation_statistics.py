"""Training is unchanged by the faster loader (docs/design.md §Performance): the reduced JPEG
decode and the decode_device="cuda" worker half draw every sample's augmentation exactly as the
reference path (full decode on the CPU) does. The box is sampled before the decode (its scale picks
the reduction) with the same generator, in the same order, so the draws are identical, not merely
alike in distribution: crop centre and scale, rotation, flip, the albumentations stage's draws,
and so the keypoints and their visibility after cropping. Only the crop's pixels differ, by
resampling (tests/data/test_jpeg.py)."""

import numpy as np
import pytest

from kpfast import geometry
from kpfast.data import CocoKeypointDataset
from kpfast.data.jpeg import reduction_for_scale

EPOCHS = 8  # x 40 instances of the fixture set: a few hundred samples
INPUT_SIZE = (128, 96)  # the default run's crop: a fair share of its boxes allows a 1/2 decode
GEOMETRIC_ONLY = {"albumentations": []}


def _draws(dataset):
    """Per sample: the crop's box (centre, scale), rotation, flip, keypoints, weights, and the
    reduction the box allows."""
    out = {k: [] for k in ("center", "scale", "rotation", "flipped", "keypoints", "weights", "reduction")}
    for epoch in range(EPOCHS):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            sample = dataset[i]
            meta = sample["meta"]
            for key in ("center", "scale", "rotation", "flipped"):
                out[key].append(np.asarray(meta[key]))
            out["keypoints"].append(sample["keypoints"].numpy())
            out["weights"].append(sample["weights"].numpy())
            out["reduction"].append(reduction_for_scale(meta["scale"], INPUT_SIZE[::-1]))
    return {k: np.stack(v) for k, v in out.items()}


def _assert_same_draws(got, ref):
    for key in ("center", "scale", "rotation", "flipped", "keypoints", "weights"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


def _assert_augmented(draws, base_scale):
    # Not a vacuous comparison: the draws span the default augmentation, and a fair share of
    # the samples were decoded at reduced size.
    n = len(draws["flipped"])
    assert n >= 300
    assert 0.35 < draws["flipped"].mean() < 0.65  # flip p=0.5
    rotated = np.abs(draws["rotation"]) > 0
    assert 0.45 < rotated.mean() < 0.75 and np.abs(draws["rotation"]).max() <= 40.0  # p=0.6, 40 deg
    ratio = draws["scale"][:, 0] / base_scale
    assert ratio.std() > 0.05  # scale range [0.75, 1.25] (half-body crops aside)
    visible = draws["weights"] > 0
    assert 0.0 < visible.mean() < 1.0  # some keypoints leave the crop
    assert (draws["reduction"] > 1).mean() > 0.1


@pytest.fixture(scope="module")
def reference(synthetic_root):
    return CocoKeypointDataset(synthetic_root, "train", input_size=INPUT_SIZE, decode_reduction_margin=None)


def test_reduced_decode_draws_the_reference_augmentation(synthetic_root, reference):
    ref = _draws(reference)
    got = _draws(CocoKeypointDataset(synthetic_root, "train", input_size=INPUT_SIZE))
    _assert_same_draws(got, ref)
    base = np.array([geometry.bbox_xywh_to_center_scale(inst.bbox, reference.aspect_ratio, reference.padding)[1][0]
                     for inst in reference.instances])
    _assert_augmented(got, np.tile(base, EPOCHS))


def test_cuda_worker_half_draws_the_reference_augmentation(synthetic_root):
    # decode_device="cuda" runs no albumentations stage: compared with the CPU path without it.
    kw = dict(input_size=INPUT_SIZE, augmentation=GEOMETRIC_ONLY)
    ref = _draws(CocoKeypointDataset(synthetic_root, "train", decode_reduction_margin=None, **kw))
    got = _draws(CocoKeypointDataset(synthetic_root, "train", decode_device="cuda", **kw))
    _assert_same_draws(got, ref)
    assert 0.35 < got["flipped"].mean() < 0.65 and (np.abs(got["rotation"]) > 0).any()


def test_precomputed_boxes_are_the_per_sample_ones(reference):
    # The table's boxes, computed once at construction, give each sample the plan the one-box
    # computation gives, draw for draw.
    for row in range(len(reference)):
        inst = reference.instances[row]
        box, matrix = reference._plan_crop(inst, reference._rng(row, 0), row)
        ref_box, ref_matrix = reference._plan_crop(inst, reference._rng(row, 0))
        assert np.array_equal(matrix, ref_matrix) and np.array_equal(box.scale, ref_box.scale), row


def _albumentations_streams(dataset, monkeypatch):
    """Per (epoch, index): the first draw of the generator the albumentations stage is handed."""
    seen = []
    augmenter = dataset.crop_augmenter
    original = type(augmenter).__call__

    def recording(self, image, keypoints, rng):
        seen.append(_peek(rng))
        return original(self, image, keypoints, rng)

    monkeypatch.setattr(type(augmenter), "__call__", recording)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            dataset[i]
    monkeypatch.undo()
    return seen


def _peek(rng):
    """``rng``'s next 64-bit draw, without advancing it."""
    twin = np.random.Generator(type(rng.bit_generator)())
    twin.bit_generator.state = rng.bit_generator.state
    return int(twin.integers(2**63 - 1))


def test_the_albumentations_stage_has_its_own_stream_on_both_paths(synthetic_root, monkeypatch):
    """Its draws do not move when the box jitter draws more or fewer numbers (here: no rotation,
    shift or half-body draws at all), and the device path's photometric seed is the first draw of
    the same stream, so both decode paths augment a sample from the same numbers' source."""
    default = CocoKeypointDataset(synthetic_root, "train", input_size=INPUT_SIZE)
    fewer_box_draws = CocoKeypointDataset(
        synthetic_root, "train", input_size=INPUT_SIZE,
        augmentation={"rotation": {"p": 0.0}, "shift": {"p": 0.0}, "half_body": {"p": 0.0}})
    streams = _albumentations_streams(default, monkeypatch)
    assert len(set(streams)) == len(streams) == 2 * len(default)  # a stream per (epoch, index)
    assert _albumentations_streams(fewer_box_draws, monkeypatch) == streams
    device = CocoKeypointDataset(synthetic_root, "train", input_size=INPUT_SIZE, decode_device="cuda")
    seeds = []
    for epoch in range(2):
        device.set_epoch(epoch)
        seeds += [int(device[i]["photometric_seed"]) for i in range(len(device))]
    assert seeds == streams
