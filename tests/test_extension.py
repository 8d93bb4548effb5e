"""The compiled extension kpfast._C: how it is built (stable ABI, no unstable torch symbol), how
it registers its ops, and the C++ kernels' rule for non-finite heatmap values (docs/design.md,
"Non-finite pixels"), on CPU and, where there is a GPU, on CUDA."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import kpfast
from kpfast import _extension
from kpfast import reference, vocabulary
from kpfast.versions import TESTED, minor

pytestmark = pytest.mark.skipif(not _extension.is_loaded(), reason=f"kpfast._C: {_extension.unavailable_reason()}")

NAN, INF = math.nan, math.inf
METHODS = vocabulary.DECODE_METHODS


def _library_path() -> str:
    from kpfast import _C

    return _C.__file__


def _devices():
    cuda = pytest.param("cuda", marks=pytest.mark.skipif(
        not (torch.cuda.is_available() and _extension.has_cuda_kernels()), reason="cuda: no GPU or no CUDA kernels"))
    return ["cpu", cuda]


# ---- how the binary is built ---------------------------------------------------------------

# Demangled names of the unstable C++ API: any of these namespaces in an undefined symbol ties
# the binary to one torch version.
UNSTABLE = re.compile(r"\b(c10|at|torch|caffe2|pybind11)::")


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("c++filt") is None, reason="needs binutils")
def test_only_stable_abi_symbols_are_imported():
    nm = subprocess.run(["nm", "-D", "--undefined-only", _library_path()], check=True, capture_output=True, text=True)
    names = subprocess.run(["c++filt"], input=nm.stdout, check=True, capture_output=True, text=True).stdout
    undefined = [line.split()[-1] if " U " not in line else line.split(" U ", 1)[1].strip()
                 for line in names.splitlines() if line.strip()]
    unstable = [name for name in undefined if UNSTABLE.search(name)]
    assert not unstable, f"unstable torch C++ symbols imported by kpfast._C: {unstable[:10]}"
    # What it does import from torch is the stable C shim.
    assert any(name.startswith(("aoti_torch_", "torch_")) for name in undefined)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")
def test_needs_neither_libtorch_python_nor_cuda_libraries():
    dynamic = subprocess.run(["readelf", "-d", _library_path()], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    forbidden = [lib for lib in needed if lib.startswith(("libtorch_python", "libtorch_cuda", "libc10_cuda",
                                                          "libcudart", "libpython"))]
    assert not forbidden, f"kpfast._C needs {forbidden}: it would not load in every torch >= its target"


def test_build_info_names_the_stable_target():
    info = _extension.build_info()
    assert info["abi"] == "stable"
    assert info["target"] == "2.11" == TESTED["torch"][0]  # the oldest tested torch is the ABI target
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["torch"])
    assert info["cuda"] in ("0", "1")
    assert (info["arches"] != "") == (info["cuda"] == "1")


@pytest.mark.parametrize("version, expected", [("2.13.0+cpu", (2, 13)), ("2.11", (2, 11)), ("2.15.0a0+git1", (2, 15)),
                                               ("nonsense", ())])
def test_version_tuple(version, expected):
    assert minor(version) == expected


def test_a_newer_torch_than_the_build_is_accepted():
    # The binary's target (2.11) is older than or equal to the running torch: loaded.
    assert minor(torch.__version__) >= minor(_extension.build_info()["target"])
    assert _extension.is_loaded() and _extension.unavailable_reason() is None


def test_backward_ops_are_private_and_sizes_symbolic():
    ops = torch.ops.kpfast
    for name in ("_render_heatmaps_backward", "_heatmap_loss_backward", "_soft_argmax_backward"):
        assert hasattr(ops, name)
        assert not hasattr(ops, name[1:]), f"the public name {name[1:]} still exists"
    schema = str(ops.render_heatmaps.default._schema)
    assert "SymInt height" in schema and "SymInt width" in schema


def test_fake_kernels_exist_after_importing_only_the_extension():
    # `import kpfast._C` alone (no explicit import of kpfast.ops) must register the fake kernels.
    code = (
        "import torch, kpfast._C\n"
        "from torch._subclasses.fake_tensor import FakeTensorMode\n"
        "with FakeTensorMode():\n"
        "    coords, scores = torch.ops.kpfast.decode_heatmaps(torch.empty(2, 3, 8, 6), 'argmax', 11, 3)\n"
        "assert tuple(coords.shape) == (2, 3, 2), coords.shape\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(kpfast.__file__)),
                                                        os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_render_compiles_with_dynamic_sizes():
    keypoints = torch.rand(2, 3, 2) * 10

    def render(kp, height: int, width: int):
        return kpfast.render_heatmaps(kp, size=(height, width), sigma=2.0, backend="cpu")[0]

    compiled = torch.compile(render, fullgraph=True, dynamic=True)
    for size in ((16, 12), (20, 18)):
        torch.testing.assert_close(compiled(keypoints, *size), render(keypoints, *size))


# ---- non-finite values: decode ----------------------------------------------------------------

def _maps(device, dtype=torch.float32, height=9, width=8):
    """Two maps of small positive noise with a clear maximum 1 at (x=5, y=4)."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 2, height, width, generator=generator) * 0.2 + 0.05
    maps[..., 4, 5] = 1.0
    maps[..., 4, 4] = 0.7  # a left neighbour, so refinements move the point
    return maps.to(device=device, dtype=dtype)


