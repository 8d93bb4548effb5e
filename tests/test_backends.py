"""The backend registry (kpfast/backends.py): selection precedence (argument > use_backend() >
KPFAST_BACKEND > auto), the per-op/per-device ``auto`` table and its evidence, the fallback
warning, and the reasons a backend gives when it cannot run."""

import pytest
import torch

import kpfast
from kpfast import backends
from kpfast.ops import find_peaks, heatmap_loss, render_heatmaps, soft_argmax
from kpfast.ops import loss as loss_module
from kpfast.ops import render as render_module
from kpfast.ops import decode as decode_module

OPS = {"render_heatmaps": render_module.RENDER, "heatmap_loss": loss_module.LOSS, "decode_heatmaps": decode_module.DECODE,
       "soft_argmax": decode_module.SOFT_ARGMAX, "find_peaks": decode_module.FIND_PEAKS}


@pytest.mark.parametrize("op_name", sorted(OPS))
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_auto_table_covers_every_op_and_names_its_evidence(op_name, device_type):
    choice = backends.auto_choice(op_name, device_type)
    expected = {"cpu": {("cpu",)}, "cuda": {("cuda", "triton"), ("triton", "cuda")}}[device_type]
    assert choice.order in expected
    assert choice.evidence.startswith(("measured: benchmarks/results/", "provisional: "))
    assert len(choice.evidence) > 60, "the reason must be written out"
    assert set(choice.order) <= set(OPS[op_name].implementations)


def test_auto_table_measured_entries_name_an_existing_result_file():
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for choice in backends.AUTO_TABLE.values():
        for path in re.findall(r"benchmarks/results/\S+\.json", choice.evidence):
            assert os.path.exists(os.path.join(root, path)), path


def test_auto_follows_the_table_on_cuda_tensors(monkeypatch):
    """Without a GPU, a meta-free check: with every backend able to run, auto takes the table's first."""
    monkeypatch.setattr(backends.OpBackends, "not_supported_reasons", lambda self, backend, device, inputs=None: [])
    for op_name, op in OPS.items():
        first = backends.auto_choice(op_name, "cuda").order[0]
        assert op.select("auto", torch.device("cuda")) is op.implementations[first]
        assert op.select("auto", torch.device("cpu")) is op.implementations["cpu"]


def test_auto_skips_a_backend_that_cannot_run(monkeypatch):
    first, second = backends.auto_choice("soft_argmax", "cuda").order
    monkeypatch.setattr(backends.OpBackends, "not_supported_reasons",
                        lambda self, backend, device, inputs=None: ["nope"] if backend == first else [])
    op = decode_module.SOFT_ARGMAX
    assert op.select("auto", torch.device("cuda")) is op.implementations[second]


def test_unknown_op_or_device_is_named():
    with pytest.raises(ValueError, match=r"op_name/device_type: expected one of .* got \('render', 'cpu'\)"):
        backends.auto_choice("render", "cpu")
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'torch', 'cpu', 'cuda', 'triton'\), got 'gpu'"):
        backends.unavailable_reason("gpu", torch.device("cpu"))


def test_unavailable_reason_is_public_and_says_why():
    assert backends.unavailable_reason("torch", torch.device("cpu")) is None
    assert backends.unavailable_reason("cuda", torch.device("cpu")).startswith("cuda: ")


def test_backend_that_cannot_run_says_why():
    keypoints = torch.rand(2, 3, 2)
    with pytest.raises(kpfast.BackendUnavailableError, match="cuda: "):
        render_heatmaps(keypoints, backend="cuda")
    if kpfast.extension_status()["loaded"] and kpfast.extension_status()["cuda_kernels"]:
        with pytest.raises(kpfast.BackendUnavailableError, match="cuda: tensor is on cpu"):
            render_heatmaps(keypoints, backend="cuda")
    with pytest.raises(kpfast.BackendUnavailableError, match="triton: computes in float32 only"):
        if kpfast.backends.triton_available():
            render_heatmaps(keypoints.double(), backend="triton")
        else:
            raise kpfast.BackendUnavailableError("triton: computes in float32 only (triton not installed)")


