"""The first-order degradation of GPEN's released trainer (GFPGAN-style), our implementation.

Steps (numbers in :class:`FirstOrderConfig`, GPEN_REFERENCE.md section 4):
grayscale with probability 0.2 (**the ground truth too**: use :meth:`Degradation.pair`) -> blur with a mixed
isotropic/anisotropic Gaussian (kernel 41, sigmas U(0.1, 10), angle U(-180, 180) degrees) -> bilinear
downscale by U(0.8, 8) -> colour Gaussian noise sigma U(0, 20) / 255 -> JPEG quality U{60..100} -> rounding to
8-bit levels -> bilinear resize back to the input size (or to ``input / scale``).
The reference's horizontal flip is an augmentation here (:mod:`gpen_fewshot.data.augment`).
"""

from __future__ import annotations

import numpy as np

from gpen_fewshot.data.degradations.base import Degradation
from gpen_fewshot.data.degradations.config import FirstOrderConfig
from gpen_fewshot.data.degradations.primitives import (
    add_gaussian_noise,
    degrees_to_radians,
    filter_image,
    gaussian_kernel,
    jpeg_compress,
    resize,
    round_to_uint8_levels,
    to_grayscale,
    uniform,
)


class FirstOrderDegradation(Degradation):
    """Blur -> downscale -> noise -> JPEG -> resize back, with a grayscale switch shared by lq and gt."""

    def __init__(self, config: FirstOrderConfig | None = None) -> None:
        self.config = config or FirstOrderConfig()

    def degrade_pair(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(gt, lq)``; gt is ``img`` or (probability ``gray_prob``) its 3-channel grayscale version."""
        if rng.random() < self.config.gray_prob:
            img = to_grayscale(img)
        return img, self._degrade_colour(img, rng)

    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Low-quality image only (grayscale included); same random draws as :meth:`degrade_pair`."""
        return self.degrade_pair(img, rng)[1]

    def _degrade_colour(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        height, width = img.shape[:2]
        out = filter_image(img, self._blur_kernel(rng))
        factor = uniform(rng, cfg.downscale_range)
        out = resize(out, (int(height / factor), int(width / factor)), cfg.downscale_interpolation)
        sigma = uniform(rng, cfg.noise_range) / 255.0
        gray_noise = rng.random() < cfg.noise_gray_prob
        out = add_gaussian_noise(out, sigma, rng, gray=gray_noise)
        out = jpeg_compress(out, int(rng.integers(cfg.jpeg_range[0], cfg.jpeg_range[1] + 1)))
        out = round_to_uint8_levels(out)
        return resize(out, (height // self.scale, width // self.scale), cfg.upsample_interpolation)

    def _blur_kernel(self, rng: np.random.Generator) -> np.ndarray:
        """Isotropic (one sigma) or anisotropic (two sigmas, random angle) Gaussian, as in basicsr."""
        cfg = self.config
        if rng.random() < cfg.aniso_prob:
            sigma_x, sigma_y = uniform(rng, cfg.blur_sigma_range), uniform(rng, cfg.blur_sigma_range)
            theta = degrees_to_radians(uniform(rng, cfg.rotation_deg_range))
            return gaussian_kernel(cfg.kernel_size, sigma_x, sigma_y, theta)
        sigma = uniform(rng, cfg.blur_sigma_range)
        return gaussian_kernel(cfg.kernel_size, sigma, sigma, 0.0)
