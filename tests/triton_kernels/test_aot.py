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


# docs/design.md's map, an odd one, and the degenerate sides (1x1, one row, one column), which Triton's
# launcher specialises into constants; --quick adds K = 1 and one instance.
QUICK_SIZES = "64x48,17x13,1x1,1x7,7x1"


@pytest.fixture(scope="module")
def aot_records(tmp_path_factory):
    import triton_aot as aot

    if aot.missing_tool() is not None:
        pytest.skip(aot.missing_tool())
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "triton_aot.py"), "--quick", "--arch", "80", "90",
                           "--sizes", QUICK_SIZES, "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert out.exists(), proc.stderr[-3000:]
    return proc.returncode, json.loads(out.read_text())["records"]


def test_every_kernel_compiles_for_sm80_and_sm90(aot_records):
    returncode, records = aot_records
    failures = [f"{r['name']} sm_{r['arch']}: {r['error'][:300]}" for r in records if not r["ok"]]
    assert not failures, "\n".join(failures)
    assert returncode == 0
    import triton_aot as aot

    covered = {(r["kernel"], r["arch"]) for r in records}
    kernels = aot.jit_kernels()
    assert len(kernels) == 10
    missing = [(k, a) for k in kernels for a in (80, 90) if (k, a) not in covered]
    assert not missing, f"kernels the gate does not compile: {missing}"


def test_the_gate_compiles_every_kernel_with_each_launcher_constant(aot_records):
    """A map side, K, the instance count or a stride equal to 1 reaches the kernel as the constant
    1 (Triton's launcher): every kernel must compile with each set of such constants its
    specialisations at 1x1, 1x7, 7x1, K = 1 and one instance give, or the first such launch on a
    GPU fails (a `.to()` on the Python int 1)."""
    import triton_aot as aot

    sizes = tuple(tuple(int(v) for v in size.split("x")) for size in QUICK_SIZES.split(","))
    expected = {(s.kernel, aot.constant_ones(s)) for s in aot.specialisations(sizes, (17, 1))}
    for arch in (80, 90):
        compiled = {(r["kernel"], tuple(r["constant_ones"])) for r in aot_records[1] if r["ok"] and r["arch"] == arch}
        assert expected <= compiled, sorted(expected - compiled)
    ones = {name for _, constants in expected for name in constants}
    assert {"height", "width", "size", "K", "N", "stride_w"} <= ones
    degenerate = {(r["kernel"], r["arch"]) for r in aot_records[1] if r["ok"] and r.get("size") == "1x1"}
    assert {(k, a) for k in aot.jit_kernels() if k != "loss._loss_rescale_kernel" for a in (80, 90)} <= degenerate


def test_launcher_constants_of_a_degenerate_spec_match_tritons_launcher():
    """1x1 map, K = 1, one instance: every integer the launcher makes the constant 1 is one in the
    AOT signature (and nothing else), as Triton's own specialisation decides."""
    native = getattr(triton.runtime.jit, "native_specialize_impl", None)
    if native is None:
        pytest.skip(f"Triton {triton.__version__} has no native_specialize_impl to compare with")
    from triton.backends.compiler import BaseBackend

    import triton_aot as aot

    specs = [s for s in aot.specialisations(((1, 1), (1, 7), (7, 1)), (1,)) if s.label.get("N", "one") == "one"]
    assert {s.kernel for s in specs} == set(aot.jit_kernels())
    for spec in specs:
        signature, constexprs = aot.specialised_signature(spec)
        for name in aot._specialised_ints(spec):
            kind = native(BaseBackend, spec.ints[name], False, True, True)[0]
            assert (kind == "constexpr") == (signature[name] == "constexpr"), (spec.name, name)
            assert signature[name] != "constexpr" or constexprs[name] == 1
    peaks = next(s for s in specs if s.kernel == "decode._find_peaks_kernel")
    assert "width" in aot.constant_ones(peaks) or "height" in aot.constant_ones(peaks)


