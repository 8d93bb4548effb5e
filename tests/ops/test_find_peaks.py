"""find_peaks: kernel backends against the reference, the suppression rule on hand-made maps,
several people rendered into one map, empty batches, argument errors, opcheck, torch.compile.
Half precision and non-contiguous maps: tests/ops/test_common.py (FindPeaksCase)."""

import math

import pytest
import torch

from kpfast.ops import find_peaks, render_heatmaps

from .harness import gaussian_maps, kernel_backends_and_torch, special_maps

H, W = 14, 12


def _people_maps(device, batch=2, people=4, num_keypoints=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(batch, people, num_keypoints, 2, generator=generator) * torch.tensor([W - 1.0, H - 1.0])
    maps, _ = render_heatmaps(keypoints, size=(H, W), sigma=1.0, encoding="udp", backend="torch")
    return maps.to(device), keypoints


def _all_maps(device):
    people, _ = _people_maps(device)
    noisy = gaussian_maps(2, 3, H, W, seed=2, noise=0.3).to(device)
    special = special_maps(H, W, device).expand(2, -1, -1, -1)
    return torch.cat([people, noisy, special], dim=1)


def _assert_peaks_equal(got, expected):
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("threshold, min_distance, max_peaks", [(0.1, 2, 5), (0.0, 1, 20), (-0.5, 0, 7),
                                                                (0.2, 4, 3)])
def test_backend_matches_reference(kernel_backend, threshold, min_distance, max_peaks):
    backend, device = kernel_backend
    maps = _all_maps(device)
    expected = find_peaks(maps, threshold, min_distance, max_peaks, backend="torch")
    got = find_peaks(maps, threshold, min_distance, max_peaks, backend=backend)
    _assert_peaks_equal(got, expected)
    assert expected[2].sum() > 0


def test_people_are_found():
    keypoints = torch.tensor([[[[2.2, 3.1]], [[9.0, 10.4]], [[8.6, 1.7]]]])
    maps, _ = render_heatmaps(keypoints, size=(H, W), sigma=1.0, encoding="udp")
    coords, scores, valid = find_peaks(maps, threshold=0.3, min_distance=2, max_peaks=5, backend="torch")
    assert valid[0, 0].tolist() == [True, True, True, False, False]
    found = sorted(coords[0, 0, :3].tolist())
    expected = sorted(torch.floor(keypoints[0, :, 0] + 0.5).tolist())
    assert found == expected
    assert scores[0, 0, :3].tolist() == sorted(scores[0, 0, :3].tolist(), reverse=True)
    assert coords[0, 0, 3:].eq(-1).all() and scores[0, 0, 3:].eq(0).all()


def test_suppression_and_ties_on_hand_made_map():
    m = torch.zeros(1, 1, 6, 8)
    m[0, 0, 1, 1] = 0.9
    m[0, 0, 2, 3] = 0.8      # within 2 px of the 0.9: suppressed; 3 px away with d=1: kept
    m[0, 0, 4, 6] = 0.5
    m[0, 0, 4, 7] = 0.5      # a plateau: its first pixel (row-major) is the peak
    m[0, 0, 0, 7] = 0.05     # below the threshold
    for backend in ("torch", "cpu"):
        coords, scores, valid = find_peaks(m, threshold=0.1, min_distance=2, max_peaks=4, backend=backend)
        assert coords[0, 0].tolist() == [[1, 1], [6, 4], [-1, -1], [-1, -1]]
        assert scores[0, 0].tolist() == pytest.approx([0.9, 0.5, 0.0, 0.0])
        assert valid[0, 0].tolist() == [True, True, False, False]
        coords, _, _ = find_peaks(m, threshold=0.1, min_distance=1, max_peaks=4, backend=backend)
        assert coords[0, 0].tolist()[:3] == [[1, 1], [3, 2], [6, 4]]


def test_equal_scores_sorted_by_index():
    m = torch.zeros(1, 1, 5, 9)
    m[0, 0, 3, 1] = m[0, 0, 0, 7] = m[0, 0, 3, 7] = 0.6
    for backend in ("torch", "cpu"):
        coords, _, _ = find_peaks(m, threshold=0.1, min_distance=1, max_peaks=3, backend=backend)
        assert coords[0, 0].tolist() == [[7, 0], [1, 3], [7, 3]]


@pytest.mark.parametrize("backend_device", kernel_backends_and_torch())
def test_empty_batches_and_more_peaks_than_pixels(backend_device):
    """Empty batches give empty outputs on every backend (the torch reference used to crash)."""
    backend, device = backend_device
    for shape in [(0, 3, H, W), (2, 0, H, W)]:
        coords, scores, valid = find_peaks(torch.zeros(shape, device=device), backend=backend)
        assert coords.shape == shape[:2] + (20, 2) and valid.shape == shape[:2] + (20,)
        assert scores.shape == shape[:2] + (20,) and valid.dtype == torch.bool and coords.dtype == torch.float32
    tiny = torch.rand(1, 2, 2, 2, generator=torch.Generator().manual_seed(0)).to(device)
    expected = find_peaks(tiny, 0.0, 0, 6, backend="torch")
    _assert_peaks_equal(find_peaks(tiny, 0.0, 0, 6, backend=backend), expected)
    assert expected[2][0, 0].tolist() == [True] * 4 + [False] * 2



def _special_value_maps(device):
    """NaN, +inf and -inf at a peak, beside one and filling whole maps; plateaus (equal values in
    a row, a block and a whole map); peaks on borders and corners. (1, 9, 11, 9)."""
    generator = torch.Generator().manual_seed(4)
    maps = torch.rand(1, 9, 11, 9, generator=generator) * 0.5
    maps[0, 0, 5, 4] = math.nan                     # NaN: never a peak, never suppresses a neighbour
    maps[0, 0, 0, 0] = math.nan                     # NaN on a corner
    maps[0, 1, 5, 4] = math.inf                     # +inf: an ordinary (valid) peak
    maps[0, 1, 5, 6] = math.inf                     # two +inf 2 px apart: the first wins within d >= 2
    maps[0, 1, 9, 8] = -math.inf
    maps[0, 2] = math.nan                           # all NaN: no peak
    maps[0, 3] = math.inf                           # all +inf: the first pixel of the plateau (d > 0)
    maps[0, 4] = -math.inf                          # all -inf: no peak, even at threshold -inf
    maps[0, 5] = 0.0
    maps[0, 5, 3, 2:6] = 0.7                        # a plateau in a row
    maps[0, 5, 7:9, 5:8] = 0.7                      # a 2x3 plateau
    maps[0, 5, 10, 8] = 0.9                         # a corner peak
    maps[0, 6] = 0.3                                # a constant map
    maps[0, 7, 4, 4] = math.nan                     # NaN beside the maximum
    maps[0, 7, 4, 5] = 2.0
    maps[0, 8, :, 0] = 0.8                          # equal values down the left border
    return maps.to(device)


@pytest.mark.parametrize("min_distance", [0, 1, 2, 5])
@pytest.mark.parametrize("threshold", [0.1, -math.inf])
def test_special_values_and_plateaus_match_the_reference(kernel_backend, min_distance, threshold):
    backend, device = kernel_backend
    maps = _special_value_maps(device)
    expected = find_peaks(maps.cpu(), threshold, min_distance, 12, backend="torch")
    got = find_peaks(maps, threshold, min_distance, 12, backend=backend)
    _assert_peaks_equal([g.cpu() for g in got], expected)
    _, scores, valid = expected
    assert not valid[0, 2].any() and not valid[0, 4].any()   # all NaN, all -inf: nothing
    assert valid[0, 1, 0] and scores[0, 1, 0] == math.inf    # +inf peaks are valid
    assert valid[0, 3].sum() == (1 if min_distance > 0 else 12)  # d = 0: every pixel, 12 slots


def test_special_values_hand_checked():
    """The rules themselves (docs/design.md), on the reference every backend is compared with."""
    maps = _special_value_maps("cpu")
    coords, scores, valid = find_peaks(maps, 0.1, 2, 12, backend="torch")
    inf_peaks = coords[0, 1][scores[0, 1] == math.inf].tolist()
    assert inf_peaks == [[4, 5]]                                # the later +inf at (6, 5) is suppressed
    assert coords[0, 3, 0].tolist() == [0, 0] and valid[0, 3].sum() == 1
    assert coords[0, 5, :3].tolist() == [[8, 10], [2, 3], [5, 7]]  # 0.9, then each plateau's first pixel
    assert coords[0, 7, 0].tolist() == [5, 4] and scores[0, 7, 0] == 2.0  # a NaN beside it changes nothing
    assert [4, 5] not in coords[0, 0].tolist() and [0, 0] not in coords[0, 0].tolist()  # NaN: no peak
    finite = find_peaks(maps[:, :1].nan_to_num(-math.inf), 0.1, 2, 12, backend="torch")
    _assert_peaks_equal(find_peaks(maps[:, :1], 0.1, 2, 12, backend="torch"), finite)  # NaN = absent


@pytest.mark.parametrize("min_distance", [0, 1, 2, 5])
def test_distances_and_more_slots_than_peaks(kernel_backend, min_distance):
    backend, device = kernel_backend
    maps = _all_maps(device)
    expected = find_peaks(maps, 0.05, min_distance, 40, backend="torch")
    _assert_peaks_equal(find_peaks(maps, 0.05, min_distance, 40, backend=backend), expected)
    assert (~expected[2][..., -1]).any()  # maps with more slots than peaks: an invalid tail



def test_many_peaks_beyond_the_cuda_candidate_list(kernel_backend):
    """min_distance=0 on noise makes every pixel a peak: more than the CUDA kernel's shared
    list holds (2048), which then rescans the map; all backends must agree."""
    backend, device = kernel_backend
    maps = torch.rand(1, 2, 48, 50, generator=torch.Generator().manual_seed(9)).to(device)
    _assert_peaks_equal(find_peaks(maps, -1.0, 0, 25, backend=backend), find_peaks(maps, -1.0, 0, 25, backend="torch"))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(min_distance=-1), ValueError, "min_distance: expected an int >= 0, got -1"),
        (dict(max_peaks=0), ValueError, "max_peaks: expected an int >= 1, got 0"),
        (dict(max_peaks=2.0), TypeError, "max_peaks: expected an int, got float"),
        (dict(threshold="0.1"), TypeError, "threshold: expected a float"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        find_peaks(torch.rand(1, 2, H, W), **kwargs)


def test_opcheck(kernel_backend):
    backend, device = kernel_backend
    op = torch.ops.kpfast_triton.find_peaks if backend == "triton" else torch.ops.kpfast.find_peaks
    torch.library.opcheck(op, (_all_maps(device), 0.1, 2, 5))


def test_torch_compile_fullgraph(kernel_backend):
    backend, device = kernel_backend
    maps = _all_maps(device)

    def peaks(m):
        coords, scores, valid = find_peaks(m, 0.1, 2, 5, backend=backend)
        return coords * 2, scores, valid

    compiled = torch.compile(peaks, fullgraph=True, backend="inductor" if backend != "triton" else "aot_eager")
    for got, expected in zip(compiled(maps), peaks(maps)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
