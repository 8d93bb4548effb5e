"""kpfast.data.gpu_photometric against albumentations 2.0.8: the same pixels for the same
parameters (per transform and for a whole sampled pipeline), the same firing rates and parameter
distributions, and its errors.

Tolerances (max abs difference in grey levels, uint8), why they are not 0, and what was measured
when they were set (docs/data.md, "GPU photometric augmentation"):

- HueSaturationValue 1: equal to OpenCV's vectorised HSV->RGB (which truncates); the last
  ``W mod 32`` pixels of each row go through OpenCV's scalar code, which rounds. Measured 0 at
  W = 192 (and on all 2**24 colours at W = 4096), 1 at W = 200.
- RandomGamma 0: the same float64 table, truncated the same way.
- GaussianBlur 1 and MotionBlur 1: float32 sums in another order than OpenCV's, so a sum within
  an ulp of .5 may round the other way. Measured 1 (Gaussian, a few pixels per image), 0 (motion).
- CoarseDropout 0.
- A whole pipeline 2: the blurs' rounding differences can meet in one pixel. Measured 1.
"""

import random

import numpy as np
import pytest
import torch

from kpfast.data import DEFAULT_AUGMENTATION, resolve_augmentation_config
from kpfast.data.gpu_photometric import SUPPORTED_TYPES, PhotometricAugmenter, StepParams

A = pytest.importorskip("albumentations")
from albumentations.augmentations.blur import functional as fblur  # noqa: E402

TOL = {"HueSaturationValue": 1, "RandomGamma": 0, "GaussianBlur": 1, "MotionBlur": 1, "CoarseDropout": 0}
PIPELINE_TOL = 2
DEFAULT_ENTRIES = resolve_augmentation_config("default")["albumentations"]
ENTRY = {e["type"]: e for e in DEFAULT_AUGMENTATION["albumentations"]}


def _images(batch, height=64, width=192, seed=0, low=0):
    """Noise on smooth gradients: flat areas, edges and grey pixels (S = 0) all occur."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for b in range(batch):
        base = np.stack([(xx * (3 + c + b) + yy * (5 - c)) % 256 for c in range(3)], -1)
        noise = rng.integers(-40, 41, (height, width, 3))
        img = np.clip(base + noise, low, 255)
        if b % 3 == 0:  # a grey band: hue undefined, saturation 0
            img[: height // 4] = img[: height // 4, :, :1]
        out.append(img.astype(np.uint8))
    return np.stack(out)


def _to_torch(batch_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch_hwc).permute(0, 3, 1, 2).contiguous()


def _to_numpy(batch: torch.Tensor) -> np.ndarray:
    return batch.permute(0, 2, 3, 1).cpu().numpy()


def _albumentations_apply(name: str, entry: dict, img: np.ndarray, values: dict, i: int) -> np.ndarray:
    """Sample i's parameters from ``values`` through the albumentations transform's ``apply``."""
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items() if k not in ("type", "p")}
    t = getattr(A, name)(p=1.0, **params)
    v = {k: val[i].item() if val[i].dim() == 0 else val[i].numpy() for k, val in values.items()}
    if name == "HueSaturationValue":
        return t.apply(img, hue_shift=v["hue_shift"], sat_shift=v["sat_shift"], val_shift=v["val_shift"])
    if name == "RandomGamma":
        return t.apply(img, gamma=v["gamma"])
    if name == "GaussianBlur":
        return t.apply(img, kernel=fblur.create_gaussian_kernel_1d(v["sigma"], int(v["ksize"])))
    if name == "MotionBlur":
        kernel = _albumentations_motion_kernel(t, v)
        return t.apply(img, kernel=kernel.astype(np.float32) / np.sum(kernel))
    if name == "CoarseDropout":
        holes = v["holes"][: int(v["num_holes"])]
        return t.apply(img, holes=holes, seed=0)
    raise AssertionError(name)


class _FixedShift:
    """Stands in for create_motion_kernel's random_state: returns the drawn line shift."""

    def __init__(self, values, half):
        self.draws = [values["shift_x"] / (half / 2), values["shift_y"] / (half / 2)] if half else [0.0, 0.0]

    def uniform(self, lo, hi):
        return self.draws.pop(0)


def _albumentations_motion_kernel(t, v):
    half = int(v["ksize"]) // 2
    return fblur.create_motion_kernel(int(v["ksize"]), v["angle"], v["direction"], allow_shifted=t.allow_shifted,
                                      random_state=_FixedShift(v, half))


# ---------------------------------------------------------------------------------------------
# Construction and errors


