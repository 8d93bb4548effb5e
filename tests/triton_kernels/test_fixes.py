"""Regression tests for Triton kernel bugs that were fixed (tile shapes of empty sizes, in-kernel
blur taps, NaN and -inf handling, the device guard, clipping, a find_peaks recompile per
min_distance), run through the interpreter.

(What only Triton's real compiler catches, such as module globals in @triton.jit or float64
literals, is gated by tests/triton_kernels/test_aot.py.)"""

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.triton
triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402

from kpfast import backends, vocabulary  # noqa: E402
from kpfast.reference import decode as reference  # noqa: E402
from kpfast.triton.decode import _taps  # noqa: E402


@triton.jit
def _taps_probe(out_ptr, KSIZE: tl.constexpr, KPAD: tl.constexpr):
    j = tl.arange(0, KPAD)
    tl.store(out_ptr + j, _taps(j, KSIZE, KPAD))


def _need_triton():
    reason = backends._device_reason("triton", torch.device("cpu"))
    if reason is not None and not torch.cuda.is_available():
        pytest.skip(reason)


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_one_tile_shape_helper_handles_empty_sizes():
    from kpfast.triton import _common, loss, render

    assert _common.tile_shape(0, 0) == (1, 1)
    assert _common.tile_shape(5, 0) == (8, 1)
    assert _common.tile_shape(64, 48) == (64, 64)
    assert _common.tile_shape(96, 72) == (32, 128)
    # the launchers use the shared helper, not drifted copies of it
    assert not hasattr(render, "_tile_shape") and not hasattr(loss, "_tile_shape")


@pytest.mark.parametrize("kernel_size", list(range(1, 32, 2)))
def test_in_kernel_blur_taps_equal_the_opencv_table(kernel_size):
    """The taps are computed in the kernel (no host-to-device copy per call): same table."""
    _need_triton()
    pad = triton.next_power_of_2(kernel_size)
    out = torch.full((pad,), -1.0, device=_device())
    _taps_probe[(1,)](out, KSIZE=kernel_size, KPAD=pad)
    expected = reference.opencv_gaussian_kernel(kernel_size)
    # exp is float32 in the interpreter: a few float32 ulps from the float64 table, no more.
    np.testing.assert_allclose(out[:kernel_size].cpu().numpy(), expected, rtol=1e-6, atol=0)
    assert (out[kernel_size:] == 0).all()


def test_soft_argmax_first_chunk_all_minus_inf_is_finite():
    """A map larger than one chunk (64x48 > 2048 pixels) whose first chunk is all -inf: -inf
    weighs 0, the result is finite and equals the reference (was NaN: exp(-inf - -inf))."""
    _need_triton()
    maps = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    maps.view(2, 3, -1)[:, :, :2048] = -math.inf
    maps = maps.to(_device())
    coords, scores, _ = torch.ops.kpfast_triton.soft_argmax(maps, 1.0)
    ref_coords, ref_scores = reference.soft_argmax(maps.cpu(), 1.0)
    assert torch.isfinite(coords).all()
    torch.testing.assert_close(coords.cpu(), ref_coords, rtol=0, atol=1e-4)
    torch.testing.assert_close(scores.cpu(), ref_scores, rtol=0, atol=0)


def test_soft_argmax_nan_or_plus_inf_makes_the_map_nan():
    """docs/design.md: a NaN or +inf pixel makes that map's coords and score NaN."""
    _need_triton()
    maps = torch.randn(1, 3, 9, 7, generator=torch.Generator().manual_seed(1))
    maps[0, 0, 4, 3] = math.nan
    maps[0, 1, 0, 0] = math.inf
    coords, scores, _ = torch.ops.kpfast_triton.soft_argmax(maps.to(_device()), 1.0)
    coords, scores = coords.cpu(), scores.cpu()
    assert torch.isnan(coords[0, :2]).all()
    assert math.isnan(scores[0, 0]) and math.isnan(scores[0, 1])
    assert torch.isfinite(coords[0, 2]).all()


