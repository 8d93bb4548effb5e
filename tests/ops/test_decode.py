"""decode_heatmaps: every kernel backend against the torch reference, the reference against an
independent numpy + OpenCV statement of the published decoders, accuracy on rendered Gaussians,
edge cases, argument errors, opcheck and torch.compile; flip_merge.
Half precision and non-contiguous maps: tests/ops/test_common.py (DecodeCase)."""

import numpy as np
import math

import pytest
import torch

import kpfast
from kpfast import vocabulary
from kpfast.ops import decode_heatmaps, flip_merge, render_heatmaps
from kpfast.reference import decode as reference

from .harness import (H, W, backend_params, decode_test_maps, gaussian_maps, kernel_backends_and_torch,
                      non_finite_maps, special_maps)
from .published import published_decode

METHODS = vocabulary.DECODE_METHODS  # every method: a new one gets these tests (docs/extending.md)


def _assert_decoded_equal(got, expected, atol=1e-4):
    coords, scores = got
    ref_coords, ref_scores = expected
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0)
    torch.testing.assert_close(coords, ref_coords, rtol=0, atol=atol)


@pytest.mark.parametrize("method", METHODS)
def test_backend_matches_reference(kernel_backend, method):
    backend, device = kernel_backend
    maps = decode_test_maps(device)
    for blur_kernel, window in ((11, 3), (5, 5)):
        expected = decode_heatmaps(maps, method, blur_kernel, window, backend="torch")
        got = decode_heatmaps(maps, method, blur_kernel, window, backend=backend)
        _assert_decoded_equal(got, expected)


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_faint_maps_take_the_exact_rescaling_path(kernel_backend, method):
    """Maps whose blurred values reach DARK's 1e-10 floor or UDP's [1e-3, 50] clip near the
    argmax: the kernels must then compute MMPose's rescaling factor from the whole blurred map."""
    backend, device = kernel_backend
    base = gaussian_maps(1, 4, H, W, seed=5)
    scales = torch.tensor([2e-3, 1e-11, 80.0, 1e-12]).view(1, 4, 1, 1)
    sparse = torch.zeros(1, 2, H, W)
    sparse[0, 0, 6, 5] = 0.9            # a single pixel: its blurred tails fall under the floor
    sparse[0, 0, 0, 0] = 0.2
    sparse[0, 1, 4, 4] = 60.0           # a large peak: clipped at 50 after the blur
    sparse[0, 1, 7, 6] = 55.0
    maps = torch.cat([base * scales, sparse], dim=1).to(device)
    for blur_kernel in (3, 11):
        expected = decode_heatmaps(maps, method, blur_kernel, backend="torch")
        got = decode_heatmaps(maps, method, blur_kernel, backend=backend)
        _assert_decoded_equal(got, expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("blur_kernel", [5, 11])
def test_reference_matches_published_algorithm(method, blur_kernel):
    maps = torch.cat([gaussian_maps(1, 10, 20, 16, seed=7), gaussian_maps(1, 4, 20, 16, seed=8, noise=0.05),
                      special_maps(20, 16)], dim=1)
    coords, scores = reference.decode_heatmaps(maps, method, blur_kernel, 3)
    expected_coords, expected_scores = published_decode(maps[0].numpy(), method, blur_kernel, 3)
    np.testing.assert_array_equal(scores[0].numpy(), expected_scores)
    if method in ("dark", "udp"):  # kpfast's one deviation: points clipped to the map's area
        clipped = np.stack([np.clip(expected_coords[:, 0], -0.5, maps.shape[-1] - 0.5),
                            np.clip(expected_coords[:, 1], -0.5, maps.shape[-2] - 0.5)], axis=-1)
        expected_coords = np.where(expected_scores[:, None] > 0, clipped, expected_coords)
    np.testing.assert_allclose(coords[0].numpy(), expected_coords, rtol=0, atol=1e-4)


def test_opencv_gaussian_kernel_is_opencvs():
    import cv2

    for size in (1, 3, 5, 7, 9, 11, 17, 31):
        expected = cv2.getGaussianKernel(size, 0, ktype=cv2.CV_32F)[:, 0]
        # Equal up to the last bit of the normalisation's rounding.
        np.testing.assert_allclose(reference.opencv_gaussian_kernel(size), expected, rtol=1e-6, atol=0)
    assert reference.opencv_sigma(11) == pytest.approx(2.0)


def test_edge_case_semantics(kernel_backend):
    """Published rules at ties, blank/negative maps, borders and corners, on every backend."""
    backend, device = kernel_backend
    maps = special_maps(H, W, device=device)
    decoded = {m: decode_heatmaps(maps, m, backend=backend) for m in METHODS}
    coords, scores = decoded["argmax"]
    coords, scores = coords[0].cpu(), scores[0].cpu()
    assert coords[0].tolist() == [-1.0, -1.0] and scores[0] == 0.0, "all-zero map"
    assert coords[1].tolist() == [-1.0, -1.0] and scores[1] == maps[0, 1].max().cpu(), "negative map"
    assert coords[2].tolist() == [7.0, 2.0], "ties: the first maximum in row-major order"
    assert coords[3].tolist() == [0.0, 0.0] and coords[4].tolist() == [W - 1.0, H - 1.0], "corners"
    assert coords[9].tolist() == [0.0, 0.0], "constant map: the first pixel"
    for method in METHODS:
        c = decoded[method][0][0].cpu()
        assert c[0].tolist() == [-1.0, -1.0] and c[1].tolist() == [-1.0, -1.0], method
    # DARK refines only when 1 < x < W-2 and 1 < y < H-2: corners and 1 px from a border stay.
    dark = decoded["dark"][0][0].cpu()
    for k in (3, 4, 5):
        assert dark[k].tolist() == coords[k].tolist()
    assert (dark[7] - coords[7]).abs().max() > 0.05, "2 px from the borders DARK refines"
    assert dark[9].tolist() == [0.0, 0.0], "a constant map has a singular Hessian"
    # UDP refines everywhere, with edge padding: also at 1 px from a border and at corners.
    udp = decoded["udp"][0][0].cpu()
    for k in (3, 5, 6):
        assert torch.isfinite(udp[k]).all() and (udp[k] - coords[k]).abs().max() > 1e-3
    # Quarter: HRNet's 1 < x < W-1 and 1 < y < H-1; a peak at x = 1 is not moved.
    quarter = decoded["quarter"][0][0].cpu()
    assert quarter[5].tolist() == coords[5].tolist()
    assert quarter[7].tolist() == [coords[7, 0].item() - 0.25, coords[7, 1].item() - 0.25]


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_pixels_decode_as_the_reference(kernel_backend, method):
    """docs/design.md, the same on every backend: NaN is never the maximum, +inf / -inf are ordinary
    values, a non-finite value in the refinement patch leaves the integer argmax; an all-NaN map
    gives -1 and score NaN."""
    backend, device = kernel_backend
    maps = torch.cat([non_finite_maps(device=device), torch.full((1, 1, H, W), float("nan"), device=device)], dim=1)
    coords, scores = decode_heatmaps(maps, method, backend=backend)
    expected_coords, expected_scores = decode_heatmaps(maps.cpu(), method, backend="torch")
    torch.testing.assert_close(scores.cpu(), expected_scores, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(coords.cpu(), expected_coords, rtol=0, atol=1e-4, equal_nan=True)
    assert math.isnan(expected_scores[0, -1]) and expected_coords[0, -1].tolist() == [-1.0, -1.0]
    assert expected_scores[0, 2] == math.inf and not torch.isnan(expected_coords).any()


def test_published_rules_on_hand_made_maps():
    """Quarter and local_mean worked by hand."""
    m = torch.zeros(1, 2, 7, 8)
    m[0, 0, 3, 4] = 1.0
    m[0, 0, 3, 5] = 0.5   # right neighbour higher: +0.25 in x
    m[0, 0, 2, 4] = 0.2   # upper neighbour higher: -0.25 in y
    m[0, 1, 3, 4] = 1.0
    m[0, 1, 3, 3] = 1.0 - 1e-3
    m[0, 1, 4, 4] = -5.0  # negative weights count as zero in local_mean
    for backend in ("torch", "cpu"):
        if backend == "cpu" and not kpfast.extension_status()["loaded"]:
            continue
        quarter = decode_heatmaps(m, "quarter", backend=backend)[0][0]
        assert quarter[0].tolist() == [4.25, 2.75]
        local = decode_heatmaps(m, "local_mean", window=3, backend=backend)[0][0]
        assert local[0].tolist() == pytest.approx([(4 * 1.2 + 5 * 0.5) / 1.7, (3 * 1.5 + 2 * 0.2) / 1.7], abs=1e-6)
        assert local[1].tolist() == pytest.approx([(4 + 3 * 0.999) / 1.999, 3.0], abs=1e-6)


@pytest.mark.parametrize("encoding", ["dark", "udp"])
def test_dark_recovers_rendered_centres(encoding):
    """Noise-free Gaussians at known sub-pixel centres: DARK recovers them to < 0.01 px; argmax
    errs by ~0.38 px on average (the mean distance to the nearest pixel centre)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(1, 300, 2, generator=generator) * torch.tensor([48 - 12.0, 64 - 12.0]) + 6.0
    maps, _ = render_heatmaps(centres, size=(64, 48), sigma=2.0, encoding=encoding, backend="torch")
    backend = "cpu" if kpfast.extension_status()["loaded"] else "torch"
    errors = {}
    for method in ("argmax", "quarter", "dark", "udp"):
        coords, _ = decode_heatmaps(maps, method, blur_kernel=11, backend=backend)
        errors[method] = (coords - centres).norm(dim=-1)
    assert errors["dark"].max() < 0.01, errors["dark"].max()
    assert 0.34 < errors["argmax"].mean() < 0.42, errors["argmax"].mean()
    assert errors["quarter"].mean() < errors["argmax"].mean()
    assert errors["udp"].mean() < 0.05


@pytest.mark.parametrize("shape", [(0, 17, H, W), (3, 0, H, W), (1, 2, 1, 1), (2, 3, 1, 9), (2, 3, 6, 1)])
def test_empty_and_degenerate_shapes(kernel_backend, shape):
    backend, device = kernel_backend
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    for method in METHODS:
        coords, scores = decode_heatmaps(maps, method, backend=backend)
        assert coords.shape == shape[:2] + (2,) and scores.shape == shape[:2]
        expected = decode_heatmaps(maps, method, backend="torch")
        # On a single row (column) UDP's Hessian is eps along y (x): its step there is float
        # rounding of a zero difference divided by eps, meaningless in the published code too.
        flat = method == "udp" and min(shape[2:]) == 1
        _assert_decoded_equal((coords, scores), expected, atol=1e-2 if flat else 1e-4)


def test_outputs_do_not_require_grad():
    maps = torch.rand(1, 2, H, W, requires_grad=True)
    coords, scores = decode_heatmaps(maps, "dark")
    assert not coords.requires_grad and not scores.requires_grad


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(method="simcc"), ValueError, "method: expected one of"),
        (dict(blur_kernel=4), ValueError, r"blur_kernel: expected an odd int in \[1, 31\], got 4"),
        (dict(blur_kernel=33), ValueError, r"blur_kernel: expected an odd int in \[1, 31\], got 33"),
        (dict(blur_kernel=11.0), TypeError, "blur_kernel: expected an odd int, got float"),
        (dict(window=0), ValueError, "window: expected an odd int >= 1, got 0"),
        (dict(backend="gpu"), ValueError, "backend: expected one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        decode_heatmaps(torch.rand(2, 3, H, W), **kwargs)


def test_bad_heatmaps_are_named():
    with pytest.raises(ValueError, match=r"heatmaps: expected a 4-D tensor, got shape \(3, 13, 11\)"):
        decode_heatmaps(torch.rand(3, H, W))
    with pytest.raises(TypeError, match=r"heatmaps: expected dtype .* got torch.float64"):
        decode_heatmaps(torch.rand(1, 3, H, W, dtype=torch.float64))
    with pytest.raises(TypeError, match="heatmaps: expected a torch.Tensor, got ndarray"):
        decode_heatmaps(np.zeros((1, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"heatmaps: expected H >= 1 and W >= 1"):
        decode_heatmaps(torch.rand(1, 3, 0, W))


def test_opcheck(kernel_backend):
    backend, device = kernel_backend
    op = torch.ops.kpfast_triton.decode_heatmaps if backend == "triton" else torch.ops.kpfast.decode_heatmaps
    maps = decode_test_maps(device)
    for method in METHODS:
        torch.library.opcheck(op, (maps, method, 11, 3))


def test_torch_compile_fullgraph(kernel_backend):
    backend, device = kernel_backend
    maps = decode_test_maps(device)

    def decode(m):
        coords, scores = decode_heatmaps(m, "dark", backend=backend)
        return coords * 4.0, scores

    compiled = torch.compile(decode, fullgraph=True, backend="inductor" if backend != "triton" else "aot_eager")
    expected = decode(maps)
    got = compiled(maps)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---- flip_merge ---------------------------------------------------------------------------

def test_flip_merge_matches_hrnet_flip_back_and_shift():
    generator = torch.Generator().manual_seed(0)
    heatmaps = torch.rand(2, 5, 6, 7, generator=generator)
    flipped = torch.rand(2, 5, 6, 7, generator=generator)
    pairs = [(1, 2), (3, 4)]
    # HRNet's flip_back and shift_heatmap, written out with numpy.
    back = flipped.numpy()[:, :, :, ::-1].copy()
    for left, right in pairs:
        back[:, [left, right]] = back[:, [right, left]]
    shifted = back.copy()
    shifted[:, :, :, 1:] = back[:, :, :, :-1]
    np.testing.assert_allclose(flip_merge(heatmaps, flipped, pairs).numpy(), (heatmaps.numpy() + shifted) / 2,
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(flip_merge(heatmaps, flipped, pairs, shift=False).numpy(),
                               (heatmaps.numpy() + back) / 2, rtol=0, atol=1e-7)


def test_flip_merge_of_a_symmetric_pair_is_identity():
    # A map and its exact mirror (channels swapped) merge back to the map without shift.
    heatmaps = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    mirrored = heatmaps.flip(-1)[:, [0, 2, 1]]
    torch.testing.assert_close(flip_merge(heatmaps, mirrored, [(1, 2)], shift=False), heatmaps)


@pytest.mark.parametrize(
    "pairs, error, message",
    [
        ([(0, 5)], ValueError, r"flip_pairs: expected two distinct channels in \[0, 3\), got \(0, 5\)"),
        ([(1, 1)], ValueError, "flip_pairs: expected two distinct channels"),
        ([(0, 1), (1, 2)], ValueError, "flip_pairs: expected each channel in at most one pair"),
        ([(0, 1, 2)], TypeError, "flip_pairs: expected pairs of two ints"),
    ],
)
def test_flip_merge_bad_pairs_are_named(pairs, error, message):
    maps = torch.rand(1, 3, 4, 4)
    with pytest.raises(error, match=message):
        flip_merge(maps, maps, pairs)


def test_flip_merge_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"flipped_heatmaps: expected shape \(1, 3, 4, 4\)"):
        flip_merge(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5), [])


@pytest.mark.parametrize("backend_device", kernel_backends_and_torch())
@pytest.mark.parametrize("method", ["dark", "udp"])
def test_refined_coordinates_stay_on_the_map(backend_device, method):
    """On noise-only maps the near-singular Hessian can make DARK step up to 50 px off a 64x48 map;
    every backend clips to the map's area [-0.5, W-0.5] x [-0.5, H-0.5]
    (docs/ops-arguments-and-precision.md)."""
    backend, device = backend_device
    maps = torch.rand(2, 17, 64, 48, generator=torch.Generator().manual_seed(0)).to(device)
    coords, scores = decode_heatmaps(maps, method, blur_kernel=31, backend=backend)
    assert (scores > 0).all()
    assert (coords[..., 0] >= -0.5).all() and (coords[..., 0] <= 47.5).all()
    assert (coords[..., 1] >= -0.5).all() and (coords[..., 1] <= 63.5).all()
    if method == "dark":  # these maps exercise the clip: the published DARK step leaves the map
        unclipped = published_decode(maps.reshape(-1, 64, 48).cpu().numpy(), method, 31)[0]
        assert ((unclipped < -0.5) | (unclipped > [47.5, 63.5])).any()


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("blur_kernel", [11, 31])
def test_dark_agrees_with_the_float64_reference_on_gaussian_maps(backend_device, blur_kernel):
    """The 1e-4 px promise holds where the Taylor step is well conditioned (Gaussian-like maps,
    |H^-1| <= ~30): the float32 kernels against the reference, whose refinement runs in float64.
    On noise-only maps |H^-1| reaches 1e4 and float32 rounding of the blur grows into ~1e-2 px
    (measured 6.6e-4 px at blur 11 and 9.9e-3 px at blur 31 on 64x48 uniform noise, cpu kernel):
    no fixed bound holds there, by any float32 implementation."""
    backend, device = backend_device
    maps = gaussian_maps(4, 17, 64, 48, seed=0, device=device)
    got = decode_heatmaps(maps, "dark", blur_kernel=blur_kernel, backend=backend)
    expected = decode_heatmaps(maps.cpu(), "dark", blur_kernel=blur_kernel, backend="torch")
    torch.testing.assert_close(got[0].cpu(), expected[0], rtol=0, atol=1e-4)


# ---- the kernels clip DARK/UDP themselves (csrc/kpfast/decode.h clip_to_map) ------------------

def _op_devices():
    from kpfast import _extension

    cuda = pytest.param("cuda", marks=pytest.mark.skipif(
        not (torch.cuda.is_available() and _extension.has_cuda_kernels()), reason="cuda: no GPU or no CUDA kernels"))
    return ["cpu", cuda]


def _unclipped(maps, method, blur_kernel):
    """The reference's refined coordinates before its clip_to_map, (N, 2) float64."""
    m = maps.reshape(-1, *maps.shape[-2:]).float()
    x, y, _, _ = reference.heatmap_maximum(m)
    offset = reference._dark_offset if method == "dark" else reference._udp_offset
    ox, oy = offset(m, x, y, blur_kernel)
    return torch.stack([x.double() + ox.double(), y.double() + oy.double()], dim=-1)


def _clip_cases():
    """(1, 35, 64, 48): 34 uniform-noise maps, whose near-singular Hessians step DARK and UDP far
    off the map at blur 31, and a Gaussian centred just left of the border with correlated axes:
    its argmax is in column 0 and UDP (edge padding) steps outward past -0.5 (to -0.57 at blur 31)."""
    height, width = 64, 48
    noise = torch.rand(1, 34, height, width, generator=torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    dx, dy, rho = (xs + 1.0) / 2.0, (ys - 10.3) / 4.0, -0.7
    border = torch.exp(-(dx * dx - 2 * rho * dx * dy + dy * dy) / (2 * (1 - rho * rho)))
    return torch.cat([noise, border[None, None]], dim=1)


@pytest.mark.parametrize("device", _op_devices())
@pytest.mark.parametrize("method", ["dark", "udp"])
def test_kernel_clips_refined_coordinates_like_the_reference(device, method):
    """torch.ops.kpfast.decode_heatmaps itself (no kpfast.ops post-clip) clips every coordinate
    the published step puts off the map to exactly the reference's border value, and leaves the
    others inside [-0.5, W-0.5] x [-0.5, H-0.5]."""
    maps = _clip_cases()
    height, width = maps.shape[-2:]
    coords, scores = torch.ops.kpfast.decode_heatmaps(maps.to(device), method, 31, 3)
    coords = coords.cpu().reshape(-1, 2)
    expected = reference.decode_heatmaps(maps, method, 31, 3)[0].reshape(-1, 2)
    raw = _unclipped(maps, method, 31)
    low, high = torch.tensor([-0.5, -0.5]), torch.tensor([width - 0.5, height - 0.5])
    outside = (raw < low - 1e-3) | (raw > high + 1e-3)  # clearly off the map: clipped by every float32 path
    assert outside.any(), "the cases must exercise the clip"
    assert (expected[outside] == coords[outside]).all(), (coords[outside], expected[outside])
    assert ((coords >= low) & (coords <= high)).all()
    if method == "udp":  # the border case: clipped in x, a well-defined y
        assert coords[-1, 0].item() == -0.5 and raw[-1, 0].item() < -0.55
        assert coords[-1, 1].item() == pytest.approx(expected[-1, 1].item(), abs=1e-3)


@pytest.mark.parametrize("device", _op_devices())
@pytest.mark.parametrize("method", ["dark", "udp"])
def test_kernel_clip_leaves_maps_inside_and_non_positive_maps_alone(device, method):
    """Gaussian maps refine inside the map (the clip is a no-op there: equal to the reference to
    1e-4 px); a map whose maximum is <= 0 still gives -1, never the clipped -0.5."""
    maps = gaussian_maps(2, 5, 64, 48, seed=1)
    maps[0, 0] = -maps[0, 0]
    coords, _ = torch.ops.kpfast.decode_heatmaps(maps.to(device), method, 11, 3)
    expected, _ = reference.decode_heatmaps(maps, method, 11, 3)
    torch.testing.assert_close(coords.cpu(), expected, rtol=0, atol=1e-4)
    assert coords[0, 0].tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("device", _op_devices())
@pytest.mark.parametrize("method", ["dark", "udp"])
def test_kernel_blur_taps_of_every_size_agree_with_the_reference(device, method):
    """The kernels compute OpenCV's taps themselves (decode.h opencv_raw_tap: the fixed tables
    for sizes <= 9, the Gaussian beyond); every odd size 1..31 refines Gaussian maps as the
    reference, whose taps are checked against cv2 (test_opencv_gaussian_kernel_is_opencvs)."""
    maps = gaussian_maps(1, 8, 40, 32, seed=3)
    for blur_kernel in range(1, 32, 2):
        coords, _ = torch.ops.kpfast.decode_heatmaps(maps.to(device), method, blur_kernel, 3)
        expected, _ = reference.decode_heatmaps(maps, method, blur_kernel, 3)
        torch.testing.assert_close(coords.cpu(), expected, rtol=0, atol=1e-4, msg=f"blur_kernel={blur_kernel}")