def test_from_default_config_builds_the_photometric_steps_in_order():
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    assert aug.names == list(SUPPORTED_TYPES)  # the p == 0 entries (CLAHE, ...) are skipped
    assert [s.p for s in aug.steps] == [0.3, 0.3, 0.1, 0.1, 0.2]
    assert not PhotometricAugmenter.from_config([])
    assert not PhotometricAugmenter.from_config(resolve_augmentation_config("none")["albumentations"])


def test_unsupported_type_is_refused_in_one_line():
    entries = DEFAULT_ENTRIES + [{"type": "CLAHE", "p": 0.5}]
    with pytest.raises(ValueError) as err:
        PhotometricAugmenter.from_config(entries)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"entry {len(entries) - 1}" in msg and "'CLAHE'" in msg
    assert all(name in msg for name in SUPPORTED_TYPES)
    # The same type with p == 0 is ignored, as the CPU path ignores it.
    PhotometricAugmenter.from_config(DEFAULT_ENTRIES + [{"type": "CLAHE", "p": 0.0}])


@pytest.mark.parametrize("entry, words", [
    ({"type": "GaussianBlur", "p": 0.5, "blur_limit": [3, 5], "border_mode": 1}, ["border_mode", "GaussianBlur"]),
    ({"type": "CoarseDropout", "p": 0.5, "fill": "random"}, ["fill", "random"]),
    ({"type": "RandomGamma", "p": 1.5}, ["p must be in [0, 1]"]),
    ({"type": "HueSaturationValue", "p": 0.5, "hue_shift_limit": [10, -10]}, ["hue_shift_limit", "lo <= hi"]),
    ({"type": "MotionBlur", "p": 0.5, "direction_range": [0, 2]}, ["direction_range"]),
    ({"type": "GaussianBlur", "p": 0.5, "sigma_limit": [0, 1]}, ["sigma_limit"]),
    ({"p": 0.5}, ["needs a 'type'"]),
])
def test_bad_entries_are_refused(entry, words):
    with pytest.raises(ValueError) as err:
        PhotometricAugmenter.from_config([entry])
    assert "\n" not in str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("images, words", [
    (torch.zeros((2, 3, 8, 8), dtype=torch.float32), ["images", "torch.uint8", "torch.float32"]),
    (torch.zeros((2, 1, 8, 8), dtype=torch.uint8), ["images", "(B, 3, H, W)", "(2, 1, 8, 8)"]),
    (torch.zeros((3, 8, 8), dtype=torch.uint8), ["images", "(B, 3, H, W)", "(3, 8, 8)"]),
    (torch.zeros((2, 3, 8, 8), dtype=torch.uint8, device="meta"), ["images", "cpu or cuda", "meta"]),
    (np.zeros((2, 3, 8, 8), np.uint8), ["images", "torch.Tensor", "ndarray"]),
])
def test_bad_images_are_refused(images, words):
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    with pytest.raises(ValueError) as err:
        aug(images, torch.Generator().manual_seed(0))
    assert "\n" not in str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_bad_generator_is_refused():
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    with pytest.raises(ValueError, match="generator"):
        aug(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), np.random.default_rng(0))