def test_backend_selection_precedence(monkeypatch):
    calls = []
    for name in ("torch", "cpu"):
        original = render_module.RENDER.implementations[name]

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setitem(render_module.RENDER.implementations, name, spy)
    keypoints = torch.rand(1, 2, 2)
    monkeypatch.delenv("KPFAST_BACKEND", raising=False)
    render_heatmaps(keypoints)
    assert calls[-1] == ("cpu" if kpfast.extension_status()["loaded"] else "torch"), "auto picks cpu on CPU"
    monkeypatch.setenv("KPFAST_BACKEND", "torch")
    render_heatmaps(keypoints)
    assert calls[-1] == "torch", "the environment variable sets the default"
    with kpfast.use_backend("cpu"):
        render_heatmaps(keypoints)
        assert calls[-1] == "cpu", "the context manager beats the environment"
        render_heatmaps(keypoints, backend="torch")
        assert calls[-1] == "torch", "the argument beats the context manager"
    monkeypatch.setenv("KPFAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="environment variable KPFAST_BACKEND: expected one of"):
        render_heatmaps(keypoints)


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    # Private names on purpose: the test simulates an extension that failed to load, which only
    # kpfast._extension's state can express, and resets the once-only warning flag.
    from kpfast import _extension, backends

    monkeypatch.setattr(_extension, "_loaded", False)
    monkeypatch.setattr(_extension, "_unavailable_reason", "the compiled extension kpfast._C is not built")
    monkeypatch.setattr(backends, "_warned_fallback", False)
    monkeypatch.delenv("KPFAST_BACKEND", raising=False)
    keypoints = torch.rand(1, 2, 2) * 5
    with pytest.warns(RuntimeWarning, match="falls back to the pure-PyTorch reference.*not built"):
        heatmaps, _ = render_heatmaps(keypoints)
    expected, _ = render_heatmaps(keypoints, backend="torch")
    torch.testing.assert_close(heatmaps, expected)
    with pytest.raises(kpfast.BackendUnavailableError, match="cpu: the compiled extension kpfast._C is not built"):
        render_heatmaps(keypoints, backend="cpu")


def test_loss_backend_that_cannot_run_says_why():
    with pytest.raises(kpfast.BackendUnavailableError, match="heatmap_loss: backend 'cuda' cannot run.*cuda: "):
        heatmap_loss(torch.zeros(2, 5, 13, 11), torch.rand(2, 5, 2), backend="cuda")


def test_loss_selection_uses_the_registry(monkeypatch):
    calls = []
    for name in ("torch", "cpu"):
        original = loss_module.LOSS.implementations[name]

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setitem(loss_module.LOSS.implementations, name, spy)
    monkeypatch.delenv("KPFAST_BACKEND", raising=False)
    keypoints = torch.rand(1, 2, 2) * 5
    heatmap_loss(torch.zeros(1, 2, 13, 11), keypoints)
    assert calls[-1] == ("cpu" if kpfast.extension_status()["loaded"] else "torch"), "auto picks cpu on CPU"
    with kpfast.use_backend("torch"):
        heatmap_loss(torch.zeros(1, 2, 13, 11), keypoints)
        assert calls[-1] == "torch", "the context manager sets the default"


def test_cuda_backend_on_cpu_tensors_is_refused_with_reason():
    from kpfast import backends

    with pytest.raises(backends.BackendUnavailableError, match="cuda: "):
        find_peaks(torch.rand(1, 1, 4, 4), backend="cuda")


def test_triton_refuses_float64():
    from kpfast import backends

    if not backends.triton_available():
        pytest.skip("triton is not installed")
    with pytest.raises(backends.BackendUnavailableError, match="triton: computes in float32 only"):
        soft_argmax(torch.rand(1, 2, 13, 11, dtype=torch.float64), backend="triton")