def test_quick_set_keeps_every_launcher_constant_pattern_apart():
    """--quick compiles each kernel once per set of launcher constants (a side of 1, K = 1, one
    instance), and the final dedup never merges two specs that compile differently."""
    import triton_aot as aot

    specs = aot.specialisations(((64, 48), (17, 13), (1, 1), (1, 7), (7, 1)), (17, 1))
    quick = aot.quick_set(specs)
    patterns = {(s.kernel, aot.constant_ones(s)) for s in specs if s.label.get("blur_kernel", 11) in aot.QUICK_BLURS}
    assert patterns == {(s.kernel, aot.constant_ones(s)) for s in quick}
    general = {(s.kernel, s.label.get("kind"), s.label.get("method")) for s in specs}
    assert general == {(s.kernel, s.label.get("kind"), s.label.get("method")) for s in quick}
    # 64x48 and 96x72 take the same soft-argmax tile; 48 is a multiple of 16, 72 is not
    pair = [s for s in aot.specialisations(((64, 48), (96, 72))) if s.kernel == "decode._soft_argmax_kernel"
            and s.label["dtype"] == "fp32"]
    assert pair[0].constexprs == pair[1].constexprs and pair[0].signature == pair[1].signature
    assert aot.compile_key(pair[0]) != aot.compile_key(pair[1])
    assert len({aot.compile_key(s) for s in quick}) == len(quick)


def test_the_gate_compiles_with_the_launchers_compile_options(aot_records):
    """Floating-point contraction as every launch passes it (kpfast/triton/_common.py), not Triton's
    default of the day (on up to 3.9, off from 3.10)."""
    from kpfast.triton._common import FP_FUSION

    assert {r["enable_fp_fusion"] for r in aot_records[1] if r["ok"]} == {FP_FUSION}


def test_no_kernel_spills_or_exceeds_its_register_budget(aot_records):
    resources = _resources()
    records = [resources._with_spill(r) for r in aot_records[1] if r["ok"]]
    assert records and all(r["regs"] > 0 and r["sass"] > 0 for r in records)
    assert resources.violations(records) == []


def test_gate_compiles_the_largest_blur_and_the_full_set_every_blur(aot_records):
    """The DARK/UDP patch window grows with the blur: at blur 31 it took 228 registers (over the
    168 budget) or spilled, where blur 11 fitted. The quick gate compiles blur 31 of both methods
    on both architectures (budget and spills: the test above); the full set every odd size."""
    import triton_aot as aot

    gated = {(r["method"], r["blur_kernel"], r["arch"]) for r in aot_records[1]
             if r["kernel"] == "decode._decode_kernel" and "blur_kernel" in r}
    assert {(m, 31, a) for m in ("dark", "udp") for a in (80, 90)} <= gated
    full = {(s.label["method"], s.label["blur_kernel"]) for s in aot.specialisations(((17, 13),))
            if s.kernel == "decode._decode_kernel" and s.label["dtype"] == "fp32" and "blur_kernel" in s.label}
    assert full == {(m, k) for m in ("dark", "udp") for k in range(1, 32, 2)}


def test_every_triton_kernel_has_a_budget():
    import triton_aot as aot

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


def _sass(*lines):
    return "\n".join(f"        /*{address:04x}*/                   {text} ;" for address, text in lines)


def test_sass_summary_without_a_rule_takes_the_largest_innermost_loop_and_its_access_widths():
    from triton_aot import sass_summary

    sass = _sass(
        (0x00, "MOV R1, c[0x0][0x28]"),
        (0x10, "LDG.E.128 R4, desc[UR4][R2.64]"),    # outer loop start
        (0x20, "LDG.E.U16 R8, desc[UR4][R2.64]"),    # inner loop start
        (0x30, "FADD R9, R8, R9"),
        (0x40, "STG.E desc[UR4][R2.64], R9"),
        (0x50, "@P0 BRA 0x20"),
        (0x60, "@P1 BRA 0x10"),
        (0x70, "EXIT"),
        (0x80, "BRA 0x80"),
    )
    summary = sass_summary(sass)
    assert summary["sass"] == 9 and summary["loops"] == 2
    assert summary["loop_sass"] == 4 and summary["loop_range"] == "0x20-0x50"
    assert (summary["loop_load_bytes"], summary["loop_store_bytes"], summary["loop_global_bytes"]) == (2, 4, 6)


# A render-like kernel: an instance loop that stores per-instance weights (4-byte float), then the
# per-pixel loop that nests an instance loop loading keypoints and stores one 2-byte pixel.
_RENDER_LIKE = _sass(
    (0x000, "S2R R0, SR_TID.X"),
    (0x010, "LDG.E R2, desc[UR4][R4.64]"),          # instance loop: keypoint load
    (0x020, "STG.E desc[UR4][R6.64], R2"),          # ... and weight store
    (0x030, "@P0 BRA 0x10"),
    (0x040, "IMAD R8, R0, R9, RZ"),                 # pixel loop
    (0x050, "LDG.E.LTC128B R10, desc[UR4][R4.64]"),  # nested instance loop (a cache hint, 4 bytes)
    (0x060, "MUFU.EX2 R11, R10"),
    (0x070, "FMNMX R12, R12, R11, !PT"),
    (0x080, "@P1 BRA 0x50"),
    (0x090, "F2FP.BF16.F32.PACK_AB R13, RZ, R12"),
    (0x0a0, "STG.E.U16 desc[UR4][R14.64], R13"),
    (0x0b0, "LDGDEPBAR"),                           # not an access
    (0x0c0, "@P2 BRA 0x40"),
    (0x0d0, "EXIT"),
)


