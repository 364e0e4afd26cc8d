"""Degradation building blocks: blur kernels, filtering, resizing, noise, JPEG, grayscale.

All images are float32 RGB (H, W, 3) in [0, 1]. Every random function takes an explicit
``np.random.Generator``. basicsr's samplers (``random_mixed_kernels``, ``random_add_gaussian_noise``, ...)
draw from the global ``np.random`` state, and importing ``basicsr.data.degradations`` imports all of basicsr
(archs, models, losses: 1.5-7 s per process here), so the kernel formula is re-implemented;
:func:`gaussian_kernel` equals ``basicsr.data.degradations.bivariate_Gaussian`` (checked by a unit test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from gpen_fewshot.utils.image import bgr_to_rgb, rgb_to_bgr, to_float, to_uint8

_CV2_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
# A Gaussian with sigma 0 is a Dirac; a tiny positive sigma gives the same kernel without dividing by zero.
_MIN_SIGMA = 1e-3
# ITU-R BT.601 luma weights, the ones OpenCV's RGB2GRAY uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def check_image(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate a float RGB (H, W, 3) image and return it as contiguous float32.

    Raises:
        ValueError: wrong shape or an integer dtype (uint8 images must go through ``io.to_float`` first).
    """
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"{what} must be an (H, W, 3) RGB array, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{what} must be float in [0, 1] (use io.to_float for uint8), got dtype {img.dtype}")
    return np.ascontiguousarray(img, dtype=np.float32)


def choose(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One element of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize float32 (H, W, 3) to ``size_hw`` = (height, width), named interpolation, clipped to [0, 1]."""
    height, width = max(1, int(size_hw[0])), max(1, int(size_hw[1]))
    if (height, width) == img.shape[:2]:
        return img
    out = cv2.resize(img, (width, height), interpolation=_CV2_INTERPOLATION[interpolation])
    return np.clip(out, 0.0, 1.0, out=out)


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, center: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Normalised anisotropic Gaussian kernel.

    Args:
        size: odd kernel size.
        sigma_x, sigma_y: standard deviations along the principal axes (pixels).
        theta: rotation of the first axis, radians.
        center: (x, y) offset of the peak from the kernel centre, pixels (for shifted kernels).

    Returns:
        float32 (size, size), summing to 1, for use with :func:`filter_image` (a correlation).
    """
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    grid_x, grid_y = np.meshgrid(axis - center[0], axis - center[1])
    sig_x, sig_y = max(float(sigma_x), _MIN_SIGMA), max(float(sigma_y), _MIN_SIGMA)
    # covariance R diag(sx^2, sy^2) R^T; the quadratic form uses its inverse R diag(1/sx^2, 1/sy^2) R^T
    cos, sin = math.cos(theta), math.sin(theta)
    along = cos * grid_x + sin * grid_y  # coordinate along the first principal axis
    across = -sin * grid_x + cos * grid_y
    kernel = np.exp(-0.5 * ((along / sig_x) ** 2 + (across / sig_y) ** 2))
    total = kernel.sum()
    if total <= 0.0:  # every tap underflowed (tiny sigma, off-grid peak): keep the nearest tap
        kernel = np.zeros((size, size))
        kernel.flat[np.argmin(grid_x**2 + grid_y**2)] = 1.0
        total = 1.0
    return (kernel / total).astype(np.float32)


def filter_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with ``kernel`` (mirror borders, like scipy's ``mode='mirror'``)."""
    height, width = img.shape[:2]
    k_h, k_w = kernel.shape
    # reflect-101 borders cannot be wider than the image: crop big kernels around their centre, renormalise.
    max_h, max_w = 2 * height - 1, 2 * width - 1
    if k_h > max_h or k_w > max_w:
        top, left = max(0, (k_h - max_h) // 2), max(0, (k_w - max_w) // 2)
        kernel = kernel[top : k_h - top, left : k_w - left]
        kernel = kernel / max(float(kernel.sum()), 1e-12)
    out = cv2.filter2D(img, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return np.clip(out, 0.0, 1.0, out=out)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator, gray: bool) -> np.ndarray:
    """Add white Gaussian noise of std ``sigma`` ([0, 1] scale); ``gray``: same noise on all channels."""
    shape = (*img.shape[:2], 1) if gray else img.shape
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img + noise, 0.0, 1.0)


def add_correlated_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise with channel covariance ``sigma^2 U^T D U`` (random rotation U, D ~ U(0,1)^3)."""
    eigen = rng.random(3)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    # noise = z @ (sqrt(D) U) has covariance U^T D U: positive semi-definite by construction
    mixing = (np.sqrt(eigen)[:, None] * rotation).astype(np.float32) * np.float32(sigma)
    noise = rng.standard_normal((img.shape[0] * img.shape[1], 3), dtype=np.float32) @ mixing
    return np.clip(img + noise.reshape(img.shape), 0.0, 1.0)


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through OpenCV's JPEG codec at ``quality`` (1-100); returns float32 RGB [0, 1]."""
    ok, buf = cv2.imencode(".jpg", rgb_to_bgr(to_uint8(img)), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    return to_float(bgr_to_rgb(cv2.imdecode(buf, cv2.IMREAD_COLOR)))


def round_to_uint8_levels(img: np.ndarray) -> np.ndarray:
    """Quantise to the 256 levels of an 8-bit image (kept as float32 [0, 1])."""
    return to_float(to_uint8(img))


def to_grayscale(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601) replicated on three channels: float32 (H, W, 3)."""
    gray = img @ _LUMA
    return np.repeat(gray[:, :, None], 3, axis=2)


def uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """U(bounds[0], bounds[1]) as a Python float."""
    return float(rng.uniform(bounds[0], bounds[1]))


def random_odd(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    """A uniformly chosen odd integer in [bounds[0], bounds[1]] (both odd)."""
    low, high = int(bounds[0]), int(bounds[1])
    return low + 2 * int(rng.integers(0, (high - low) // 2 + 1))


def degrees_to_radians(value: float) -> float:
    """Degrees -> radians."""
    return value * math.pi / 180.0