@pytest.mark.parametrize("method", vocabulary.DECODE_METHODS)
def test_decode_skips_nan_pixels_explicitly(method):
    """NaN pixels are never the maximum (docs/design.md), whatever tl.max does with NaN: NaN in the
    first chunk, beside the maximum, and a whole NaN map."""
    _need_triton()
    maps = torch.zeros(1, 3, 64, 48)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    maps[0, 0] = torch.exp(-((xs - 30.3) ** 2 + (ys - 40.6) ** 2) / 8)
    maps[0, 1] = maps[0, 0]
    maps[0, 0, 0, :10] = math.nan          # first chunk
    maps[0, 1, 41, 29] = math.nan          # next to the maximum
    maps[0, 2] = math.nan                  # all NaN
    coords, scores = torch.ops.kpfast_triton.decode_heatmaps(maps.to(_device()), method, 11, 3)
    coords, scores = coords.cpu(), scores.cpu()
    peak = maps[0, 0].nan_to_num(-1.0).max()
    assert scores[0, 0] == peak and scores[0, 1] == peak
    assert coords[0, 0].round().tolist() == [30.0, 41.0] or method != "argmax"
    assert (coords[0, :2] - torch.tensor([30.0, 41.0])).abs().max() <= 1.0
    assert math.isnan(scores[0, 2]) and coords[0, 2].tolist() == [-1.0, -1.0]


def _inputs(device):
    generator = torch.Generator().manual_seed(2)
    keypoints = (torch.rand(2, 1, 3, 2, generator=generator) * torch.tensor([12.0, 10.0])).to(device)
    weights = torch.ones(2, 1, 3, device=device)
    sigma = torch.full((2, 3), 2.0, device=device)
    maps = torch.rand(2, 3, 10, 12, generator=generator).to(device)
    return keypoints, weights, sigma, maps


def test_every_launch_runs_under_its_inputs_device(monkeypatch):
    """Each launcher enters the device guard of its inputs' device before launching (on a GPU:
    torch.cuda.device(x.device), so inputs on cuda:1 never launch on the current cuda:0). Every
    launch goes through kpfast.triton._common.launch, which takes the guard."""
    _need_triton()
    import contextlib

    from kpfast.triton import _common, decode, loss, render

    seen = []

    def spy(tensor):
        seen.append(tensor.device)
        return contextlib.nullcontext()

    monkeypatch.setattr(_common, "device_guard", spy)
    device = _device()
    keypoints, weights, sigma, maps = _inputs(device)
    ops = torch.ops.kpfast_triton
    calls = [
        lambda: render.render_heatmaps(keypoints, weights, sigma, 1.0, 10, 12, "udp", torch.float32),
        lambda: render.render_heatmaps_backward(maps, keypoints, weights, sigma, 1.0, "udp"),
        lambda: loss.heatmap_loss(maps, keypoints, weights, sigma, 1.0, "udp", "focal", 0.25, 2.0, 4.0, 15.0, 1.0, 0.1,
                                  0.1),
        lambda: loss.heatmap_loss_backward(torch.ones(2, 3, device=device), maps, keypoints, weights, sigma, 1.0, "udp",
                                           "focal", 0.25, 2.0, 4.0, 15.0, 1.0, 0.1, 0.1),
        lambda: decode.decode_heatmaps(maps, "dark", 11, 3),
        lambda: decode.soft_argmax(maps, 1.0),
        lambda: decode.soft_argmax_backward(torch.ones(2, 3, 2, device=device), maps, torch.zeros(2, 3, 2,
                                            device=device), torch.zeros(2, 3, device=device), 1.0),
        lambda: decode.find_peaks(maps, 0.5, 2, 4),
    ]
    del ops
    for call in calls:
        before = len(seen)
        call()
        assert seen[before:] == [device], call


