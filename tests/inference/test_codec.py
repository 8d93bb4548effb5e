"""HeatmapCodec: encode/decode round trips, the flip merge, coordinate frames, logit activation and
build_codec's reading of a config (kpfast/codecs/heatmap.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kpfast import geometry, vocabulary
from kpfast.codecs import HeatmapCodec, build_codec

# Sub-pixel keypoints well inside a 16x12 map (x, y in heatmap pixels).
KEYPOINTS = torch.tensor([[[2.3, 4.1], [8.7, 9.6], [5.0, 12.2], [6.45, 3.55]]])


def _codec(encoding, decoder, **kw):
    return HeatmapCodec(input_size=(64, 48), heatmap_size=(16, 12), encoding=encoding, sigma=2.0, decoder=decoder,
                        backend="torch", **kw)


@pytest.mark.parametrize("encoding", ["udp", "dark"])
def test_encode_then_dark_decode_recovers_sub_pixel_keypoints(encoding):
    codec = _codec(encoding, "dark", blur_kernel=1)  # blur 1: the Taylor step on the rendered map itself
    heatmaps, weights = codec.encode(KEYPOINTS)
    assert heatmaps.shape == (1, 4, 16, 12) and torch.equal(weights, torch.ones(1, 4))
    coords, scores = codec.decode(heatmaps)
    np.testing.assert_allclose(coords, KEYPOINTS.double().numpy(), atol=0.02)
    assert scores.dtype == np.float64 and (scores > 0.8).all()


def test_msra_encodes_at_the_rounded_centre_and_argmax_decodes_it():
    codec = _codec("msra", "argmax")
    heatmaps, _ = codec.encode(KEYPOINTS)
    coords, scores = codec.decode(heatmaps)
    np.testing.assert_array_equal(coords, np.floor(KEYPOINTS.double().numpy() + 0.5))
    np.testing.assert_allclose(scores, 1.0)


def test_udp_decoder_refines_towards_the_true_centre_where_argmax_cannot():
    heatmaps, _ = _codec("udp", "udp").encode(KEYPOINTS)
    refined, _ = _codec("udp", "udp").decode(heatmaps)
    integer, _ = _codec("udp", "argmax").decode(heatmaps)
    truth = KEYPOINTS.double().numpy()
    # The UDP refinement (blur 11 on a 16x12 map) is within 0.15 px; integer peaks are off by up to 0.45.
    assert np.abs(refined - truth).max() < 0.2 < np.abs(integer - truth).max()


def test_keypoint_off_the_map_gets_weight_zero():
    codec = _codec("udp", "dark")
    _, weights = codec.encode(torch.tensor([[[3.0, 3.0], [80.0, 3.0]]]))
    assert weights.tolist() == [[1.0, 0.0]]


def test_flip_merge_with_flip_pairs_puts_the_mirrored_prediction_back():
    h, w = 16, 12
    codec = _codec("udp", "dark", flip_pairs=[(1, 2)])
    mirrored = KEYPOINTS.clone()
    mirrored[..., 0] = (w - 1) - mirrored[..., 0]  # UDP: pixel-centre mirror x -> W-1-x
    mirrored = mirrored[:, [0, 2, 1, 3]]  # the left/right pair swaps channels
    plain, _ = codec.encode(KEYPOINTS)
    flipped, _ = codec.encode(mirrored)
    torch.testing.assert_close(codec.flip_merge(plain, flipped), plain, atol=1e-5, rtol=0)
    # Without the pair the swapped channels do not come back: the pairs are used, not ignored.
    unpaired = _codec("udp", "dark").flip_merge(plain, flipped)
    assert (unpaired[:, 1] - plain[:, 1]).abs().max() > 0.1
    with pytest.raises(ValueError, match="flip_pairs"):
        _codec("udp", "dark", flip_pairs=[(0, 7)]).flip_merge(plain, flipped)


def test_flip_shift_is_msra_only_unless_given():
    assert _codec("msra", "dark").flip_shift is True
    assert _codec("udp", "dark").flip_shift is False and _codec("dark", "dark").flip_shift is False
    assert _codec("udp", "dark", flip_shift=True).flip_shift is True
    a, b = torch.rand(1, 4, 16, 12), torch.rand(1, 4, 16, 12)
    shifted = _codec("msra", "dark").flip_merge(a, b)
    back = b.flip(-1)
    torch.testing.assert_close(shifted[..., 1:], 0.5 * (a[..., 1:] + back[..., :-1]))


# Values of the removed engine helpers (builders.heatmap_to_image / heatmap_to_crop at b9e3a6f) on
# fixed inputs: a 64x48 input, 16x12 heatmaps, a rotated and mirrored crop.
OLD_COORDS = np.array([[[3.25, 7.5], [0.0, 0.0], [11.0, 15.0]]])
OLD_META = {"center": np.array([100.0, 150.0]), "scale": np.array([96.0, 128.0]), "rotation": 30.0, "flipped": True}
OLD_VALUES = {
    "msra": ([[[119.32050807568879, 156.53589838486224], [171.8371685740842, 117.5743741577959],
               [35.626933041053576, 177.49742261192856]]],
             [[[13.0, 30.0], [0.0, 0.0], [44.0, 60.0]]]),
    "udp": ([[[117.00558974703986, 159.81818181818184], [173.56921938165303, 118.57437415779594],
              [26.430780618346915, 181.42562584220408]]],
            [[[13.886363636363635, 31.5], [0.0, 0.0], [47.0, 63.0]]]),
}


@pytest.mark.parametrize("encoding", ["msra", "udp"])
def test_heatmap_to_image_and_crop_equal_the_old_engine_helpers(encoding):
    codec = _codec(encoding, "dark")
    to_image, to_crop = OLD_VALUES[encoding]
    image_xy = codec.heatmap_to_image(OLD_COORDS, codec.sample_matrices([OLD_META]))
    np.testing.assert_allclose(image_xy, to_image, rtol=0, atol=1e-9)
    np.testing.assert_allclose(codec.heatmap_to_crop(OLD_COORDS), to_crop, rtol=0, atol=1e-12)
    np.testing.assert_allclose(codec.crop_to_heatmap(codec.heatmap_to_crop(OLD_COORDS)), OLD_COORDS, atol=1e-12)
    # A recorded affine (what kpfast.data's samples carry) is used as is.
    recorded = {"affine": codec.image_to_heatmap_matrix(OLD_META["center"], OLD_META["scale"], 30.0, True)}
    np.testing.assert_allclose(codec.heatmap_to_image(OLD_COORDS, codec.sample_matrices([recorded])), to_image,
                               rtol=0, atol=1e-9)


def test_decode_spaces_are_the_coordinate_maps_of_the_heatmap_coordinates():
    codec = _codec("udp", "dark")
    heatmaps, _ = codec.encode(KEYPOINTS)
    matrices = codec.sample_matrices([OLD_META])
    coords, scores = codec.decode(heatmaps)
    crop, crop_scores = codec.decode(heatmaps, space="crop")
    image, _ = codec.decode(heatmaps, space="image", to_heatmap=matrices)
    np.testing.assert_array_equal(crop, codec.heatmap_to_crop(coords))
    np.testing.assert_array_equal(image, codec.heatmap_to_image(coords, matrices))
    np.testing.assert_array_equal(scores, crop_scores)
    # Image points map back onto the heatmap points through the crop's affine.
    np.testing.assert_allclose(geometry.transform_points(image, matrices), coords, atol=1e-9)
    with pytest.raises(ValueError, match="to_heatmap"):
        codec.decode(heatmaps, space="image")
    with pytest.raises(ValueError, match="space"):
        codec.decode(heatmaps, space="input")


def test_logit_activation_is_a_sigmoid_only_for_logit_networks():
    logits = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(_codec("udp", "dark", logits=True).activate(logits), logits.sigmoid())
    assert _codec("udp", "dark").activate(logits) is logits


def _config(**loss):
    loss = {"kind": "mse", "encoding": "udp", "sigma": 2.0, "adaptive_sigma": False} | loss
    return SimpleNamespace(data=SimpleNamespace(input_size=[256, 192]), loss=SimpleNamespace(**loss),
                           eval=SimpleNamespace(decoder="udp", blur_kernel=7), train=SimpleNamespace(ops_backend="torch"))


@pytest.mark.parametrize("kind, logits",
                         [(kind.name, kind.takes_logits) for kind in vocabulary.LOSS_KIND_TRAITS])
def test_build_codec_reads_the_config_by_attribute(kind, logits):
    codec = build_codec(_config(kind=kind, encoding="msra"), flip_pairs=[[1, 2]])
    assert codec.logits is logits
    assert (codec.input_size, codec.heatmap_size) == ((256, 192), (64, 48))
    assert (codec.encoding, codec.convention, codec.flip_shift) == ("msra", "standard", True)
    assert (codec.decoder, codec.blur_kernel, codec.backend, codec.flip_pairs) == ("udp", 7, "torch", ((1, 2),))
    assert codec.sigma == 2.0


def test_build_codec_takes_the_models_stride_and_scales_an_adaptive_sigma():
    from kpfast.ops import adaptive_sigma

    checked = []

    class Model:
        stride = 8

        def check_input_size(self, h, w):
            checked.append((h, w))

    codec = build_codec(_config(adaptive_sigma=True), model=Model())
    assert checked == [(256, 192)] and codec.heatmap_size == (32, 24)
    assert codec.sigma == pytest.approx(float(adaptive_sigma((32, 24), 2.0))) and codec.sigma != 2.0


def test_loss_uses_the_codec_sigma_and_encoding():
    codec = _codec("udp", "dark")
    targets, weights = codec.encode(KEYPOINTS)
    # The MSE loss of the very targets the codec encodes is zero; of a shifted prediction it is not.
    loss = codec.loss("mse", reduction="mean")
    assert float(loss(targets, KEYPOINTS, weights)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(targets.roll(1, -1), KEYPOINTS, weights)) > 1e-4


@pytest.mark.parametrize("field, value, match", [("input_size", (0, 48), "input_size"),
                                                 ("heatmap_size", (16,), "heatmap_size"),
                                                 ("encoding", "gauss", "encoding")])
def test_bad_settings_are_one_line_errors_naming_the_field(field, value, match):
    settings = {"input_size": (64, 48), "heatmap_size": (16, 12), "encoding": "udp"} | {field: value}
    with pytest.raises((ValueError, TypeError), match=match):
        HeatmapCodec(**settings)