# A loss-like kernel: an instance setup loop of 4-byte loads, then the per-pixel loop loading one
# 2-byte prediction and nesting a fallback instance loop of keypoint loads.
_LOSS_LIKE = _sass(
    (0x000, "LDG.E R2, desc[UR4][R4.64]"),           # setup loop
    (0x010, "LDG.E R3, desc[UR4][R4.64+0x4]"),
    (0x020, "STS [R6], R2"),
    (0x030, "@P0 BRA 0x0"),
    (0x040, "LDG.E.U16 R8, desc[UR4][R10.64]"),      # pixel loop
    (0x050, "LDG.E R12, desc[UR4][R4.64]"),          # nested fallback instance loop
    (0x060, "LDG.E R13, desc[UR4][R4.64+0x4]"),
    (0x070, "LDG.E R14, desc[UR4][R4.64+0x8]"),
    (0x080, "@P1 BRA 0x50"),
    (0x090, "FFMA R15, R8, R8, R15"),
    (0x0a0, "@P2 BRA 0x40"),
    (0x0b0, "EXIT"),
)


def test_sass_summary_picks_the_per_pixel_loop_not_the_instance_loops():
    from triton_aot import sass_summary

    # render: the innermost loops that store, the longest of them
    summary = sass_summary(_RENDER_LIKE, "store", choice="inner")
    assert summary["loop_range"] == "0x40-0xc0" and summary["loop_nested"] == 1
    assert summary["loop_sass"] == 9  # the span: nested instance loop counted once
    # own body only: the nested loop's keypoint load is not the pixel loop's traffic
    assert (summary["loop_load_bytes"], summary["loop_store_bytes"], summary["loop_map_store_bytes"]) == (0, 2, 2)
    # the weights loop's 4-byte store is no 2-byte map element; without the size it is the widest
    assert sass_summary(_RENDER_LIKE, "store", element_bytes=2)["loop_range"] == "0x40-0xc0"
    assert sass_summary(_RENDER_LIKE, "store")["loop_range"] == "0x10-0x30"
    assert sass_summary(_RENDER_LIKE, "store", choice="bytes")["loop_range"] == "0x10-0x30"
    assert sass_summary(_RENDER_LIKE, "store", map_bytes=4)["loop_range"] == "0x10-0x30"  # expected bytes first
    assert sass_summary(_RENDER_LIKE, "load", choice="window")["loop_note"]  # no figure, and why
    # loss: the outermost loop that loads; the nested instance loop loads more, but is nested
    loss = sass_summary(_LOSS_LIKE, "load", element_bytes=2)
    assert loss["loop_range"] == "0x40-0xa0" and (loss["loop_map_load_bytes"], loss["loop_load_bytes"]) == (2, 2)
    assert sass_summary(_LOSS_LIKE, "load", choice="inner")["loop_range"] != "0x40-0xa0"  # why loss is "span"
    straight = _sass((0x0, "LDG.E.128 R4, desc[UR4][R2.64]"), (0x10, "STG.E.128 desc[UR4][R6.64], R4"),
                     (0x20, "EXIT"))
    whole = sass_summary(straight, "both")
    assert whole["loop_pick"].startswith("whole kernel") and whole["loop_global_bytes"] == 32
    assert sass_summary(straight.replace("STG", "NOP"), "store")["loop_note"] == \
        "no loop and no global access moves the map"