@pytest.mark.parametrize("kind", vocabulary.LOSS_KINDS)
def test_loss_over_several_row_tiles_matches_the_reference(kind):
    """64x48 maps take two 32x64 tiles (the 2048-pixel tiles that keep the kernels unspilled)."""
    _need_triton()
    from kpfast.ops import heatmap_loss
    from kpfast.triton._common import tile_shape

    assert tile_shape(64, 48, max_elements=2048) == (32, 64)
    generator = torch.Generator().manual_seed(3)
    keypoints = torch.rand(2, 3, 2, generator=generator) * torch.tensor([47.0, 63.0])
    keypoints[0, 0] = torch.tensor([20.0, 40.0])  # a Gaussian across the tile boundary (row 32)
    pred = torch.randn(2, 3, 64, 48, generator=generator)
    results = []
    for backend in ("torch", "triton"):
        leaf = pred.clone().to(_device()).requires_grad_(True)
        loss = heatmap_loss(leaf, keypoints.to(_device()), kind=kind, backend=backend)
        loss.backward()
        results.append((loss.detach().cpu(), leaf.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_decode_kernel_clips_refined_points_to_the_map(method):
    """The Triton decode kernel itself clips DARK/UDP points to [-0.5, W-0.5] x
    [-0.5, H-0.5] (reference.clip_to_map), called directly, without kpfast.ops' Python clip.

    On noise maps the near-singular Hessian steps far out of the map, across each of the four
    borders (UDP also from border pixels, with its edge padding); those points must land exactly
    on the border the reference clips them to."""
    _need_triton()
    from kpfast.triton.decode import decode_heatmaps

    height, width = 17, 13
    noise = torch.rand(1, 64, height, width, generator=torch.Generator().manual_seed(0))
    # A narrow ridge leaving the map through its left border, at 30 degrees from the vertical: the
    # maximum is a border pixel and UDP (edge padding) steps ~2 px out of the map from it.
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    angle = math.radians(150)
    u = (xs + 0.6) * math.cos(angle) + (ys - 8.3) * math.sin(angle)
    v = -(xs + 0.6) * math.sin(angle) + (ys - 8.3) * math.cos(angle)
    ridge = torch.exp(-(u / 0.7) ** 2 / 2 - (v / 4.0) ** 2 / 2)[None, None]
    noise = torch.cat([ridge, noise], dim=1)
    maps = torch.cat([noise, noise.flip(-1), noise.flip(-2)], dim=1)  # (the blur is symmetric: mirrored steps)
    flat = maps.reshape(-1, height, width)
    x, y, _, _ = reference.heatmap_maximum(flat)
    offset = reference._dark_offset if method == "dark" else reference._udp_offset
    ox, oy = offset(flat, x, y, 11)
    raw_x, raw_y = x + ox.float(), y + oy.float()  # the published algorithm, unclipped
    # Beyond a border by > 0.05 px: float32 kernel vs float64 reference cannot disagree on the side.
    margin = 0.05
    sides = {"left": raw_x < -0.5 - margin, "right": raw_x > width - 0.5 + margin,
             "top": raw_y < -0.5 - margin, "bottom": raw_y > height - 0.5 + margin}
    assert all(side.any() for side in sides.values()), {k: int(v.sum()) for k, v in sides.items()}
    if method == "udp":
        assert x[0] == 0 and raw_x[0] < -2 and x[65] == width - 1 and raw_x[65] > width + 1  # the ridge
    coords, scores = decode_heatmaps(maps.to(_device()), method, 11, 3)
    coords = coords.cpu().reshape(-1, 2)
    expected, expected_scores = reference.decode_heatmaps(maps, method, 11, 3)
    expected = expected.reshape(-1, 2)
    torch.testing.assert_close(scores.cpu(), expected_scores, rtol=0, atol=0)
    for side, column, value in (("left", 0, -0.5), ("right", 0, width - 0.5), ("top", 1, -0.5),
                                ("bottom", 1, height - 0.5)):
        chosen = sides[side]
        assert (expected[chosen, column] == value).all()
        assert (coords[chosen, column] == value).all(), (side, coords[chosen, column])
    # Everything stays on the map, and the unclipped points agree with the reference.
    assert (coords[:, 0] >= -0.5).all() and (coords[:, 0] <= width - 0.5).all()
    assert (coords[:, 1] >= -0.5).all() and (coords[:, 1] <= height - 0.5).all()
    inside = ((raw_x > -0.5 + margin) & (raw_x < width - 0.5 - margin) & (raw_y > -0.5 + margin)
              & (raw_y < height - 0.5 - margin) & (ox.abs() < 2) & (oy.abs() < 2))
    assert inside.sum() > 20
    torch.testing.assert_close(coords[inside], expected[inside], rtol=0, atol=1e-3)


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_decode_kernel_keeps_points_inside_unclipped(method):
    """The clip changes nothing on the map: a Gaussian near each border decodes as the reference."""
    _need_triton()
    from kpfast.triton.decode import decode_heatmaps

    height, width = 17, 13
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    centres = [(0.2, 8.3), (12.1, 3.4), (6.6, 0.1), (5.2, 16.3), (-0.3, 9.0), (6.4, 16.6)]
    maps = torch.stack([torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 4.5) for cx, cy in centres])[None]
    coords, _ = decode_heatmaps(maps.to(_device()), method, 11, 3)
    expected, _ = reference.decode_heatmaps(maps, method, 11, 3)
    torch.testing.assert_close(coords.cpu(), expected, rtol=0, atol=1e-4)


def test_find_peaks_distance_is_a_runtime_argument():
    """One compiled find_peaks kernel serves every min_distance (it was a constexpr: a
    recompile per distance). The launch constexprs depend on the map size and max_peaks only,
    and min_distance / max_peaks are not even specialised on their value (do_not_specialize)."""
    import inspect

    from kpfast.triton import decode

    fn = getattr(decode._find_peaks_kernel, "fn", decode._find_peaks_kernel)
    parameters = inspect.signature(fn).parameters
    assert "min_distance" in parameters and parameters["min_distance"].annotation is inspect.Parameter.empty
    constexprs = [n for n, p in parameters.items() if p.annotation is not inspect.Parameter.empty]
    assert constexprs == ["BLOCK", "LIST", "FILL"]
    assert list(inspect.signature(decode.find_peaks_config).parameters) == ["height", "width", "max_peaks"]
    # a few list sizes serve every max_peaks
    lists = {decode.find_peaks_config(96, 72, p)["LIST"] for p in range(1, 3000, 7)}
    assert lists == set(decode.PEAK_LISTS)


@pytest.mark.parametrize("min_distance", [0, 1, 3])
def test_find_peaks_selection_over_several_rounds(monkeypatch, min_distance):
    """More peaks wanted than the selection list holds: further rounds rescan the map for the next
    list after the last key written. A 4-entry list exercises it on small maps, with ties in score
    (quantised noise) across tiles (a 40x33 map is two 1024-pixel tiles)."""
    _need_triton()
    from kpfast.triton import decode

    monkeypatch.setattr(decode, "PEAK_LISTS", (4,))
    assert decode.find_peaks_config(40, 33, 25)["LIST"] == 4
    noise = torch.rand(1, 2, 40, 33, generator=torch.Generator().manual_seed(5))
    maps = torch.cat([noise, (noise * 8).floor() / 8], dim=1)  # the second pair: many equal scores
    for max_peaks in (25, 3, 4, 8):
        expected = reference.find_peaks(maps, 0.2, min_distance, max_peaks)
        got = decode.find_peaks(maps.to(_device()), 0.2, min_distance, max_peaks)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g.cpu(), e, rtol=0, atol=0)
        assert expected[2].sum() > 4  # more peaks than one list


def test_find_peaks_fp16_bf16_maps_and_all_below_threshold():
    _need_triton()
    from kpfast.triton import decode

    maps = torch.rand(2, 3, 9, 70, generator=torch.Generator().manual_seed(6))
    for dtype in (torch.float16, torch.bfloat16):
        low = maps.to(dtype)
        expected = reference.find_peaks(low, 0.3, 2, 6)
        got = decode.find_peaks(low.to(_device()), 0.3, 2, 6)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g.cpu(), e, rtol=0, atol=0)
    coords, scores, valid = decode.find_peaks(maps.to(_device()), 2.0, 1, 5)  # every tile skipped
    assert not valid.any() and (coords == -1).all() and (scores == 0).all()
