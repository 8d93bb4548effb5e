"""Lite-HRNet structure, numerics, training-time options."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import TINY, randomize
from torch import nn

from kpfast.models import build_model
from kpfast.models.blocks import channel_shuffle
from kpfast.models.litehrnet import LiteHRModule


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    y = torch.randn(2, 8, 3, 5)
    reference = channel_shuffle(y, 2)
    shuffled_cl = channel_shuffle(y.contiguous(memory_format=torch.channels_last), 2)
    assert shuffled_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(shuffled_cl, reference, rtol=0, atol=0)


def test_official_module_names():
    """The state-dict keys follow the official/MMPose Lite-HRNet so their checkpoints load."""
    keys = set(build_model("litehrnet_18").state_dict())
    expected = [
        "backbone.stem.conv1.conv.weight",
        "backbone.stem.conv1.bn.running_var",
        "backbone.stem.branch1.0.conv.weight",
        "backbone.stem.branch1.1.bn.weight",
        "backbone.stem.expand_conv.conv.weight",
        "backbone.stem.depthwise_conv.bn.bias",
        "backbone.stem.linear_conv.conv.weight",
        "backbone.transition0.0.0.weight",
        "backbone.transition0.0.3.running_mean",
        "backbone.transition0.1.0.0.weight",
        "backbone.transition1.2.0.3.weight",
        "backbone.stage0.0.layers.0.cross_resolution_weighting.conv1.conv.weight",
        "backbone.stage0.0.layers.1.cross_resolution_weighting.conv2.bn.weight",
        "backbone.stage0.0.layers.0.depthwise_convs.1.conv.weight",
        "backbone.stage0.0.layers.0.spatial_weighting.0.conv1.conv.bias",
        "backbone.stage0.0.layers.0.spatial_weighting.1.conv2.conv.weight",
        "backbone.stage0.0.fuse_layers.0.1.0.weight",
        "backbone.stage0.0.fuse_layers.1.0.0.0.weight",
        "backbone.stage2.1.fuse_layers.3.0.2.3.weight",
        "backbone.stage2.1.fuse_layers.0.3.1.running_var",
        "backbone.head_layer.projects.0.depthwise_conv.conv.weight",
        "backbone.head_layer.projects.3.pointwise_conv.bn.weight",
        "head.final_layer.weight",
        "head.final_layer.bias",
    ]
    missing = [k for k in expected if k not in keys]
    assert not missing, missing
    naive = set(build_model("naive_litehrnet_18").state_dict())
    assert "backbone.stage0.0.layers.1.0.branch2.0.conv.weight" in naive
    assert "backbone.stage0.0.layers.1.1.branch2.2.bn.weight" in naive


def _official_fuse_forward(module: LiteHRModule, xs):
    """Transcription of the authors' LiteHRModule.forward (in-place fuse, j loops from 0)."""
    if module.block_type == "lite":
        out = module.layers(list(xs))
    else:
        out = [layer(x) for layer, x in zip(module.layers, xs)]
    out_fuse = []
    for i in range(len(module.fuse_layers)):
        y = out[0] if i == 0 else module.fuse_layers[i][0](out[0])
        for j in range(module.num_branches):
            if i == j:
                y += out[j]
            else:
                y += module.fuse_layers[i][j](out[j])
        out_fuse.append(module.relu(y))
    return out_fuse


@pytest.mark.parametrize("block_type", ["lite", "naive"])
def test_fuse_reproduces_official_quirk(block_type):
    module = randomize(LiteHRModule([8, 16, 32, 64], num_blocks=1, reduce_ratio=4, block_type=block_type)).eval()
    xs = [torch.randn(2, c, 32 // 2**b, 24 // 2**b) for b, c in enumerate([8, 16, 32, 64])]
    with torch.no_grad():
        ours = module([x.clone() for x in xs])
        official = _official_fuse_forward(module, [x.clone() for x in xs])
    for a, b in zip(ours, official):
        torch.testing.assert_close(a, b)
    # ... and it is really different from the plain HRNet sum (branch 0 added once, no aliasing).
    with torch.no_grad():
        out = module.layers(list(xs)) if block_type == "lite" else [m(x) for m, x in zip(module.layers, xs)]
        plain0 = torch.relu(out[0] + sum(module.fuse_layers[0][j](out[j]) for j in range(1, 4)))
    assert not torch.allclose(plain0, ours[0])


def test_forward_backward_cpu():
    model = randomize(build_model("litehrnet_18", visibility_head=True, **TINY)).train()
    out = model(torch.randn(2, 3, 64, 64))
    loss = out["heatmaps"].square().mean() + out["visibility"].sigmoid().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    nonzero = [name for name, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert len(nonzero) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["litehrnet_18", "naive_litehrnet_18"])
def test_gradient_checkpointing_same_gradients_and_bn_stats(name):
    torch.manual_seed(0)
    reference = randomize(build_model(name, visibility_head=True, **TINY)).train()
    checkpointed = copy.deepcopy(reference)
    checkpointed.set_gradient_checkpointing(True)
    assert checkpointed.gradient_checkpointing and not reference.gradient_checkpointing
    assert build_model(name, gradient_checkpointing=True, **TINY).gradient_checkpointing
    images = torch.randn(2, 3, 64, 96)
    results = []
    for model in (reference, checkpointed):
        out = model(images)
        (out["heatmaps"].square().mean() + out["visibility"].mean()).backward()
        results.append(model)
    ref_params = dict(reference.named_parameters())
    for pname, p in checkpointed.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[pname].grad, rtol=1e-5, atol=1e-7, msg=pname)
    # The recomputed forward must not move the BatchNorm running statistics a second time.
    ref_buffers = dict(reference.named_buffers())
    for bname, buffer in checkpointed.named_buffers():
        torch.testing.assert_close(buffer, ref_buffers[bname], msg=bname)


def test_channels_last_equivalence():
    model = randomize(build_model("litehrnet_18", visibility_head=True, **TINY)).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = model_cl(images.contiguous(memory_format=torch.channels_last))
    assert got["heatmaps"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got["heatmaps"], expected["heatmaps"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["visibility"], expected["visibility"], rtol=1e-4, atol=1e-5)
    assert expected["heatmaps"].abs().mean() > 0.01  # the comparison is not between near-zeros


def test_paper_initialisation_statistics():
    model = build_model("litehrnet_18", visibility_head=True)
    weights = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weights.append(m.weight.detach().flatten())
            if m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0, name
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    everything = torch.cat(weights)
    assert everything.numel() > 1_000_000
    assert abs(everything.std().item() - 0.001) < 2e-5
    assert abs(everything.mean().item()) < 1e-5
    # every layer, not just the bulk: no layer left at PyTorch's default (kaiming-uniform) init
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= 1000:
            assert 0.0008 < m.weight.std().item() < 0.0012