def _decode(maps, method):
    return torch.ops.kpfast.decode_heatmaps(maps.contiguous(), method, 5, 3)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_nan_is_never_the_maximum(device, dtype, method):
    maps = _maps(device, dtype)
    maps[0, 0, 0, 0] = NAN  # before the maximum in row-major order
    maps[0, 1, 4, 5] = NAN  # at the maximum: the next largest (0.7 at x=4) wins
    coords, scores = _decode(maps, method)
    assert scores[0, 0].item() == 1.0 and scores[0, 1].item() == pytest.approx(0.7, rel=1e-2)
    assert round(coords[0, 0, 0].item()) == 5 and round(coords[0, 0, 1].item()) == 4
    # Map 1: its argmax (4, 4) has a NaN beside it, so every refinement keeps the integer point.
    assert coords[0, 1].tolist() == [4.0, 4.0]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("method", METHODS)
def test_all_nan_map_gives_minus_one_and_nan_score(device, method):
    maps = torch.full((2, 1, 6, 7), NAN, device=device)
    maps[1] = -INF
    maps[1, 0, 3, 3] = NAN
    coords, scores = _decode(maps, method)
    assert coords.tolist() == [[[-1.0, -1.0]], [[-1.0, -1.0]]]
    assert math.isnan(scores[0, 0].item())
    assert scores[1, 0].item() == -INF  # -inf is an ordinary value: the maximum of an all -inf (+NaN) map


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("method", METHODS)
def test_infinite_maximum_keeps_the_integer_argmax(device, method):
    maps = _maps(device)
    maps[0, 0, 4, 5] = INF
    maps[0, 1, 4, 6] = INF  # +inf beside... and it is also the maximum of map 1
    maps[0, 1, 2, 2] = -INF
    coords, scores = _decode(maps, method)
    assert scores[0].tolist() == [INF, INF]
    assert coords[0].tolist() == [[5.0, 4.0], [6.0, 4.0]]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("method", [method for method in METHODS if method != "argmax"])  # argmax reads no neighbour
def test_non_finite_beside_the_maximum_keeps_the_integer_argmax(device, method):
    maps = _maps(device).repeat(1, 2, 1, 1)
    maps[0, 0, 4, 6] = NAN
    maps[0, 1, 3, 5] = -INF  # above the maximum
    maps[0, 2, 5, 5] = NAN
    coords, _ = _decode(maps, method)
    assert coords[0, :3].tolist() == [[5.0, 4.0]] * 3
    # The untouched map is refined (the finite case moves off the integer point).
    if method != "argmax":
        assert coords[0, 3].tolist() != [5.0, 4.0]


# ---- the CUDA kernels' memory paths against the CPU kernels ----------------------------------

