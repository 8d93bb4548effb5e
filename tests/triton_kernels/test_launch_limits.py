"""Launch limits of the Triton kernels, decided on the host: CUDA's grid limits (2**31 - 1 blocks
on x, 65535 on y and z) and Triton's limit on a tensor's elements, at the largest inputs kpfast
accepts (docs/ops-arguments-and-precision.md: 1 <= H, W <= 32768, at most 2**31 - 1 output
elements), and the fake (meta) outputs against the real ones."""

import pytest
import torch

triton = pytest.importorskip("triton")

from kpfast.ops._checks import MAX_MAP_SIDE, MAX_OUTPUT_ELEMENTS, whole_map_window  # noqa: E402
from kpfast.triton import _common, decode, render  # noqa: E402

from .helpers import interpreter_device  # noqa: E402

# Triton rejects a block of more elements than this (triton.language.TRITON_MAX_TENSOR_NUMEL).
MAX_TENSOR_ELEMENTS = 1048576


def _largest_inputs():
    """(maps, height, width) at the accepted extremes: the largest square map, the widest and the
    tallest, and the most maps of one pixel; each at most MAX_OUTPUT_ELEMENTS elements in all."""
    side = MAX_MAP_SIDE
    return [(max(1, MAX_OUTPUT_ELEMENTS // (side * side)), side, side), (MAX_OUTPUT_ELEMENTS // side, 1, side),
            (MAX_OUTPUT_ELEMENTS // side, side, 1), (MAX_OUTPUT_ELEMENTS, 1, 1)]


def test_check_grid_rejects_every_axis_past_its_limit():
    assert _common.check_grid((2**31 - 1, 65535, 65535)) == (2**31 - 1, 65535, 65535)
    for grid in [(2**31,), (1, 65536), (1, 1, 65536), (0,)]:
        with pytest.raises(ValueError, match=r"Triton grid .* outside CUDA's limits"):
            _common.check_grid(grid)


@pytest.mark.parametrize("maps, height, width", _largest_inputs())
def test_soft_argmax_backward_grid_fits_at_the_largest_maps(maps, height, width):
    """Its chunks were grid axis 1: 2**20 of them at 32768 x 32768, past CUDA's 65535."""
    size = height * width
    block = decode.soft_argmax_backward_config(size)["BLOCK"]
    grid, chunks = decode.soft_argmax_backward_grid(maps, size, block)
    assert _common.check_grid(grid) == grid and len(grid) == 1
    assert chunks * block >= size > (chunks - 1) * block
    assert grid[0] == maps * chunks


@pytest.mark.parametrize("maps, height, width", _largest_inputs())
def test_render_forward_grid_fits_at_the_largest_maps(maps, height, width):
    block_h = render.forward_config(height, width, "udp")["BLOCK_H"]
    _common.check_grid((maps, max(1, triton.cdiv(height, block_h))))


@pytest.mark.parametrize("height, width", [(MAX_MAP_SIDE, MAX_MAP_SIDE), (1, MAX_MAP_SIDE), (MAX_MAP_SIDE, 1),
                                           (64, 48)])
def test_every_decode_tile_fits_tritons_element_limit(height, width):
    """local_mean's window tile was (next_pow2(window))**2: 4M elements for a whole-map window on
    a 1024-pixel side, past Triton's limit (and 2**32 at the largest map)."""
    for method in decode.METHODS:
        for window in (1, 3, 101, whole_map_window(2**31 - 1, height, width)):
            config = decode.decode_config(height, width, method, 31, window)
            tiles = [config["BLOCK"], config["ROWS"] * 8 * config["KPAD"], config["WROWS"] * config["WCOLS"],
                     config["BLOCK_W"] * config["KPAD"]]
            assert max(tiles) <= MAX_TENSOR_ELEMENTS, (method, window, config)
            assert config["WROWS"] * config["WCOLS"] <= decode.WINDOW_TILE
    assert decode.window_tile(3) == dict(WROWS=4, WCOLS=4)  # the default window: one tile


@pytest.mark.triton
@pytest.mark.parametrize("window", [3, 45, 119])
def test_local_mean_over_several_window_tiles_matches_the_reference(monkeypatch, window):
    """A window of several tiles (WINDOW_TILE shrunk so that 45 and 119 span 4-16 of them) gives
    the reference's centroid; the default window is a single tile."""
    device = interpreter_device()
    from kpfast.ops import decode_heatmaps

    monkeypatch.setattr(decode, "WINDOW_TILE", 256)
    maps = torch.rand(2, 3, 40, 60, generator=torch.Generator().manual_seed(window)).to(device) - 0.2
    got = decode_heatmaps(maps, "local_mean", window=window, backend="triton")
    expected = decode_heatmaps(maps.cpu(), "local_mean", window=window, backend="torch")
    torch.testing.assert_close(got[0].cpu(), expected[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(got[1].cpu(), expected[1], rtol=0, atol=0)


@pytest.mark.triton
def test_soft_argmax_backward_over_many_chunks_matches_the_reference(monkeypatch):
    """The flattened (map, chunk) grid: chunks of 16 pixels, so each map spans many programs."""
    device = interpreter_device()
    from kpfast.ops import soft_argmax

    monkeypatch.setattr(decode, "soft_argmax_backward_config", lambda size: dict(BLOCK=16, num_warps=4))
    maps = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0)).to(device) * 3
    grads = []
    for backend in ("triton", "torch"):
        leaf = maps.clone().requires_grad_(True)
        coords, _ = soft_argmax(leaf, beta=2.0, backend=backend)
        (coords * torch.tensor([1.0, -0.5], device=device)).sum().backward()
        grads.append(leaf.grad.cpu())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.triton
def test_triton_soft_argmax_fake_gives_the_kernels_float32(monkeypatch):
    """The Triton kernel returns float32 whatever the maps' dtype; its fake said float64 for
    float64 maps (the C++ kernels' rule), so a compiled graph expected the wrong dtype."""
    interpreter_device()
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kpfast.ops import decode as ops_decode

    op = ops_decode._triton_ops().soft_argmax
    maps = torch.rand(1, 2, 5, 4, dtype=torch.float64)
    real = op(maps, 1.0)
    with FakeTensorMode() as mode:
        fake = op(mode.from_tensor(maps), 1.0)
    assert [t.dtype for t in fake] == [t.dtype for t in real] == [torch.float32] * 3
