"""Every kpfast Triton kernel is launched with kpfast's compile options (docs/extension.md,
"Compile options"), so that its floating-point contraction does not follow Triton's default,
which is on up to Triton 3.9 and off from 3.10."""

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from kpfast.triton import _common  # noqa: E402

TRITON_PACKAGE = Path(_common.__file__).resolve().parent


def test_every_kernel_launch_goes_through_launch():
    direct = []
    for path in sorted(TRITON_PACKAGE.glob("*.py")):
        if path.name == "_common.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b_\w+_kernel\[", line):
                direct.append(f"{path.name}:{number}: {line.strip()}")
    assert not direct, "launch these through kpfast.triton._common.launch:\n" + "\n".join(direct)


def test_launch_passes_the_fp_fusion_rule_and_the_config():
    calls = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    first = torch.zeros(2)
    _common.launch(Kernel(), (3, 1), first, 5, BLOCK=16, maxnreg=128)
    assert len(calls) == 1
    grid, args, kwargs = calls[0]
    assert grid == (3, 1) and args[0] is first and args[1:] == (5,)
    assert kwargs == dict(BLOCK=16, maxnreg=128, enable_fp_fusion=_common.FP_FUSION)
    assert _common.FP_FUSION is True  # the tolerances of tests/ops were set with contraction on