CUDA_KERNELS = pytest.mark.skipif(not (torch.cuda.is_available() and _extension.has_cuda_kernels()),
                                  reason="cuda: no GPU or no CUDA kernels")
# (H, W): 16-byte-aligned rows (no head/tail, no row wrap inside a vector); odd sizes (heads,
# tails, vectors that wrap to the next row); W below a vector (all-scalar soft-argmax); a map
# too large to stage in find_peaks' shared memory (> 7680 px: global window reads).
PATH_SHAPES = [(16, 12), (7, 9), (5, 3), (1, 1), (13, 29), (100, 80)]


def _on_offset(maps, offset):
    """`maps` as a contiguous tensor starting `offset` elements into its storage: a map start that
    is not 16-byte aligned, so the kernels take their scalar head and tail."""
    buffer = torch.zeros(maps.numel() + offset, dtype=maps.dtype, device=maps.device)
    view = buffer[offset:].view(maps.shape)
    view.copy_(maps)
    return view


def _path_maps(height, width, dtype):
    """(2, 3, H, W): smooth maps (one a faint Gaussian: DARK's floor / UDP's clip -> the rescale
    fallback), ties, and noise with the maximum in the last pixel (a tail, or a predicated-off
    vector); and the mask of the smooth ones, where DARK/UDP are well conditioned (on noise the
    Taylor step amplifies float32 rounding - FMA contraction on the GPU - to ~1e-2 px)."""
    generator = torch.Generator().manual_seed(height * 1000 + width)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    centre = torch.rand(3, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    smooth = torch.exp(-((cols - centre[:, :1, None]) ** 2 + (rows - centre[:, 1:, None]) ** 2) / 8.0)
    smooth[0] *= 1e-12
    maps = torch.rand(2, 3, height, width, generator=generator)
    maps[0] = smooth
    maps[1, 0] = torch.round(maps[1, 0] * 3)  # ties: the smallest row-major index must win
    maps[1, 1, -1, -1] = 2.0
    return maps.to(dtype), torch.tensor([[True, True, True], [False, False, False]])


@CUDA_KERNELS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("shape", PATH_SHAPES)
def test_cuda_vector_paths_match_the_cpu_kernels(dtype, offset, shape):
    cpu, smooth = _path_maps(*shape, dtype)
    cuda = _on_offset(cpu.cuda(), offset)
    for method in METHODS:
        for blur_kernel, window in ((5, 3), (11, 7)):
            got = torch.ops.kpfast.decode_heatmaps(cuda, method, blur_kernel, window)
            expected = torch.ops.kpfast.decode_heatmaps(cpu, method, blur_kernel, window)
            torch.testing.assert_close(got[1].cpu(), expected[1], rtol=0, atol=0)
            compared = smooth if method in ("dark", "udp") else torch.ones_like(smooth)
            torch.testing.assert_close(got[0].cpu()[compared], expected[0][compared], rtol=0, atol=1e-4, msg=method)
    coords, scores, lse = torch.ops.kpfast.soft_argmax(cuda, 2.0)
    ref_coords, ref_scores, ref_lse = torch.ops.kpfast.soft_argmax(cpu, 2.0)
    torch.testing.assert_close(coords.cpu(), ref_coords, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores.cpu(), ref_scores, rtol=0, atol=0)
    torch.testing.assert_close(lse.cpu(), ref_lse, rtol=1e-5, atol=1e-5)
    grad_coords = torch.randn(coords.shape, generator=torch.Generator().manual_seed(1))
    grad = torch.ops.kpfast._soft_argmax_backward(grad_coords.cuda(), cuda, coords, lse, 2.0)
    ref_grad = torch.ops.kpfast._soft_argmax_backward(grad_coords, cpu, ref_coords, ref_lse, 2.0)
    tolerance = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(grad.cpu(), ref_grad, **tolerance)
    for distance in (0, 1, 3):
        got = torch.ops.kpfast.find_peaks(cuda, 0.2, distance, 5)
        expected = torch.ops.kpfast.find_peaks(cpu, 0.2, distance, 5)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)


