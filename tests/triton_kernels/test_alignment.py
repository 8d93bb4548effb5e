"""Vector accesses of the Triton kernels: what the launcher tells the compiler about alignment
(launcher_ints in tools/triton_aot.py), what the kernels add for rows that start 16-byte aligned at
widths the launcher cannot vouch for (kpfast.triton._common.row_alignment / ``aligned``), and
that the compiled kernels do use 16-byte (or at least 8-byte) accesses of the map.

Values through the interpreter at widths that take each ROW_ALIGN; the compiled accesses in a
subprocess without TRITON_INTERPRET (tests/conftest.py switched it on for this process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

import triton_aot as aot  # noqa: E402  (tools/, on sys.path via tests/conftest.py)
from kpfast.triton._common import row_alignment  # noqa: E402

from .helpers import interpreter_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_row_alignment_is_the_largest_vector_of_elements_dividing_width_and_strides():
    assert row_alignment(72, 4) == 4        # 96x72 fp32: 288-byte rows, 16-byte aligned
    assert row_alignment(72, 2) == 8        # bf16: 144-byte rows
    assert row_alignment(48, 4) == 4        # never more than one 16-byte vector
    assert row_alignment(13, 4) == 1 and row_alignment(14, 4) == 2 and row_alignment(14, 2) == 2
    assert row_alignment(72, 4, 17 * 96 * 72, 96 * 72, 72) == 4
    assert row_alignment(72, 4, 17 * 96 * 73, 96 * 73, 73) == 1  # a sliced pred: odd row stride
    assert row_alignment(0, 4) == 4 and row_alignment(72, 8) == 2


def test_launch_configs_carry_the_row_alignment_of_the_tensors():
    from kpfast.triton import loss, render

    assert render.forward_config(96, 72, "msra", element_size=4)["ROW_ALIGN"] == 4
    assert render.backward_config(96, 72, "msra", element_size=2)["ROW_ALIGN"] == 8
    assert loss.launch_config(96, 72, "msra", "focal", element_size=4)["ROW_ALIGN"] == 4
    contiguous = torch.empty(2, 17, 96, 72).stride()
    assert loss.launch_config(96, 72, "msra", "mse", element_size=4, strides=contiguous)["ROW_ALIGN"] == 4
    sliced = torch.empty(2, 17, 96, 73)[..., 1:].stride()
    assert loss.launch_config(96, 72, "msra", "mse", element_size=4, strides=sliced)["ROW_ALIGN"] == 1
    transposed = torch.empty(2, 17, 72, 96).transpose(2, 3).stride()
    assert loss.fused_launch_config(96, 72, "msra", "mse", element_size=4, strides=transposed)["ROW_ALIGN"] == 1


def test_aot_specialises_integers_as_the_launcher_does():
    """Triton's launcher makes an int equal to 1 a constant and marks one divisible by 16: the AOT
    compile must see the same, or its figures describe code the real launch never runs."""
    native = getattr(triton.runtime.jit, "native_specialize_impl", None)
    if native is None:
        pytest.skip(f"Triton {triton.__version__} has no native_specialize_impl to compare with")
    from triton.backends.compiler import BaseBackend

    spec = next(s for s in aot.specialisations(((96, 72),)) if s.kernel == "loss._loss_backward_kernel")
    signature, constexprs = aot.specialised_signature(spec)
    divisible = set(aot.divisible_arguments(spec))
    checked = 0
    for name, value in spec.ints.items():
        if spec.signature.get(name) != "i32":
            continue
        kind, attribute = native(BaseBackend, value, False, True, True)[:2]
        assert (kind == "constexpr") == (signature[name] == "constexpr" and constexprs[name] == value), name
        assert (attribute == "D") == (name in divisible), (name, value)
        checked += 1
    assert checked >= 8
    assert "width" not in divisible and "stride_k" in divisible  # 72 is not a multiple of 16; 96 * 72 is


@pytest.mark.triton
@pytest.mark.parametrize("width", [72, 14, 13])  # ROW_ALIGN 4, 2 and 1 in float32
def test_aligned_widths_give_the_reference_values(width):
    """The kernels rebuild width and strides from ROW_ALIGN: the values must be the reference's
    at every alignment (render forward, loss forward and backward)."""
    device = interpreter_device()
    from kpfast.ops import heatmap_loss, render_heatmaps

    torch.manual_seed(width)
    keypoints = torch.rand(2, 1, 3, 2, device=device) * torch.tensor([width, 5.0], device=device)
    weights = torch.ones(2, 1, 3, device=device)
    maps = {b: render_heatmaps(keypoints, weights, (5, width), sigma=1.5, backend=b) for b in ("triton", "torch")}
    torch.testing.assert_close(maps["triton"][0], maps["torch"][0], atol=1e-5, rtol=1e-5)
    pred = torch.rand(2, 3, 5, width, device=device)
    for kind in ("mse", "focal"):
        results = {}
        for b in ("triton", "torch"):
            x = pred.clone().requires_grad_(True)
            loss = heatmap_loss(x, keypoints, weights, sigma=1.5, kind=kind, backend=b)
            loss.backward()
            results[b] = (loss.detach(), x.grad)
        torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(results["triton"][1], results["torch"][1], atol=1e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def compiled_96x72(tmp_path_factory):
    if aot.missing_tool() is not None:
        pytest.skip(aot.missing_tool())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    records = []
    for size in ("96x72", "64x48"):  # --quick keeps the first size only: one run each
        out = tmp_path_factory.mktemp("aot") / f"aot_{size}.json"
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "triton_aot.py"), "--quick", "--arch", "90",
                               "--sizes", size, "--keypoints", "17", "--json", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert out.exists(), proc.stderr[-3000:]
        records += json.loads(out.read_text())["records"]
    assert all(r["ok"] for r in records), [r["name"] for r in records if not r["ok"]]
    return records


def test_every_triton_kernel_moves_the_map_in_vectors(compiled_96x72):
    """At docs/design.md's sizes (64x48: every size a multiple of 16; 96x72: rows 16-byte aligned, width
    not a multiple of 16) the hot loop of every kernel moves the map in 8- or 16-byte accesses."""
    assert {r["size"] for r in compiled_96x72 if "size" in r} == {"96x72", "64x48"}
    scalar = [(r["name"], r["loop_map_width"]) for r in compiled_96x72
              if not r.get("loop_map_width") or r["loop_map_width"] < 8]
    assert not scalar, scalar
    # 16 bytes wherever a thread holds at least 4 float32 elements of a row (all but the fused focal)
    fp32 = [r for r in compiled_96x72 if r.get("dtype") == "fp32" and "fused" not in r["kernel"]
            and r.get("exponents") != "general"]
    assert fp32 and all(r["loop_map_width"] == 16 for r in fp32), [
        (r["name"], r["loop_map_width"]) for r in fp32 if r["loop_map_width"] != 16]


def test_no_triton_kernel_divides_in_64_bits(compiled_96x72):
    assert all(r["int64_divisions"] == 0 for r in compiled_96x72), [
        r["name"] for r in compiled_96x72 if r["int64_divisions"]]
