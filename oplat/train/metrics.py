"""Image-quality metrics as SR papers report them (numpy only).

PSNR and SSIM on the luma (Y) channel of BT.601 YCbCr — MATLAB's ``rgb2ycbcr``:
Y = 16 + (65.481·R + 128.553·G + 24.966·B) / 255 for 8-bit R, G, B, so Y ∈ [16, 235] —
after cropping ``border`` pixels (the scale, by convention) from every side, with a peak
of 255. SSIM is Wang et al.'s: an 11×11 Gaussian window (σ = 1.5), K1 = 0.01,
K2 = 0.03, statistics over the valid window positions only (``skimage.metrics.
structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255`` computes the same).

The network's output is compared as it would be saved: clipped to [0, 1] and rounded to
8 bits (:func:`to_uint8`), and Y is computed in floating point from those 8-bit values.
"""

from __future__ import annotations

import math

import numpy as np

from oplat.errors import OplatError

__all__ = ["Y_COEFFS", "crop_border", "gaussian_window", "psnr", "psnr_y", "rgb_to_y", "ssim", "ssim_y", "to_uint8"]

#: BT.601 luma coefficients for R, G, B in [0, 1] → Y in [16, 235] (MATLAB rgb2ycbcr).
Y_COEFFS = (65.481, 128.553, 24.966)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (any layout) as saved: clipped, ×255, rounded to uint8."""
    return np.clip(np.floor(np.asarray(img, np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 Y (float64, [16, 235]) of an H×W×3 RGB image: uint8, or float in [0, 1]."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise OplatError(f"rgb_to_y needs an H×W×3 image, got shape {a.shape}")
    f = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    return 16.0 + f @ np.array(Y_COEFFS, np.float64)


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    """``img`` without ``border`` pixels on each side (H and W are the first two axes)."""
    if border < 0:
        raise OplatError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise OplatError(f"image {img.shape[1]}×{img.shape[0]} is too small to crop a {border}-pixel border")
    return img[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shaped arrays (inf when equal)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise OplatError(f"PSNR of arrays of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is SSIM's window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    n = g.size
    h, w = a.shape
    rows = sum(g[k] * a[k : h - n + 1 + k] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def ssim(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """Mean SSIM of two same-shaped 2-D arrays (Wang et al. 2004; see the module text)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise OplatError(f"SSIM needs two 2-D arrays of one shape, got {a.shape} and {b.shape}")
    g = gaussian_window()
    if min(a.shape) < g.size:
        raise OplatError(f"SSIM needs images of at least {g.size}×{g.size} pixels, got {a.shape[1]}×{a.shape[0]}")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR on Y of two H×W×3 uint8 images, ``border`` pixels cropped."""
    return psnr(crop_border(rgb_to_y(sr), border), crop_border(rgb_to_y(hr), border))


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y of two H×W×3 uint8 images, ``border`` pixels cropped."""
    return ssim(crop_border(rgb_to_y(sr), border), crop_border(rgb_to_y(hr), border))
