"""python -m kpfast.info: the report, the self-test against the reference, the exit code."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kpfast import backends, info


def _only(monkeypatch, allowed):
    """Restrict the self-test to ``allowed`` backends (the interpreter is slow)."""
    real = backends._device_reason

    def reason(name, device):
        return real(name, device) if name in allowed else f"{name}: left out by this test"

    monkeypatch.setattr(backends, "_device_reason", reason)


def test_report_lists_versions_extension_backends_and_passes(monkeypatch, capsys):
    _only(monkeypatch, {"torch", "cpu"})
    assert info.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"] == torch.__version__
    assert set(report["backends"]) == {"torch", "cpu", "cuda", "triton"}
    if not torch.cuda.is_available():
        assert report["backends"]["cuda"]["cpu"] is not None  # unavailable, with its reason
    rows = {(r["backend"], r["device"]): r for r in report["self_test"]}
    cpu = rows[("cpu", "cpu")]
    if cpu["skipped"] is None:
        ops = {name.split("[")[0].split(" ")[0] for name in cpu["results"]}
        assert ops == {"render_heatmaps", "heatmap_loss", "decode_heatmaps", "soft_argmax", "find_peaks"}
        assert set(cpu["results"].values()) == {"ok"} and cpu["ms"] > 0


def test_a_backend_that_disagrees_fails_the_self_test(monkeypatch, capsys):
    _only(monkeypatch, {"torch", "cpu"})
    if backends._device_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("the cpu backend is not built")
    import kpfast.ops

    real = kpfast.ops.decode_heatmaps

    def wrong(heatmaps, *args, backend=None, **kwargs):
        coords, scores = real(heatmaps, *args, backend=backend, **kwargs)
        return (coords + 0.5, scores) if backend == "cpu" else (coords, scores)

    monkeypatch.setattr(kpfast.ops, "decode_heatmaps", wrong)
    assert info.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL decode_heatmaps[argmax]" in out
    assert "FAIL render_heatmaps" not in out


def test_a_crashing_backend_fails_the_self_test(monkeypatch, capsys):
    _only(monkeypatch, {"torch", "cpu"})
    if backends._device_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("the cpu backend is not built")
    import kpfast.ops

    real = kpfast.ops.find_peaks

    def crash(*args, backend=None, **kwargs):
        if backend == "cpu":
            raise RuntimeError("boom")
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(kpfast.ops, "find_peaks", crash)
    assert info.main([]) == 1
    assert "FAIL find_peaks: RuntimeError: boom" in capsys.readouterr().out


@pytest.mark.triton
def test_triton_backend_is_self_tested_under_the_interpreter_with_every_kernel(monkeypatch):
    """The self-test launches every Triton kernel kpfast has (tools/triton_aot.py's jit_kernels), so that a user on a
    new Triton learns in seconds whether each kernel family works."""
    _only(monkeypatch, {"torch", "triton"})
    if backends._device_reason("triton", torch.device("cpu")) is not None:
        pytest.skip("triton cannot run here")
    import triton_aot as aot
    from kpfast.triton import _common, decode, loss, render

    launched = set()
    for module in (decode, loss, render):
        def spy(kernel, grid, *args, _module=module.__name__.rsplit(".", 1)[-1], **config):
            launched.add(f"{_module}.{kernel.__name__}")
            _common.launch(kernel, grid, *args, **config)

        monkeypatch.setattr(module, "launch", spy)
    rows = info.self_test(repeats=1)
    triton_cpu = next(r for r in rows if r["backend"] == "triton" and r["device"] == "cpu")
    assert triton_cpu["results"] and set(triton_cpu["results"].values()) == {"ok"}, triton_cpu["results"]
    assert launched == set(aot.jit_kernels())


def test_a_torch_newer_than_the_newest_tested_is_warned_about(monkeypatch, capsys):
    _only(monkeypatch, {"torch"})
    real = info.versions
    monkeypatch.setattr(info, "versions", lambda: dict(real(), torch="9.9.0", triton="9.8.0"))
    assert info.main(["--no-self-test"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: torch 9.9.0 is newer than the newest release kpfast was tested with" in captured.out
    assert "WARNING: triton 9.8.0 is newer" in captured.out
    assert "torch 9.9.0 is newer" in captured.err


def test_module_runs_as_a_script():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "kpfast.info", "--no-self-test"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "kpfast._C" in proc.stdout and "backends" in proc.stdout