def test_empty_batch_is_returned_unchanged():
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    empty = torch.zeros((0, 3, 16, 12), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert aug(empty, gen) is empty
    assert torch.equal(gen.get_state(), state)


def test_deterministic_given_the_generator_and_input_untouched():
    aug = PhotometricAugmenter.from_config([dict(e, p=0.5) for e in DEFAULT_ENTRIES if e["p"] > 0])
    x = _to_torch(_images(8, 32, 48))
    before = x.clone()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(x, before)
    assert a.dtype == torch.uint8 and a.shape == x.shape and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# Pixels: albumentations' apply with the same parameters


@pytest.mark.parametrize("name", SUPPORTED_TYPES)
def test_each_transform_matches_albumentations(name):
    entry = dict(ENTRY[name], p=1.0)
    aug = PhotometricAugmenter.from_config([entry])
    batch = _images(12, 64, 192, seed=1)
    params = aug.sample(len(batch), 64, 192, torch.Generator().manual_seed(3))
    assert params[0].applied.all()
    out = _to_numpy(aug.apply(_to_torch(batch), params))
    worst = 0
    for i, img in enumerate(batch):
        ref = _albumentations_apply(name, entry, img, params[0].values, i)
        worst = max(worst, int(np.abs(out[i].astype(int) - ref.astype(int)).max()))
    assert worst <= TOL[name], f"{name}: max difference {worst} > {TOL[name]}"


def test_hsv_extreme_shifts_and_the_scalar_tail():
    """Shifts at and beyond the default limits; W = 200 leaves OpenCV's rounding scalar tail."""
    entry = {"type": "HueSaturationValue", "p": 1.0, "hue_shift_limit": 90, "sat_shift_limit": 120,
             "val_shift_limit": 120}
    aug = PhotometricAugmenter.from_config([entry])
    for width, tol in ((192, 0), (200, 1)):
        batch = _images(6, 16, width, seed=2)
        params = aug.sample(len(batch), 16, width, torch.Generator().manual_seed(5))
        out = _to_numpy(aug.apply(_to_torch(batch), params))
        for i, img in enumerate(batch):
            ref = _albumentations_apply("HueSaturationValue", entry, img, params[0].values, i)
            assert np.abs(out[i].astype(int) - ref.astype(int)).max() <= tol


def test_hsv_every_division_table_entry():
    """Every (max, max - min) pair of an RGB pixel, so every entry of OpenCV's two division
    tables, plus random colours, through small and large shifts; W = 256 has no scalar tail."""
    v, d = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    keep = d <= v
    pairs = np.stack([v[keep], v[keep] - d[keep], v[keep] - d[keep] // 2], -1)  # r = max, g = min
    rng = np.random.default_rng(14)
    colours = np.concatenate([pairs, pairs[:, [1, 0, 2]], pairs[:, [2, 1, 0]], rng.integers(0, 256, (2**16, 3))])
    colours = np.concatenate([colours, np.zeros((-len(colours) % 256, 3), colours.dtype)]).astype(np.uint8)
    img = colours.reshape(-1, 256, 3)
    entry = {"type": "HueSaturationValue", "p": 1.0}
    aug = PhotometricAugmenter.from_config([entry])
    for shifts in ((0.4, 0.3, 0.2), (-7.5, 18.2, -11.9), (179.0, -254.0, 254.0)):
        values = {k: torch.tensor([s], dtype=torch.float64) for k, s in zip(("hue_shift", "sat_shift", "val_shift"), shifts)}
        out = _to_numpy(aug.steps[0].apply(_to_torch(img[None]), values))[0]
        ref = _albumentations_apply("HueSaturationValue", entry, img, values, 0)
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= TOL["HueSaturationValue"], shifts


@pytest.mark.parametrize("allow_shifted, direction", [(False, (0.0, 0.0)), (True, (-1.0, 1.0))])
def test_motion_kernels_equal_albumentations(allow_shifted, direction):
    entry = {"type": "MotionBlur", "p": 1.0, "blur_limit": [3, 9], "allow_shifted": allow_shifted,
             "direction_range": list(direction)}
    aug = PhotometricAugmenter.from_config([entry])
    params = aug.sample(300, 32, 32, torch.Generator().manual_seed(11))[0].values
    mine = aug.steps[0].kernels(params).numpy()
    t = A.MotionBlur(p=1.0, blur_limit=(3, 9), allow_shifted=allow_shifted, direction_range=direction)
    for i in range(300):
        v = {k: val[i].item() for k, val in params.items()}
        ref = _albumentations_motion_kernel(t, v)
        ref = ref.astype(np.float32) / np.sum(ref)
        k, kmax = ref.shape[0], mine.shape[1]
        off = (kmax - k) // 2
        assert np.array_equal(mine[i, off:off + k, off:off + k], ref)
        assert mine[i].sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("config", ["default", "all"])
def test_sampled_pipeline_matches_albumentations(config):
    entries = [e for e in DEFAULT_ENTRIES if e["p"] > 0]
    if config == "all":  # every transform on every sample, in the list's order
        entries = [dict(e, p=1.0) for e in entries]
    aug = PhotometricAugmenter.from_config(entries)
    batch = _images(24, 64, 192, seed=4)
    params = aug.sample(len(batch), 64, 192, torch.Generator().manual_seed(13))
    out = _to_numpy(aug.apply(_to_torch(batch), params))
    worst = 0
    for i, img in enumerate(batch):
        ref = img
        for entry, draw in zip(entries, params):
            if draw.applied[i]:
                ref = _albumentations_apply(entry["type"], entry, ref, draw.values, i)
        worst = max(worst, int(np.abs(out[i].astype(int) - ref.astype(int)).max()))
    assert worst <= PIPELINE_TOL


def test_apply_checks_params_against_its_steps():
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    params = aug.sample(4, 8, 8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="batch size"):
        aug.apply(torch.zeros((3, 3, 8, 8), dtype=torch.uint8), params)
    with pytest.raises(ValueError, match="steps"):
        aug.apply(torch.zeros((4, 3, 8, 8), dtype=torch.uint8), params[:2])
    assert isinstance(params[0], StepParams)


# ---------------------------------------------------------------------------------------------
# Statistics: firing rates and parameter distributions


N_STAT = 2000


def _binomial_ok(count, n, p, z=4.5):
    return abs(count - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("name", SUPPORTED_TYPES)
def test_fraction_of_samples_touched_matches_p(name):
    entry = ENTRY[name]
    aug = PhotometricAugmenter.from_config([entry])
    # Values in [1, 255]: a dropout hole always changes its pixels (fill 0).
    x = _to_torch(_images(N_STAT, 16, 16, seed=6, low=1))
    gen = torch.Generator().manual_seed(21)
    state = gen.get_state()
    out = aug(x, gen)
    touched = (out != x).flatten(1).any(1)
    gen.set_state(state)
    applied = aug.sample(N_STAT, 16, 16, gen)[0].applied
    assert _binomial_ok(int(applied.sum()), N_STAT, entry["p"]), (name, int(applied.sum()))
    assert not touched[~applied].any()  # a sample that does not fire is left as it was
    assert touched[applied].float().mean() > 0.97  # and one that fires changes (noise images)


def _uniform_ok(values, lo, hi):
    values = values.double()
    n = values.numel()
    sd = (hi - lo) / np.sqrt(12 * n)
    return lo <= float(values.min()) and float(values.max()) <= hi and abs(float(values.mean()) - (lo + hi) / 2) < 4.5 * sd


def test_parameter_distributions_match_the_config():
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    h, w = 256, 192
    params = {p.name: p.values for p in aug.sample(N_STAT, h, w, torch.Generator().manual_seed(31))}
    hsv = params["HueSaturationValue"]
    assert _uniform_ok(hsv["hue_shift"], -10, 10)
    assert _uniform_ok(hsv["sat_shift"], -25, 25)
    assert _uniform_ok(hsv["val_shift"], -20, 20)
    assert _uniform_ok(params["RandomGamma"]["gamma"], 0.8, 1.2)

    gb = params["GaussianBlur"]
    assert _uniform_ok(gb["sigma"], 0.3, 1.5)
    # albumentations draws randint(3, 5) over all integers and bumps 4 to 5.
    assert set(gb["ksize"].tolist()) == {3, 5}
    assert _binomial_ok(int((gb["ksize"] == 3).sum()), N_STAT, 1 / 3)

    mb = params["MotionBlur"]
    assert set(mb["ksize"].tolist()) == {3, 5, 7}
    for k in (3, 5, 7):
        assert _binomial_ok(int((mb["ksize"] == k).sum()), N_STAT, 1 / 3)
    assert _uniform_ok(mb["angle"], 0, 360)  # angle_range is albumentations' default (0, 360)
    assert (mb["direction"] == 0).all() and (mb["shift_x"] == 0).all() and (mb["shift_y"] == 0).all()

    cd = params["CoarseDropout"]
    count = cd["num_holes"]
    assert set(count.tolist()) == {1, 2} and _binomial_ok(int((count == 1).sum()), N_STAT, 0.5)
    holes = cd["holes"]
    used = torch.arange(2).unsqueeze(0) < count.unsqueeze(1)
    x0, y0, x1, y1 = (holes[..., i][used] for i in range(4))
    hh, ww = y1 - y0, x1 - x0
    assert int(hh.min()) >= int(0.1 * h) and int(hh.max()) <= int(0.25 * h)
    assert int(ww.min()) >= int(0.1 * w) and int(ww.max()) <= int(0.25 * w)
    assert abs(float(hh.double().mean()) - 0.175 * h) < 1.0  # mean of int(h * U(0.1, 0.25))
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert _uniform_ok(y0.double() / (h - hh + 1).double(), 0, 1)  # top uniform over valid rows
    assert (holes[~used] == 0).all()


def test_random_module_untouched():
    """Parameters come from the torch generator only, not Python's or numpy's global state."""
    aug = PhotometricAugmenter.from_config(DEFAULT_ENTRIES)
    state, np_state = random.getstate(), np.random.get_state()
    aug(_to_torch(_images(4, 16, 16)), torch.Generator().manual_seed(0))
    assert random.getstate() == state
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    aug = PhotometricAugmenter.from_config([dict(e, p=0.7) for e in DEFAULT_ENTRIES if e["p"] > 0])
    x = _to_torch(_images(32, 64, 192, seed=9))
    cpu = aug(x, torch.Generator().manual_seed(1))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    assert int((gpu.cpu().int() - cpu.int()).abs().max()) <= 1


def test_cpu_chunking_does_not_change_the_result(monkeypatch):
    import kpfast.data.gpu_photometric as gp

    aug = PhotometricAugmenter.from_config([dict(e, p=0.8) for e in DEFAULT_ENTRIES if e["p"] > 0])
    x = _to_torch(_images(10, 32, 48, seed=12))
    whole = aug(x, torch.Generator().manual_seed(3))
    monkeypatch.setattr(gp, "_CPU_CHUNK_PIXELS", 3 * 32 * 48)  # 3 samples per call
    assert torch.equal(aug(x, torch.Generator().manual_seed(3)), whole)