def test_access_widths_and_map_access_rules():
    import triton_aot as aot

    assert aot._access("LDG.E.128.CONSTANT R4, desc[UR4][R2.64]") == ("load", 16)
    assert aot._access("LDG.E.LTC128B.CONSTANT R4, desc[UR4][R2.64]") == ("load", 4)
    assert aot._access("LDGSTS.E.BYPASS.LTC128B.128 [R3], desc[UR4][R4.64]") == ("load", 16)
    assert aot._access("@!P0 STG.E.64 desc[UR4][R2.64], R4") == ("store", 8)
    assert aot._access("LDGDEPBAR") is None and aot._access("LDS.128 R4, [R2]") is None
    assert aot.map_access("render_forward_kernel<float, c10::BFloat16>")[0] == "store"
    assert aot.map_access("render._render_backward_kernel")[0] == "load"
    assert aot.map_access("heatmap_loss_kernel<(kpfast::LossKind)2, true, float>")[0] == "auto"
    assert aot.map_access("loss._loss_backward_kernel")[0] == "both"
    assert aot.map_access("decode._soft_argmax_backward_kernel")[0] == "both"
    assert aot.map_access("soft_argmax_kernel<c10::Half, float>")[0] == "load"
    assert aot.map_access("unrelated_kernel<float>")[0] is None


def test_cuda_names_give_the_map_element_type():
    resources = _resources()
    assert resources.template_arguments("k<(kpfast::LossKind)2, true, c10::BFloat16>") == [
        "(kpfast::LossKind)2", "true", "c10::BFloat16"]
    assert resources.element_type("heatmap_loss_kernel<(kpfast::LossKind)2, true, c10::BFloat16>") == "c10::BFloat16"
    assert resources.element_type("render_forward_kernel<double, c10::Half>") == "c10::Half"  # the map's: last
    assert resources.element_type("render_forward_kernel<float, float>") == "float"
    assert resources.element_type("soft_argmax_backward_kernel<double, double>") == "double"
    assert resources.element_type("decode_kernel<float, 4>") == "float"
    assert resources.element_type("decode_kernel") is None


def test_launch_bounds_are_read_per_function():
    resources = _resources()
    elf = "\n".join([".nv.info._Z1av", "\t<0x1>", "\tAttribute:\tEIATTR_MAX_THREADS", "\tFormat:\tEIFMT_SVAL",
                     "\tValue:\t0x100 0x1 0x1 ", "", ".nv.info._Z1bv", "\tAttribute:\tEIATTR_MAXREG_COUNT",
                     "\tValue:\t0xff", ".section .text._Z1bv", "\tAttribute:\tEIATTR_MAX_THREADS",
                     "\tValue:\t0x80 0x1 0x1 "])
    assert resources.launch_bounds(elf) == {"_Z1av": 256}


def test_occupancy_follows_the_sm90_rules():
    resources = _resources()
    assert resources.resident_warps(32, 256, 0) == 64        # full occupancy
    assert resources.resident_warps(64, 256, 0) == 32        # 32 warps x 32 lanes x 64 = 65536 registers
    assert resources.resident_warps(65, 256, 0) == 24        # 72 per thread after rounding: 28 warps, 3 blocks
    assert resources.resident_warps(255, 128, 0) == 8
    assert resources.resident_warps(32, 32, 0) == 32         # 32 blocks per SM at most
    assert resources.resident_warps(32, 256, 100 * 1024) == 16  # shared memory: 2 blocks


def test_model_bounds_on_a_known_loop():
    resources = _resources()
    m = resources.H100
    record = dict(ok=True, map_access="load", element_bytes=4, loop_sass=100, loop_load_bytes=16,
                  loop_store_bytes=0, loop_map_load_bytes=16, loop_map_store_bytes=0, loop_global_bytes=16, regs=32,
                  threads=256, shared=0)
    figures = resources.model(record)
    assert figures["elements_per_thread"] == 4 and figures["sass_per_element"] == 25
    issue = m["sms"] * 4 * 32 * m["clock_hz"] / 25 * 4 / m["hbm_bytes_per_s"]
    latency = 64 * m["sms"] * 32 * 16 / (m["hbm_bytes_per_s"] * m["latency_s"])
    assert figures["issue_bound"] == pytest.approx(issue, abs=1e-3)
    assert figures["latency_bound"] == pytest.approx(latency, abs=1e-3)
    assert figures["model_fraction"] == pytest.approx(min(issue, latency, 1.0), abs=1e-3)
    # reads + writes: elements from the gradient stores, both passes count as useful traffic
    both = resources.model(dict(record, map_access="both", loop_store_bytes=8, loop_map_store_bytes=8,
                                loop_global_bytes=24))
    assert both["elements_per_thread"] == 2 and both["bytes_per_element"] == 12
    assert both["latency_bound"] == pytest.approx(2 * latency, abs=1e-3)
    store = resources.model(dict(record, map_access="store", loop_load_bytes=0, loop_store_bytes=16,
                                 loop_map_store_bytes=16))
    assert store["latency_bound"] is None and store["model_fraction"] == min(round(issue, 3), 1.0)
    assert "no element type" in resources.model(dict(record, element_bytes=None))["note"]
    assert "no map-access rule" in resources.model(dict(record, map_access=None))["note"]


