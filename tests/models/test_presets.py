"""build_model / presets / PoseModel API."""

from __future__ import annotations

import pytest
import torch

from kpfast.models import PoseModel, available_models, build_model, model_options

PRESET_NAMES = ["litehrnet_18", "litehrnet_30", "naive_litehrnet_18", "wider_naive_litehrnet_18", "litehrnet_w48_b4"]


def test_available_models_lists_every_preset():
    assert sorted(available_models()) == sorted(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("size", [(256, 192), (384, 288)])
def test_preset_output_shapes(name, size):
    model = build_model(name).eval()
    assert isinstance(model, PoseModel)
    assert model.num_keypoints == 17 and model.stride == 4 and model.input_multiple == 32
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert set(out) == {"heatmaps"}
    assert out["heatmaps"].shape == (1, 17, size[0] // 4, size[1] // 4)
    assert torch.isfinite(out["heatmaps"]).all()


def test_preset_widths():
    def first_branch_width(name):
        return build_model(name).head.final_layer.in_channels

    assert first_branch_width("litehrnet_18") == 40
    assert first_branch_width("naive_litehrnet_18") == 30
    assert first_branch_width("wider_naive_litehrnet_18") == 40
    assert first_branch_width("litehrnet_w48_b4") == 48
    w48 = build_model("litehrnet_w48_b4").backbone
    assert w48.stage2[0].in_channels == [48, 96, 192, 384]
    assert len(build_model("litehrnet_30").backbone.stage1) == 8
    assert len(build_model("litehrnet_18").backbone.stage1) == 4


def test_visibility_head_and_custom_keypoints():
    model = build_model("litehrnet_18", num_keypoints=5, visibility_head=True, **{"num_modules": (1, 1, 1)})
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"heatmaps", "visibility"}
    assert out["heatmaps"].shape == (2, 5, 16, 24)
    assert out["visibility"].shape == (2, 5)
    assert model.num_keypoints == 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_num_keypoints_rejected(bad):
    with pytest.raises(ValueError, match="num_keypoints"):
        build_model("litehrnet_18", num_keypoints=bad)


def test_unknown_preset_names_it_and_lists_valid():
    with pytest.raises(ValueError) as info:
        build_model("litehrnet_99")
    message = str(info.value)
    assert "litehrnet_99" in message
    for name in PRESET_NAMES:
        assert name in message


def test_unknown_option_names_it_and_lists_valid():
    with pytest.raises(ValueError) as info:
        build_model("litehrnet_18", num_brunches=3)
    message = str(info.value)
    assert "num_brunches" in message
    for option in ("num_branches", "base_width", "num_modules", "reduce_ratios", "with_fuse"):
        assert option in message
    assert set(model_options()) >= {"stem_channels", "num_blocks", "block_type", "gradient_checkpointing"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(num_branches=5), "num_branches"),
        (dict(num_branches=0), "num_branches"),
        (dict(base_width=41), "base_width"),
        (dict(num_blocks=(2, 2)), "num_blocks"),
        (dict(reduce_ratios=(8, 0, 8)), "reduce_ratios"),
        (dict(block_type="dense"), "block_type"),
        (dict(with_fuse="yes"), "with_fuse"),
        (dict(stem_channels=31), "stem_channels"),
        (dict(num_modules=(2,), num_branches=4), "num_branches"),
    ],
)
def test_invalid_structure_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("litehrnet_18", **overrides)


@pytest.mark.parametrize("num_branches, multiple", [(1, 4), (2, 8), (3, 16), (4, 32)])
@pytest.mark.parametrize("block_type", ["lite", "naive"])
def test_number_of_branches_configurable(num_branches, multiple, block_type):
    model = build_model(
        "litehrnet_18", num_branches=num_branches, block_type=block_type, num_modules=(1, 1, 1), num_blocks=(1, 1, 1)
    ).eval()
    assert model.input_multiple == multiple
    widths = model.backbone.stage2[0].in_channels
    assert widths == [40 * 2**b for b in range(num_branches)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 2 * multiple, 3 * multiple))
    assert out["heatmaps"].shape == (1, 17, 2 * multiple // 4, 3 * multiple // 4)


def test_structure_overrides_take_effect():
    model = build_model(
        "litehrnet_18",
        base_width=16,
        stem_channels=16,
        num_modules=(1, 2),
        num_branches=3,
        num_blocks=(3, 1),
        reduce_ratios=(4, 2),
        with_fuse=False,
    )
    backbone = model.backbone
    assert backbone.num_stages == 2 and not hasattr(backbone, "stage2")
    assert len(backbone.stage0) == 1 and len(backbone.stage1) == 2
    assert len(backbone.stage0[0].layers) == 3 and len(backbone.stage1[0].layers) == 1
    assert backbone.stage1[0].in_channels == [16, 32, 64]
    assert not backbone.stage0[0].with_fuse and not hasattr(backbone.stage0[0], "fuse_layers")
    crw = backbone.stage1[0].layers[0].cross_resolution_weighting
    assert crw.conv1.conv.out_channels == (8 + 16 + 32) // 2  # reduce ratio 2
    assert backbone.stem.conv1.conv.out_channels == 16
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 48))["heatmaps"].shape == (1, 17, 8, 12)


@pytest.mark.parametrize("size", [(250, 192), (256, 190), (16, 32), (0, 32)])
def test_input_sizes_the_network_cannot_take_are_rejected(size):
    model = build_model("litehrnet_18", num_modules=(1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 32"):
        model.check_input_size(*size)
    if min(size) > 0:
        with pytest.raises(ValueError, match="multiple of 32"):
            model(torch.randn(1, 3, *size))


def test_wrong_image_tensor_rejected():
    model = build_model("litehrnet_18", num_modules=(1, 1, 1))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="int"):
        model.check_input_size(64.0, 64)


def test_fewer_stages_reuse_uniform_per_stage_options():
    model = build_model("litehrnet_18", num_modules=(1, 1), num_branches=3)
    assert model.config.num_blocks == (2, 2) and model.config.reduce_ratios == (8, 8)
    assert model.input_multiple == 16
