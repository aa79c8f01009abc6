"""The exact metric definitions every benchmark uses (DESIGN.md, "How quality is measured").

Images are uint8 [H, W, 3] (converted by /255) or float [H, W, 3] on [0, 1]; [H, W] grayscale is
accepted too. All arithmetic is float64. Masks are boolean [H, W].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PSNR_CAP_DB = 100.0
"""revisit_scores caps per-pair PSNR here so an identical pair (inf dB) does not make the mean inf."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

_EPS = 1e-9  # float comparisons at exactly the threshold (e.g. 8/255) count as within it


def _as_float(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise ValueError(f"{name} must be uint8 (0..255) or float (0..1), got dtype {a.dtype}")


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = _as_float(a, "a"), _as_float(b, "b")
    if fa.shape != fb.shape:
        raise ValueError(f"images must have the same shape, got {fa.shape} and {fb.shape}")
    if fa.ndim not in (2, 3):
        raise ValueError(f"images must be [H, W, C] or [H, W], got shape {fa.shape}")
    return fa, fb


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape[:2]:
        raise ValueError(f"mask must be [H, W] = {shape[:2]}, got {m.shape}")
    return m


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB on the [0, 1] scale; MSE over (masked) pixels x channels.

    Identical -> inf; an empty mask -> nan.
    """
    fa, fb = _pair(a, b)
    m = _mask(mask, fa.shape)
    diff = fa - fb if m is None else (fa - fb)[m]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_kernel() -> np.ndarray:
    x = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    k = np.exp(-(x * x) / (2 * SSIM_SIGMA**2))
    return k / k.sum()


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D Gaussian filter over the first two axes, 'valid' region (no padding)."""
    n = k.size
    rows = np.lib.stride_tricks.sliding_window_view(x, n, axis=0) @ k
    return np.lib.stride_tricks.sliding_window_view(rows, n, axis=1) @ k


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1.

    Computed per channel on [0, 1] over the 'valid' region (no padding) and averaged over channels.
    Images must be at least 11x11. Identical -> 1.0.
    """
    fa, fb = _pair(a, b)
    if min(fa.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {fa.shape[:2]}")
    if fa.ndim == 2:
        fa, fb = fa[..., None], fb[..., None]
    k = _gaussian_kernel()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_a, mu_b = _filter_valid(fa, k), _filter_valid(fb, k)
    var_a = _filter_valid(fa * fa, k) - mu_a * mu_a
    var_b = _filter_valid(fb * fb, k) - mu_b * mu_b
    cov = _filter_valid(fa * fb, k) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    per_channel = (num / den).mean(axis=(0, 1))
    return float(per_channel.mean())


def contextual_accuracy(a: np.ndarray, b: np.ndarray, threshold: float = 8 / 255) -> float:
    """Fraction of pixels whose largest channel absolute difference is <= threshold.

    Two uint8 inputs are compared on integer levels (8/255 -> max |a - b| <= 8 levels); otherwise
    on [0, 1] with a 1e-9 tolerance so a difference of exactly the threshold counts as accurate.
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    fa, fb = _pair(a_arr, b_arr)
    if a_arr.dtype == np.uint8 and b_arr.dtype == np.uint8:
        diff = np.abs(a_arr.astype(np.int16) - b_arr.astype(np.int16)).astype(np.float64)
        limit = threshold * 255.0 + _EPS
    else:
        diff, limit = np.abs(fa - fb), threshold + _EPS
    worst = diff.max(axis=2) if diff.ndim == 3 else diff
    return float(np.mean(worst <= limit))


def context_loss(a: np.ndarray, b: np.ndarray, threshold: float = 8 / 255) -> float:
    """1 - contextual_accuracy."""
    return 1.0 - contextual_accuracy(a, b, threshold)


def context_loss_reduction(loss_mirage: float, loss_baseline: float) -> float:
    """1 - loss_mirage / loss_baseline (1: no context lost; < 0: worse than the baseline).

    Undefined when the baseline loses nothing (loss_baseline == 0): returns nan.
    """
    if loss_baseline == 0:
        return math.nan
    return 1.0 - float(loss_mirage) / float(loss_baseline)


def memory_persistence(accuracy_by_n: dict[int, float], threshold: float = 0.90) -> tuple[int | None, bool]:
    """Longest tested N whose contextual accuracy, and that of every smaller tested N, is >= threshold.

    Returns (N, never_dropped): N is None when the smallest tested N already fails; never_dropped is
    True when every tested N passes (report "> max tested N"). nan accuracy counts as failing.
    """
    if not accuracy_by_n:
        raise ValueError("memory_persistence needs accuracies for at least one N")
    best: int | None = None
    for n in sorted(accuracy_by_n):
        if not accuracy_by_n[n] >= threshold:
            return best, False
        best = n
    return best, True


def gradient_energy(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean over pixels and channels of gx^2 + gy^2 (forward differences on [0, 1]).

    Evaluated at pixels (i, j) with i < H-1, j < W-1; with a mask, only where (i, j), (i, j+1) and
    (i+1, j) are all in the mask, so no difference crosses the mask edge. Nothing to average -> nan.
    """
    f = _as_float(img, "img")
    if f.ndim == 2:
        f = f[..., None]
    gx = f[:-1, 1:] - f[:-1, :-1]
    gy = f[1:, :-1] - f[:-1, :-1]
    energy = gx * gx + gy * gy
    m = _mask(mask, f.shape)
    if m is not None:
        energy = energy[m[:-1, :-1] & m[:-1, 1:] & m[1:, :-1]]
    return math.nan if energy.size == 0 else float(energy.mean())


@dataclass
class RevisitScores:
    psnr: float
    ssim: float
    contextual_accuracy: float


def revisit_scores(outbound: list[np.ndarray], returned: list[np.ndarray]) -> RevisitScores:
    """Per-pair PSNR, SSIM and contextual accuracy, each averaged over the pairs.

    Per-pair PSNR is capped at PSNR_CAP_DB (100 dB) before averaging, so identical pairs count as
    100 dB instead of making the mean inf.
    """
    if len(outbound) != len(returned):
        raise ValueError(
            f"need as many returned frames as outbound ones, got {len(outbound)} and {len(returned)}"
        )
    if not outbound:
        raise ValueError("revisit_scores needs at least one (outbound, returned) pair")
    p = [min(psnr(o, r), PSNR_CAP_DB) for o, r in zip(outbound, returned, strict=True)]
    s = [ssim(o, r) for o, r in zip(outbound, returned, strict=True)]
    c = [contextual_accuracy(o, r) for o, r in zip(outbound, returned, strict=True)]
    return RevisitScores(
        psnr=float(np.mean(p)), ssim=float(np.mean(s)), contextual_accuracy=float(np.mean(c))
    )
