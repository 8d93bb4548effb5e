"""kpfast.geometry: agreement with the published matrices, round trips, stride rules."""

import math

import numpy as np
import pytest
import torch

from kpfast import geometry as g

BOXES = [((320.0, 210.0), (150.0, 200.0), 0.0), ((35.5, 400.25), (96.0, 128.0), 30.0),
         ((600.0, 50.0), (300.0, 400.0), -72.5)]


@pytest.mark.parametrize("center,scale,rot", BOXES)
def test_standard_matches_published_get_affine_transform(center, scale, rot):
    ours = g.crop_matrix(np.array(center), np.array(scale), rot, (192, 256), "standard")
    published = g.get_affine_transform(np.array(center), np.array(scale), rot, (192, 256))
    # The published one goes through cv2.getAffineTransform on float32 points.
    np.testing.assert_allclose(ours, published, atol=1e-3 * max(1.0, np.abs(published).max()), rtol=1e-5)
    inverse = g.get_affine_transform(np.array(center), np.array(scale), rot, (192, 256), inverse=True)
    np.testing.assert_allclose(g.invert_affine(ours), inverse, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("center,scale,rot", BOXES)
def test_udp_matches_published_get_warp_matrix(center, scale, rot):
    ours = g.crop_matrix(np.array(center), np.array(scale), rot, (192, 256), "udp")
    published = g.get_warp_matrix(-rot, 2 * np.array(center), np.array([191.0, 255.0]), np.array(scale))
    np.testing.assert_allclose(ours, published, atol=1e-9)


def test_box_centre_maps_to_crop_centre_per_convention():
    c, s = np.array([100.0, 80.0]), np.array([60.0, 80.0])
    std = g.image_to_crop(c[None], c, s, 17.0, (192, 256), "standard")[0]
    udp = g.image_to_crop(c[None], c, s, 17.0, (192, 256), "udp")[0]
    np.testing.assert_allclose(std, [96.0, 128.0], atol=1e-9)
    np.testing.assert_allclose(udp, [95.5, 127.5], atol=1e-9)
    # UDP: the box's first and last pixel centres land on the crop's first and last.
    corners = c + np.array([[-0.5, -0.5], [0.5, 0.5]]) * s
    np.testing.assert_allclose(g.image_to_crop(corners, c, s, 0.0, (192, 256), "udp"),
                               [[0, 0], [191, 255]], atol=1e-9)


def test_rotation_sign_is_shared_by_both_conventions():
    c, s = np.array([0.0, 0.0]), np.array([100.0, 100.0])
    # A point straight "up" the rotated box (rotation +90: up becomes +x in the image) must land
    # straight up in the crop for both conventions.
    up_in_image = np.array([[50.0 * math.cos(0.0), 0.0]])  # (0,-50) turned by +90 degrees -> (50, 0)
    for conv, centre in (("standard", 50.0), ("udp", 49.5)):
        p = g.image_to_crop(up_in_image, c, s, 90.0, (100, 100), conv)[0]
        assert abs(p[0] - centre) < 1e-6 and p[1] < centre - 40, (conv, p)


def test_heatmap_scale_rules():
    assert g.heatmap_scale((192, 256), (48, 64), "standard") == (0.25, 0.25)
    kx, ky = g.heatmap_scale((192, 256), (48, 64), "udp")
    assert kx == pytest.approx(47 / 191) and ky == pytest.approx(63 / 255)
    # UDP maps the last input pixel centre onto the last heatmap pixel centre.
    np.testing.assert_allclose(g.crop_to_heatmap(np.array([[191.0, 255.0]]), (192, 256), (48, 64), "udp"),
                               [[47.0, 63.0]], atol=1e-5)


@pytest.mark.parametrize("convention", g.CONVENTIONS)
@pytest.mark.parametrize("flipped", [False, True])
def test_image_crop_heatmap_image_round_trip_numpy(convention, flipped):
    rng = np.random.default_rng(0)
    n, k = 6, 17
    center = rng.uniform(50, 600, (n, 2))
    scale = rng.uniform(40, 500, (n, 2))
    rot = rng.uniform(-60, 60, n)
    pts = rng.uniform(0, 640, (n, k, 2))
    crop = g.image_to_crop(pts, center, scale, rot, (192, 256), convention)
    if flipped:
        crop = g.transform_points(crop, g.flip_matrix(192))
    heat = g.crop_to_heatmap(crop, (192, 256), (48, 64), convention)
    direct = g.image_to_heatmap(pts, center, scale, rot, (192, 256), (48, 64), convention, flipped)
    np.testing.assert_allclose(heat, direct, atol=1e-6)
    back = g.heatmap_to_image(heat, center, scale, rot, (192, 256), (48, 64), convention, flipped)
    assert np.abs(back - pts).max() < 1e-3
    back_crop = g.crop_to_image(g.heatmap_to_crop(heat, (192, 256), (48, 64), convention) if not flipped
                                else g.transform_points(g.heatmap_to_crop(heat, (192, 256), (48, 64), convention),
                                                        g.flip_matrix(192)),
                                center, scale, rot, (192, 256), convention)
    assert np.abs(back_crop - pts).max() < 1e-3


@pytest.mark.parametrize("convention", g.CONVENTIONS)
def test_round_trip_torch_matches_numpy(convention):
    rng = np.random.default_rng(1)
    center, scale = rng.uniform(50, 600, (4, 2)), rng.uniform(40, 500, (4, 2))
    rot, pts = rng.uniform(-45, 45, 4), rng.uniform(0, 640, (4, 17, 2))
    flipped = np.array([True, False, True, False])
    ref = g.image_to_heatmap(pts, center, scale, rot, (96, 128), (24, 32), convention, flipped)
    t = g.image_to_heatmap(torch.tensor(pts, dtype=torch.float64), torch.tensor(center),
                           torch.tensor(scale), torch.tensor(rot), (96, 128), (24, 32), convention,
                           torch.tensor(flipped))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-9)
    back = g.heatmap_to_image(t.float(), torch.tensor(center).float(), torch.tensor(scale).float(),
                              torch.tensor(rot).float(), (96, 128), (24, 32), convention, torch.tensor(flipped))
    assert (back.double() - torch.tensor(pts)).abs().max() < 1e-3 * 100  # float32: ~1e-4 relative
    back64 = g.heatmap_to_image(t, torch.tensor(center), torch.tensor(scale), torch.tensor(rot),
                                (96, 128), (24, 32), convention, torch.tensor(flipped))
    assert (back64 - torch.tensor(pts)).abs().max() < 1e-3


