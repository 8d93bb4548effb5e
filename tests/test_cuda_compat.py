"""Can this GPU run this build? The cuda backend's device rules (kpfast/_cuda_compat.py), tested
on CPU with the device facts (compute capability, driver) and the build facts (architectures,
CUDA runtime) monkeypatched; on a GPU the last test checks the real device."""

import ctypes

import pytest
import torch

from kpfast import _cuda_compat, _extension, backends
from kpfast.ops import decode as decode_module

BUILD = "8.0_8.6_8.9_9.0+PTX"  # setup.py's DEFAULT_CUDA_ARCH_LIST
CUDA_13_0, CUDA_13_2, CUDA_12_8 = 13000, 13020, 12080


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 7), (8, 9), (9, 0)])
def test_cubins_cover_their_major_version_upwards(capability):
    assert _cuda_compat.incompatibility(capability, CUDA_13_0, BUILD, CUDA_13_0) is None


def test_ptx_covers_newer_devices_when_the_driver_can_compile_it():
    assert _cuda_compat.incompatibility((12, 0), CUDA_13_2, BUILD, CUDA_13_0) is None
    reason = _cuda_compat.incompatibility((12, 0), CUDA_13_0, BUILD, CUDA_13_2)
    assert "needs the PTX" in reason and "CUDA 13.0" in reason and "13.2" in reason


def test_no_code_for_an_older_or_uncovered_device():
    reason = _cuda_compat.incompatibility((7, 5), CUDA_13_0, BUILD, CUDA_13_0)
    assert reason == ("cuda: kpfast._C has no code for this GPU (compute capability 7.5; built for 8.0, 8.6, 8.9, "
                      "9.0+PTX): rebuild with TORCH_CUDA_ARCH_LIST including 7.5")
    # no PTX: a newer major version is not covered by any cubin
    assert "no code for this GPU" in _cuda_compat.incompatibility((9, 0), CUDA_13_0, "8.0_8.6", CUDA_13_0)
    # an arch-specific cubin runs on exactly its capability
    assert _cuda_compat.incompatibility((9, 0), CUDA_13_0, "9.0a", CUDA_13_0) is None
    assert "no code" in _cuda_compat.incompatibility((9, 1), CUDA_13_0, "9.0a", CUDA_13_0)


def test_a_driver_of_an_older_major_version_is_refused():
    reason = _cuda_compat.incompatibility((9, 0), CUDA_12_8, BUILD, CUDA_13_0)
    assert reason.startswith("cuda: the NVIDIA driver supports CUDA 12.8, older than the CUDA 13.0 runtime")
    # minor version compatibility: a 13.2 runtime runs its cubins under a 13.0 driver
    assert _cuda_compat.incompatibility((9, 0), CUDA_13_0, BUILD, CUDA_13_2) is None
    # unknown facts are not held against the device
    assert _cuda_compat.incompatibility((9, 0), None, BUILD, None) is None


def test_unreadable_arch_lists_are_named():
    assert _cuda_compat.parse_arches("8.0;9.0a 10.0f_12.0+PTX") == [
        (8, 0, "", False), (9, 0, "a", False), (10, 0, "f", False), (12, 0, "", True)]
    with pytest.raises(ValueError, match=r"arches: cannot read 'sm80' of '8.0;sm80'"):
        _cuda_compat.parse_arches("8.0;sm80")


@pytest.fixture
def fake_cuda_build(monkeypatch):
    """A loaded extension with CUDA kernels for BUILD and runtime 13.0, on a device whose facts the
    test sets through the returned dict."""
    device = dict(capability=(9, 0), driver=CUDA_13_0)
    monkeypatch.setattr(_extension, "_loaded", True)
    monkeypatch.setattr(_extension, "_has_cuda_kernels", True)
    monkeypatch.setattr(_cuda_compat, "build_facts", lambda: dict(arches=BUILD, runtime=CUDA_13_0))
    monkeypatch.setattr(_cuda_compat, "device_facts", lambda index: dict(device))
    monkeypatch.setattr(_cuda_compat, "_reasons", {})
    return device


def test_cuda_backend_reports_an_uncovered_device_and_auto_takes_the_next(fake_cuda_build, monkeypatch):
    fake_cuda_build["capability"] = (7, 0)
    cuda0 = torch.device("cuda", 0)
    reason = backends.unavailable_reason("cuda", cuda0)
    assert reason.startswith("cuda: kpfast._C has no code for this GPU (compute capability 7.0")
    op = decode_module.SOFT_ARGMAX
    with pytest.raises(backends.BackendUnavailableError, match="no code for this GPU"):
        op.select("cuda", cuda0)
    monkeypatch.setattr(backends, "triton_available", lambda: True)
    order = backends.auto_choice("soft_argmax", "cuda").order
    assert "cuda" in order and "triton" in order
    assert op.select("auto", cuda0) is op.implementations["triton"]


def test_cuda_backend_reports_an_old_driver(fake_cuda_build):
    fake_cuda_build["driver"] = CUDA_12_8
    assert "older than the CUDA 13.0 runtime" in backends.unavailable_reason("cuda", torch.device("cuda", 0))


def test_a_covered_device_is_available_and_the_answer_is_kept(fake_cuda_build, monkeypatch):
    assert backends.unavailable_reason("cuda", torch.device("cuda", 0)) is None
    monkeypatch.setattr(_cuda_compat, "device_facts", lambda index: pytest.fail("facts read twice"))
    assert backends.unavailable_reason("cuda", torch.device("cuda", 0)) is None


def test_the_check_traces_as_a_constant_under_torch_compile(fake_cuda_build, monkeypatch):
    """Op selection runs inside torch.compile(fullgraph=True): the device check (ctypes, CUDA
    queries) must not be traced; it is called once at trace time and its answer used as a constant."""

    def facts(index):  # a ctypes call, as the real driver query makes: dynamo cannot trace it
        return dict(capability=(ctypes.c_int(7).value, 0), driver=CUDA_13_0)

    monkeypatch.setattr(_cuda_compat, "device_facts", facts)

    def offset(x):
        reason = backends.unavailable_reason("cuda", torch.device("cuda", 0))
        return x + (1.0 if reason is None else 2.0)

    compiled = torch.compile(offset, fullgraph=True, backend="eager")
    assert compiled(torch.zeros(2)).tolist() == [2.0, 2.0]


def test_info_prints_driver_runtime_capability_and_arches(fake_cuda_build, monkeypatch, capsys):
    from kpfast import info

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    monkeypatch.setattr(_cuda_compat, "driver_version", lambda: CUDA_13_2)
    report = info.cuda_compatibility()
    assert report["driver"] == "13.2" and report["runtime"] == "13.0" and report["arches"] == BUILD
    assert report["devices"] == [dict(index=0, name="Fake GPU", capability="9.0", reason=None)]
    info.print_cuda_compatibility(report)
    out = capsys.readouterr().out
    for text in ("driver   CUDA 13.2", "runtime  CUDA 13.0", "arches   " + BUILD, "cuda:0   Fake GPU, compute 9.0"):
        assert text in out, out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_the_real_device_is_judged():
    """On a GPU: the facts are read, and a build with CUDA kernels either runs or says why."""
    facts = _cuda_compat.device_facts(0)
    assert len(facts["capability"]) == 2 and facts["capability"][0] >= 1
    assert facts["driver"] is None or facts["driver"] >= 10000
    if _extension.has_cuda_kernels():
        reason = backends.unavailable_reason("cuda", torch.device("cuda", 0))
        assert reason is None or reason.startswith("cuda: "), reason
