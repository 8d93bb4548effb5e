"""The AOT gate: every Triton kernel compiles for sm_80 and sm_90 with Triton's real compiler
(no GPU, no interpreter), and every GPU kernel stays within its register budget, unspilled.

tests/conftest.py switched the interpreter on for this process, so the compile runs in a
subprocess without TRITON_INTERPRET. The full set of specialisations (every dtype and size) is
``python benchmarks/resources.py --check``, which CI runs; here one per kernel, kind and method."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def _resources():
    spec = importlib.util.spec_from_file_location("kpfast_resources", ROOT / "benchmarks" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def aot_records(tmp_path_factory):
    from kpfast.triton import aot

    for tool in ("ptxas", "cuobjdump"):
        if aot._tool(tool) is None:
            pytest.skip(f"no {tool} in triton's wheel or /usr/local/cuda/bin")
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "kpfast.triton.aot", "--quick", "--arch", "80", "90", "--sizes",
                           "64x48,17x13", "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert out.exists(), proc.stderr[-3000:]
    return proc.returncode, json.loads(out.read_text())["records"]


def test_every_kernel_compiles_for_sm80_and_sm90(aot_records):
    returncode, records = aot_records
    failures = [f"{r['name']} sm_{r['arch']}: {r['error'][:300]}" for r in records if not r["ok"]]
    assert not failures, "\n".join(failures)
    assert returncode == 0
    from kpfast.triton import aot

    covered = {(r["kernel"], r["arch"]) for r in records}
    kernels = aot.jit_kernels()
    assert len(kernels) == 10
    missing = [(k, a) for k in kernels for a in (80, 90) if (k, a) not in covered]
    assert not missing, f"kernels the gate does not compile: {missing}"


def test_no_kernel_spills_or_exceeds_its_register_budget(aot_records):
    resources = _resources()
    records = [resources._with_spill(r) for r in aot_records[1] if r["ok"]]
    assert records and all(r["regs"] > 0 and r["sass"] > 0 for r in records)
    assert resources.violations(records) == []


def test_every_triton_kernel_has_a_budget():
    from kpfast.triton import aot

    resources = _resources()
    assert set(aot.jit_kernels()) <= set(resources.BUDGETS)


def test_budget_check_reports_spills_and_registers():
    resources = _resources()
    ok = dict(kernel="decode._decode_kernel", name="k", ok=True, regs=40, spill=0)
    assert resources.violations([ok]) == []
    assert "spills" in resources.violations([dict(ok, spill=8)])[0]
    assert "budget" in resources.violations([dict(ok, regs=255)])[0]
    assert "does not compile" in resources.violations([dict(ok, ok=False, arch=90, error="x")])[0]


def test_cuda_kernels_in_the_built_extension_are_within_budget():
    """Skips cleanly when kpfast/_C.so was built without CUDA (as on CPU-only machines)."""
    resources = _resources()
    records, reason = resources.cuda_records(str(ROOT / "kpfast" / "_C.so"))
    if reason is not None:
        pytest.skip(f"CUDA kernels: {reason}")
    assert records
    assert resources.violations(records) == []


def test_sass_summary_finds_the_innermost_loop_and_its_access_widths():
    from kpfast.triton.aot import sass_summary

    sass = "\n".join([
        "        /*0000*/                   MOV R1, c[0x0][0x28] ;",
        "        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;",    # outer loop start
        "        /*0020*/                   LDG.E.U16 R8, desc[UR4][R2.64] ;",    # inner loop start
        "        /*0030*/                   FADD R9, R8, R9 ;",
        "        /*0040*/                   STG.E desc[UR4][R2.64], R9 ;",
        "        /*0050*/              @P0 BRA 0x20 ;",
        "        /*0060*/              @P1 BRA 0x10 ;",
        "        /*0070*/                   EXIT ;",
        "        /*0080*/                   BRA 0x80;",
    ])
    summary = sass_summary(sass)
    assert summary == dict(sass=9, loops=1, loop_sass=4, loop_global_bytes=2 + 4)