def test_bbox_to_center_scale_aspect_and_padding():
    center, scale = g.bbox_xywh_to_center_scale([10, 20, 30, 100], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(center, [25, 70])
    np.testing.assert_allclose(scale, [75 * 1.25, 100 * 1.25])  # widened to 3:4
    center, scale = g.bbox_xywh_to_center_scale(np.array([[0, 0, 200, 100]]), 0.75, 1.0)
    np.testing.assert_allclose(scale, [[200, 200 / 0.75]])  # heightened
    tc, ts = g.bbox_xywh_to_center_scale(torch.tensor([[10.0, 20, 30, 100], [0, 0, 200, 100]]), 0.75)
    np.testing.assert_allclose(ts.numpy(), [[93.75, 125.0], [250.0, 200 / 0.75 * 1.25]], rtol=1e-6)


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match="convention"):
        g.crop_matrix(np.zeros(2), np.ones(2), 0.0, (192, 256), "msra")
    with pytest.raises(ValueError, match="output_size"):
        g.crop_matrix(np.zeros(2), np.ones(2), 0.0, (0, 256))
    with pytest.raises(ValueError, match="aspect_ratio"):
        g.bbox_xywh_to_center_scale([0, 0, 1, 1], 0.0)
    with pytest.raises(ValueError, match="box"):
        g.bbox_xywh_to_center_scale([0, 0, 1], 0.75)
