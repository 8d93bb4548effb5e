"""MMPose's Lite-HRNet evaluates fuse_layers[i][0] twice per forward; kpfast once, doubled
(docs/pretrained.md, "Fine-tuning and BatchNorm statistics"). The emulation that
benchmarks/bn_double_update.py measures with must be MMPose's arithmetic: the same outputs and
gradients as kpfast's, and two running-statistics updates of the affected BatchNorm layers,
which one update at momentum 2m - m^2 reproduces."""

import copy
import importlib.util
import types
from pathlib import Path

import torch

from kpfast.models import build_model
from kpfast.models.litehrnet import LiteHRModule

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(base_width=16, num_branches=3, num_modules=(1, 1, 1), stem_channels=16)


def _benchmark():
    spec = importlib.util.spec_from_file_location("bn_double_update", ROOT / "benchmarks" / "bn_double_update.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _emulate_mmpose(model, bench):
    for module in model.modules():
        if isinstance(module, LiteHRModule) and module.with_fuse:
            module._fuse = types.MethodType(bench._fuse_evaluating_branch0_twice, module)


def _step(model, images):
    model.train()
    model.zero_grad(set_to_none=True)
    heatmaps = model(images)["heatmaps"]
    heatmaps.square().mean().backward()
    return heatmaps.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_mmpose_emulation_keeps_outputs_and_gradients_and_updates_twice():
    bench = _benchmark()
    torch.manual_seed(0)
    kpfast = build_model("litehrnet_18", num_keypoints=17, **SMALL)
    mmpose, momentum = copy.deepcopy(kpfast), copy.deepcopy(kpfast)
    _emulate_mmpose(mmpose, bench)
    affected = bench.doubly_updated_norms(momentum)
    assert affected, "the small network has fuse layers from branch 0"
    for norm in affected.values():
        norm.momentum = 2 * norm.momentum - norm.momentum ** 2
    before = {k: v.clone() for k, v in kpfast.state_dict().items()}
    images = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))

    out_k, grads_k = _step(kpfast, images)
    out_m, grads_m = _step(mmpose, images)
    _step(momentum, images)

    torch.testing.assert_close(out_m, out_k, rtol=0, atol=0)
    for name, grad in grads_k.items():
        torch.testing.assert_close(grads_m[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    state_k, state_m, state_c = kpfast.state_dict(), mmpose.state_dict(), momentum.state_dict()
    for name in affected:
        key = f"{name}.running_mean"
        moved_once = state_k[key] - before[key]
        moved_twice = state_m[key] - before[key]
        # Two updates with the same batch statistic: (1 - (1 - m)^2) / m = 2 - m times one update's step.
        torch.testing.assert_close(moved_twice, moved_once * (2 - 0.1), rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(state_c[key], state_m[key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(state_c[f"{name}.running_var"], state_m[f"{name}.running_var"], rtol=1e-5,
                                   atol=1e-6)
    others = [k for k in state_k if k.endswith("running_mean") and k[: -len(".running_mean")] not in affected]
    assert others
    for key in others:  # every other BatchNorm layer moves once in both
        torch.testing.assert_close(state_m[key], state_k[key], rtol=0, atol=0, msg=key)