def _figures(record):
    resources = _resources()
    return dict(record, **resources.model(resources._with_spill(record)))


def test_committed_cuda_records_give_per_pixel_figures():
    """The committed before records (a CUDA build of main b031da6, before the kernel redesign): the
    loss picks its per-pixel loop (it nests the instance loop), with a positive count and a
    fraction in (0, 1]."""
    book = json.loads((ROOT / "benchmarks" / "results" / "resources.json").read_text())
    records = {r["name"]: _figures(r) for r in book["before"]["cuda"]}
    loss = records["heatmap_loss_kernel<(kpfast::LossKind)0, true, float>"]
    assert loss["map_access"] == "both" and loss["loop_nested"] >= 1
    assert loss["elements_per_thread"] == 1 and loss["sass_per_element"] > 50 and loss["bytes_per_element"] == 8
    assert 0 < loss["model_fraction"] <= 1
    render = records["render_forward_kernel<float, c10::BFloat16>"]
    assert render["map_access"] == "store" and render["loop_nested"] >= 1 and render["bytes_per_element"] == 2
    modelled = [r for r in records.values() if r["model_fraction"] is not None]
    assert len(modelled) >= len(records) - 8  # only render backward (window loops) has none
    assert all(0 < r["model_fraction"] <= 1 and r["sass_per_element"] > 0 for r in modelled)
    assert all(r["note"] for r in records.values() if r["model_fraction"] is None)


def test_cuda_kernels_of_the_built_extension_have_hot_loop_figures():
    resources = _resources()
    records, reason = resources.cuda_records(str(ROOT / "kpfast" / "_C.so"))
    if reason is not None:
        pytest.skip(f"CUDA kernels: {reason}")
    figures = [_figures(r) for r in records]
    assert all(0 < f["model_fraction"] <= 1 for f in figures if f["model_fraction"] is not None)
    assert all(f["note"] for f in figures if f["model_fraction"] is None)
    assert any(f["model_fraction"] is not None and "loss" in f["name"] for f in figures)


def test_triton_kernels_have_hot_loop_figures(aot_records):
    """At every size but the degenerate ones (a 1x1, 1x7 or 7x1 map has no per-element loop to
    measure: the compiler unrolls or drops it)."""
    import triton_aot as aot

    degenerate = {f"{h}x{w}" for h, w in aot.DEGENERATE_SIZES}
    figures = [_figures(r) for r in aot_records[1] if r["ok"] and r.get("size") not in degenerate]
    assert figures
    for f in figures:
        assert f["model_fraction"] is not None, f"{f['name']}: {f['note']}"
        assert 0 < f["model_fraction"] <= 1 and f["sass_per_element"] > 0 and f["bytes_per_element"] > 0


def test_check_gate_fails_on_a_spill(tmp_path):
    resources = _resources()
    record = dict(kernel="decode._decode_kernel", name="k", arch=90, ok=True, regs=40, spill_stores=0,
                  spill_loads=0)
    for spill, code in ((0, 0), (8, 1)):
        book = {"after": {"triton": [dict(record, spill_stores=spill)], "cuda": []}}
        (tmp_path / "resources.json").write_text(json.dumps(book))
        argv = ["--check", "--no-triton", "--so", str(tmp_path / "missing.so"), "--out", str(tmp_path)]
        assert resources.main(argv) == code
        assert (tmp_path / "RESOURCES.md").read_text().startswith("# Static resources")


def test_int64_divisions_are_counted_and_fail_the_gate():
    import triton_aot as aot

    listing = "\n".join(f"        /*{i * 16:04x}*/                   {op} ;" for i, op in enumerate(
        ["I2F.U32.RP R4, R2", "I2F.U64.RP R4, R2", "MUFU.RCP R4, R4", "I2F.S64.RP R6, R2", "EXIT"]))
    assert aot.int64_divisions(listing) == 2
    assert aot.sass_summary(listing)["int64_divisions"] == 2
    resources = _resources()
    record = dict(kernel="cuda.soft_argmax_kernel", name="soft_argmax_kernel<float, float>", regs=32, spill=0)
    assert resources.violations([dict(record, int64_divisions=0)]) == []
    problem = resources.violations([dict(record, int64_divisions=2)])
    assert len(problem) == 1 and "64-bit integer division" in problem[0]