# ---- non-finite values: soft-argmax ---------------------------------------------------------

@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_soft_argmax_minus_inf_weighs_zero(device, dtype):
    maps = _maps(device, dtype)
    maps[0, 0, :, 0] = -INF  # a whole column, the first pixel included
    maps[0, 1, 0, :] = -INF
    maps[0, 1, 4, 6] = -INF  # beside the maximum
    coords, scores, _ = torch.ops.kpfast.soft_argmax(maps, 2.0)
    expected_coords, expected_scores = reference.soft_argmax(maps, 2.0)
    assert torch.isfinite(coords).all()
    tolerance = 1e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(coords, expected_coords.to(coords.dtype), atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(scores, expected_scores.to(scores.dtype))


@pytest.mark.parametrize("device", _devices())
def test_soft_argmax_backward_with_minus_inf_matches_autograd(device):
    maps = _maps(device)
    maps[0, 0, :, 0] = -INF
    maps[0, 1, 4, 6] = -INF
    coords, _, lse = torch.ops.kpfast.soft_argmax(maps, 2.0)
    grad_coords = torch.tensor([[[1.0, -0.5], [0.25, 2.0]]], device=device)
    grad = torch.ops.kpfast._soft_argmax_backward(grad_coords, maps, coords, lse, 2.0)
    leaf = maps.clone().requires_grad_(True)
    expected_coords, _ = reference.soft_argmax(leaf, 2.0)
    (expected,) = torch.autograd.grad((expected_coords * grad_coords).sum(), leaf)
    assert torch.isfinite(grad).all()
    assert (grad[0, 0, :, 0] == 0).all() and grad[0, 1, 4, 6].item() == 0
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("value", [NAN, INF])
def test_soft_argmax_nan_or_plus_inf_gives_nan(device, value):
    maps = _maps(device).repeat(1, 2, 1, 1)
    maps[0, 0, 0, 0] = value
    maps[0, 1, 4, 5] = value  # at the maximum
    maps[0, 2, 8, 7] = value  # the last pixel
    coords, scores, _ = torch.ops.kpfast.soft_argmax(maps, 1.0)
    assert torch.isnan(coords[0, :3]).all() and torch.isnan(scores[0, :3]).all()
    assert torch.isfinite(coords[0, 3]).all() and scores[0, 3].item() == 1.0


# ---- non-finite values: peaks ---------------------------------------------------------------

@pytest.mark.parametrize("device", _devices())
def test_nan_is_never_a_peak_and_inf_is_one(device):
    maps = torch.zeros(1, 2, 7, 7, device=device)
    maps[0, 0, 3, 3] = NAN
    maps[0, 0, 3, 4] = 0.5  # beside the NaN: still a peak
    maps[0, 1, 1, 1] = INF
    maps[0, 1, 5, 5] = 0.8
    coords, scores, valid = torch.ops.kpfast.find_peaks(maps, 0.1, 1, 3)
    assert valid[0, 0].tolist() == [True, False, False]
    assert coords[0, 0, 0].tolist() == [4.0, 3.0] and scores[0, 0, 0].item() == 0.5
    assert valid[0, 1].tolist() == [True, True, False]
    assert scores[0, 1, :2].tolist() == [INF, pytest.approx(0.8)]
    assert coords[0, 1, :2].tolist() == [[1.0, 1.0], [5.0, 5.0]]


# ---- CUDA-only checks (skip without a GPU) ----------------------------------------------------

@pytest.mark.skipif(torch.cuda.device_count() < 2 or not _extension.has_cuda_kernels(), reason="needs two GPUs")
def test_soft_argmax_backward_refuses_mixed_devices():
    maps = torch.rand(1, 2, 5, 5, device="cuda:0")
    coords, _, lse = torch.ops.kpfast.soft_argmax(maps, 1.0)
    with pytest.raises(RuntimeError, match="one device"):
        torch.ops.kpfast._soft_argmax_backward(torch.ones_like(coords).to("cuda:1"), maps, coords, lse, 1.0)
