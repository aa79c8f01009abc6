"""runtime.metrics: known answers for the benchmark metric definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime import metrics as M
from runtime.metrics import (
    PSNR_CAP_DB,
    RevisitScores,
    context_loss,
    context_loss_reduction,
    contextual_accuracy,
    gradient_energy,
    memory_persistence,
    psnr,
    revisit_scores,
    ssim,
)


def _img(seed: int = 0, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.5 + 0.4 * np.sin(x / 6), 0.5 + 0.4 * np.cos(y / 5), (x + y) / (h + w)], axis=-1)
    return np.clip(img, 0, 1)


# --- psnr -------------------------------------------------------------------------------------


def test_psnr_constant_offset_of_0_1_is_20_db():
    a = np.full((16, 16, 3), 0.5)
    assert psnr(a, a - 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(a - 0.1, a) == pytest.approx(20.0, abs=1e-9)


def test_psnr_uint8_uses_0_1_scale():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a + np.uint8(51)  # 51/255 = 0.2 -> 10*log10(1/0.04) = 13.979 dB
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-9)
    assert psnr(a, b) == pytest.approx(psnr(a / 255.0, b / 255.0), abs=1e-12)


def test_psnr_identical_is_inf_and_empty_mask_is_nan():
    a = _img()
    assert psnr(a, a) == math.inf
    assert math.isnan(psnr(a, _img(1), mask=np.zeros(a.shape[:2], bool)))


def test_psnr_mask_selects_pixels():
    a = np.zeros((10, 10, 3))
    b = a.copy()
    b[:5] = 0.1  # top half differs by 0.1
    b[5:] = 1.0  # bottom half differs by 1.0
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert psnr(a, b, mask) == pytest.approx(20.0, abs=1e-9)
    assert psnr(a, b, ~mask) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="mask"):
        psnr(a, b, np.ones((10, 9), bool))


def test_shape_and_dtype_validation():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="same shape"):
        contextual_accuracy(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        ssim(np.zeros((20, 20, 3)), np.zeros((21, 20, 3)))
    with pytest.raises(ValueError, match="uint8"):
        psnr(np.zeros((4, 4, 3), np.int32), np.zeros((4, 4, 3), np.int32))


# --- ssim -------------------------------------------------------------------------------------


def test_ssim_identical_is_one():
    a = _img()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(_smooth(), _smooth()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_shifted_and_noised_below_one_and_symmetric():
    a = _smooth()
    shifted = np.roll(a, 3, axis=1)
    noised = np.clip(a + np.random.default_rng(2).normal(0, 0.05, a.shape), 0, 1)
    for b in (shifted, noised):
        s = ssim(a, b)
        assert 0 < s < 1
        assert ssim(b, a) == pytest.approx(s, abs=1e-12)
    more_noise = np.clip(a + np.random.default_rng(2).normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, more_noise) < ssim(a, noised)


def test_ssim_uint8_equals_float():
    a, b = _img(3), _img(4)
    assert ssim(a, b) == pytest.approx(ssim(a / 255.0, b / 255.0), abs=1e-12)


def test_ssim_constant_images_closed_form():
    # Constant images: every window has mu = value, variance 0 -> luminance term only.
    a, b = np.full((16, 16, 3), 0.2), np.full((16, 16, 3), 0.6)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_ssim_kernel_and_valid_region():
    k = M._gaussian_kernel()
    assert k.shape == (11,) and k.sum() == pytest.approx(1.0) and k[5] == k.max()
    assert M._filter_valid(np.zeros((20, 30, 3)), k).shape == (10, 20, 3)
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))


def test_ssim_per_channel_average():
    a, b = _smooth(), np.clip(_smooth() + 0.05, 0, 1)
    per = [ssim(a[..., c], b[..., c]) for c in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per), abs=1e-12)


def test_ssim_matches_a_scipy_reference():
    ndimage = pytest.importorskip("scipy.ndimage")
    a = _smooth()
    b = np.clip(a + np.random.default_rng(5).normal(0, 0.1, a.shape), 0, 1)

    # sigma 1.5, truncate 3.5 -> radius int(3.5*1.5+0.5) = 5, 11 taps; crop the padded border -> 'valid'
    def filt(x):
        return ndimage.gaussian_filter(x, 1.5, truncate=3.5, mode="reflect")[5:-5, 5:-5]

    vals = []
    for c in range(3):
        x, y = a[..., c], b[..., c]
        mx, my = filt(x), filt(y)
        vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        vals.append(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    assert ssim(a, b) == pytest.approx(np.mean(vals), abs=1e-10)


# --- contextual accuracy ----------------------------------------------------------------------


def test_contextual_accuracy_threshold_is_inclusive_at_8_levels():
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    b[..., 1] += 8
    assert contextual_accuracy(a, b) == 1.0
    assert contextual_accuracy(b, a) == 1.0
    b[..., 1] += 1  # 9 levels
    assert contextual_accuracy(a, b) == 0.0
    # the same on the float scale
    assert contextual_accuracy(a / 255.0, (a + np.uint8(8)) / 255.0) == 1.0
    assert contextual_accuracy(a / 255.0, (a + np.uint8(9)) / 255.0) == 0.0


def test_contextual_accuracy_uses_largest_channel_and_counts_pixels():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[:5, :, 2] = 200  # only the blue channel is off, on half the pixels
    assert contextual_accuracy(a, b) == 0.5
    assert context_loss(a, b) == 0.5
    b[5, 0, 0] = 9
    assert contextual_accuracy(a, b) == pytest.approx(0.49)
    assert context_loss(a, a) == 0.0


def test_contextual_accuracy_no_uint8_wraparound_and_custom_threshold():
    a = np.full((2, 2, 3), 250, np.uint8)
    b = np.full((2, 2, 3), 5, np.uint8)
    assert contextual_accuracy(a, b) == 0.0
    assert contextual_accuracy(a, b, threshold=1.0) == 1.0
    assert contextual_accuracy(a, a + np.uint8(0), threshold=0.0) == 1.0


# --- context loss reduction and memory persistence --------------------------------------------


def test_context_loss_reduction_numbers():
    assert context_loss_reduction(0.1, 0.4) == pytest.approx(0.75)
    assert context_loss_reduction(0.0, 0.4) == 1.0
    assert context_loss_reduction(0.4, 0.4) == 0.0
    assert context_loss_reduction(0.6, 0.3) == pytest.approx(-1.0)  # worse than the baseline
    assert math.isnan(context_loss_reduction(0.1, 0.0))  # undefined
    assert math.isnan(context_loss_reduction(0.0, 0.0))


def test_memory_persistence_cases():
    assert memory_persistence({16: 0.99, 32: 0.95, 64: 0.91}) == (64, True)
    assert memory_persistence({64: 0.5, 16: 0.99, 32: 0.95}) == (32, False)  # unordered input
    assert memory_persistence({16: 0.8, 32: 0.95}) == (None, False)
    # a later recovery does not count: every smaller N must pass
    assert memory_persistence({16: 0.95, 32: 0.85, 64: 0.97}) == (16, False)
    assert memory_persistence({16: 0.90}) == (16, True)  # inclusive threshold
    assert memory_persistence({16: 0.95, 32: 0.85}, threshold=0.8) == (32, True)
    assert memory_persistence({16: 0.95, 32: float("nan")}) == (16, False)
    with pytest.raises(ValueError):
        memory_persistence({})


# --- gradient energy --------------------------------------------------------------------------


def test_gradient_energy_known_answers():
    assert gradient_energy(np.full((8, 8, 3), 0.3)) == 0.0
    ramp = np.tile(np.arange(10, dtype=np.float64) * 0.1, (6, 1))  # gx = 0.1, gy = 0
    assert gradient_energy(ramp) == pytest.approx(0.01)
    rgb = np.repeat(ramp[..., None], 3, axis=2)
    assert gradient_energy(rgb) == pytest.approx(0.01)
    a = _img()
    blurred = ((a[:-1, :-1].astype(np.uint16) + a[1:, 1:] + a[:-1, 1:] + a[1:, :-1]) // 4).astype(np.uint8)
    assert gradient_energy(blurred) < gradient_energy(a)


def test_gradient_energy_mask_does_not_cross_the_edge():
    img = np.zeros((6, 6))
    img[:, 3:] = 1.0  # a step between columns 2 and 3
    left = np.zeros((6, 6), bool)
    left[:, :3] = True
    assert gradient_energy(img, left) == 0.0
    assert gradient_energy(img) > 0
    assert math.isnan(gradient_energy(img, np.zeros((6, 6), bool)))


# --- revisit scores ---------------------------------------------------------------------------


def test_revisit_scores_means_and_psnr_cap():
    a = np.full((16, 16, 3), 0.5)
    b = a - 0.1
    s = revisit_scores([a, a], [a, b])
    assert isinstance(s, RevisitScores)
    assert s.psnr == pytest.approx((PSNR_CAP_DB + 20.0) / 2)  # identical pair counts as 100 dB
    assert s.ssim == pytest.approx((1.0 + ssim(a, b)) / 2)
    assert s.contextual_accuracy == pytest.approx(0.5)
    one = revisit_scores([_img(1)], [_img(1)])
    assert one == RevisitScores(psnr=100.0, ssim=pytest.approx(1.0), contextual_accuracy=1.0)


def test_revisit_scores_validation():
    with pytest.raises(ValueError, match="as many"):
        revisit_scores([_img()], [])
    with pytest.raises(ValueError, match="at least one"):
        revisit_scores([], [])
