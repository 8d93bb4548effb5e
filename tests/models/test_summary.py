"""Parameter / MAC counts against the Lite-HRNet paper's table, and the summary command."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from kpfast.models import build_model, count_params_and_macs
from kpfast.models.summary import PAPER_FLOPS_UNIT, PAPER_TABLE, main, model_complexity

TOLERANCE = 0.05


@functools.cache
def _counts(name, size):
    return tuple(model_complexity(build_model(name), size))


ROWS = sorted(PAPER_TABLE)


def test_paper_table_is_the_published_one():
    assert PAPER_TABLE[("litehrnet_18", (256, 192))] == (1.1, 205.2)
    assert PAPER_TABLE[("litehrnet_30", (384, 288))] == (1.8, 717.8)
    assert len(PAPER_TABLE) == 6


@pytest.mark.parametrize("name, size", ROWS)
def test_flops_match_paper_with_its_counting_convention(name, size):
    """The paper's FLOPs column = torchstat Flops of backbone + final 1x1, printed with M = 2**20."""
    _, _, paper_ops = _counts(name, size)
    reference = PAPER_TABLE[(name, size)][1]
    ours = paper_ops / PAPER_FLOPS_UNIT
    assert abs(ours - reference) / reference < TOLERANCE, (ours, reference)


@pytest.mark.parametrize("name, size", ROWS)
def test_torch_macs_within_tolerance_of_paper(name, size):
    """Plain conv/linear MACs (FlopCounterMode, decimal millions) are also within 5%."""
    _, macs, paper_ops = _counts(name, size)
    reference = PAPER_TABLE[(name, size)][1]
    assert abs(macs / 1e6 - reference) / reference < TOLERANCE, (macs / 1e6, reference)
    assert macs < paper_ops  # the paper's convention adds BN/ReLU/upsample/bias work on top


@pytest.mark.parametrize("name, size", ROWS)
def test_params_within_tolerance_of_paper(name, size):
    """The presets match the paper's parameter counts (docs/design.md): within 5% of its figure.
    The paper prints parameters rounded to 0.1M, so the exact published count lies in
    [figure - 0.05M, figure + 0.05M); the test measures our count's distance to that interval,
    relative to the figure."""
    params, _, _ = _counts(name, size)
    figure = PAPER_TABLE[(name, size)][0] * 1e6
    low, high = figure - 0.05e6, figure + 0.05e6
    distance = max(low - params, params - high, 0.0)
    assert distance / figure < TOLERANCE, (params, figure)


# Stricter: the count rounds to the printed figure. It does for every row but the naive one,
# whose published config (30/60/120/240, ShuffleUnits, 2 blocks) gives 0.760M against a printed
# 0.7M, while its FLOPs (194.8M) match this structure within 1% (test below pins the gap).
@pytest.mark.parametrize("name, size", [row for row in ROWS if row[0] != "naive_litehrnet_18"])
def test_params_round_to_paper(name, size):
    params, _, _ = _counts(name, size)
    assert round(params / 1e6, 1) == PAPER_TABLE[(name, size)][0], params


def test_naive_params_documented_gap():
    params, _, _ = _counts("naive_litehrnet_18", (256, 192))
    assert 0.755e6 < params < 0.765e6


def test_count_of_a_known_tiny_network():
    """Hand-computed: conv 3->4 3x3 s1 on 8x8 (with bias), BN, ReLU, upsample x2, linear 4->2."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()
            self.up = nn.Upsample(scale_factor=2)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = self.up(self.relu(self.bn(self.conv(x))))
            return self.fc(x.mean((2, 3)))

    model = Tiny()
    params, macs = count_params_and_macs(model, (8, 8))
    assert params == (3 * 4 * 9 + 4) + 8 + (4 * 2 + 2)
    conv_macs = 3 * 9 * 4 * 64
    assert macs == conv_macs + 4 * 2
    _, paper = count_params_and_macs(model, (8, 8), convention="paper")
    assert paper == conv_macs + 4 * 2 + 4 * 64 + 2 * 4 * 64 + 4 * 64 + 4 * 256


def test_count_rejects_bad_arguments():
    model = build_model("litehrnet_18", num_modules=(1, 1, 1))
    with pytest.raises(ValueError, match="convention"):
        count_params_and_macs(model, (64, 64), convention="fvcore")
    with pytest.raises(ValueError, match="input_size"):
        count_params_and_macs(model, (64,))


def test_count_params_and_macs_conventions_agree_with_model_complexity():
    model = build_model("litehrnet_18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = model_complexity(model, (256, 192))
    assert count_params_and_macs(model, (256, 192)) == (counts.params, counts.macs)
    assert count_params_and_macs(model, (256, 192), convention="paper") == (counts.params, counts.paper_flops)
    assert counts.params == sum(p.numel() for p in model.parameters())
    # counting leaves the model as it was (mode, device, weights and BN statistics)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_summary_command(capsys):
    assert main(["litehrnet_18", "--input", "256x192"]) == 0
    out = capsys.readouterr().out
    params, macs, paper_ops = _counts("litehrnet_18", (256, 192))
    row = next(line for line in out.splitlines() if line.startswith("| litehrnet_18 "))
    assert f"{params / 1e6:.3f}M" in row
    assert f"{macs / 1e6:.1f}M" in row
    assert f"{paper_ops / PAPER_FLOPS_UNIT:.1f}M" in row
    assert "205.2M" in row


def test_summary_command_rejects_bad_input(capsys):
    with pytest.raises(SystemExit):
        main(["litehrnet_18", "--input", "250x192"])
    assert "multiple of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["litehrnet_18", "--input", "256by192"])
    with pytest.raises(SystemExit):
        main(["no_such_model"])
