"""HeatmapLoss: presets, construction by name, overrides, OHKM and argument errors."""

import pytest
import torch

from kpfast.nn import HeatmapLoss
from kpfast.ops import heatmap_loss

H, W = 16, 12


def _batch(seed=0, batch=3, num_keypoints=6):
    generator = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(batch, num_keypoints, 2, generator=generator) * torch.tensor([W, H])
    visibility = (torch.rand(batch, num_keypoints, generator=generator) > 0.2).float()
    logits = torch.randn(batch, num_keypoints, H, W, generator=generator) * 2
    return logits, keypoints, visibility


def test_presets_match_the_op():
    logits, keypoints, visibility = _batch()
    mse = HeatmapLoss.weighted_mse(backend="torch")
    expected = heatmap_loss(logits.sigmoid(), keypoints, visibility, kind="mse", keypoint_weight=15.0,
                            background_weight=1.0, threshold=0.1, l1_weight=0.0, backend="torch")
    torch.testing.assert_close(mse(logits.sigmoid(), keypoints, visibility), expected)
    focal = HeatmapLoss.focal(backend="torch")
    expected = heatmap_loss(logits, keypoints, visibility, kind="focal", alpha=0.25, gamma=2.0, l1_weight=0.1,
                            backend="torch")
    torch.testing.assert_close(focal(logits, keypoints, visibility), expected)
    assert focal.config["alpha"] == 0.25 and focal.config["l1_weight"] == 0.1
    assert mse.config["kind"] == "mse" and mse.config["keypoint_weight"] == 15.0


def test_from_preset_with_overrides_and_by_name():
    loss = HeatmapLoss.from_preset("focal", gamma=3.0, sigma=3.0, encoding="dark")
    assert loss.config["gamma"] == 3.0 and loss.config["alpha"] == 0.25
    assert loss.sigma == 3.0 and loss.encoding == "dark"
    assert HeatmapLoss.from_preset("weighted_mse").config == HeatmapLoss.weighted_mse().config
    with pytest.raises(ValueError, match=r"name: expected one of \('weighted_mse', 'focal'\), got 'l2'"):
        HeatmapLoss.from_preset("l2")
    with pytest.raises(ValueError, match="gamma: expected a finite value >= 0.0"):
        HeatmapLoss.from_preset("focal", gamma=-1.0)
    assert "kind=focal" in repr(loss)


def test_backends_agree_through_the_module():
    logits, keypoints, visibility = _batch(seed=1)
    results = []
    for backend in ("torch", "cpu"):
        x = logits.clone().requires_grad_(True)
        HeatmapLoss.focal(backend=backend)(x, keypoints, visibility).backward()
        results.append(x.grad)
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ohkm_keeps_the_hardest_keypoints(reduction):
    logits, keypoints, visibility = _batch(seed=2)
    per_keypoint = heatmap_loss(logits, keypoints, visibility, reduction="none", backend="torch")
    hardest = per_keypoint.topk(3, dim=1).values
    criterion = HeatmapLoss.focal(ohkm_topk=3, reduction=reduction, backend="cpu")
    x = logits.clone().requires_grad_(True)
    loss = criterion(x, keypoints, visibility)
    expected = hardest.mean() if reduction == "mean" else hardest.sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    loss.backward()
    # Only the selected keypoints get a gradient.
    selected = torch.zeros_like(per_keypoint, dtype=torch.bool).scatter_(1, per_keypoint.topk(3, dim=1).indices, True)
    touched = x.grad.abs().sum(dim=(2, 3)) > 0
    assert torch.equal(touched, selected & (per_keypoint > 0))


def test_ohkm_topk_larger_than_k_uses_all_keypoints():
    logits, keypoints, visibility = _batch(seed=3)
    criterion = HeatmapLoss.focal(ohkm_topk=50, backend="torch")
    torch.testing.assert_close(criterion(logits, keypoints, visibility),
                               HeatmapLoss.focal(backend="torch")(logits, keypoints, visibility))


def test_sigma_override_at_call_time():
    logits, keypoints, visibility = _batch(seed=4)
    criterion = HeatmapLoss.weighted_mse(sigma=2.0, backend="torch")
    wider = criterion(logits, keypoints, visibility, sigma=torch.full((6,), 3.0))
    expected = HeatmapLoss.weighted_mse(sigma=3.0, backend="torch")(logits, keypoints, visibility)
    torch.testing.assert_close(wider, expected)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(kind="l2"), ValueError, "kind: expected one of"),
        (dict(ohkm_topk=0), ValueError, "ohkm_topk: expected an int >= 1, got 0"),
        (dict(ohkm_topk=4, reduction="none"), ValueError, "reduction: expected 'mean' or 'sum' with ohkm_topk"),
        (dict(encoding="gauss"), ValueError, "encoding: expected one of"),
        (dict(sigma="2"), TypeError, "sigma: expected a float or a tensor"),
        (dict(alpha=2.0), ValueError, r"alpha: expected a finite value in \[0.0, 1.0\]"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        HeatmapLoss(**kwargs)
