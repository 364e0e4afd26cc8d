"""BSRGAN's practical degradation model (Zhang et al., ICCV 2021, arXiv 2103.14006), our implementation.

The model, for a degradation scale factor ``sf``:

1. with probability ``half_downscale_prob`` (published: 0.25, only for sf 4; here for any even sf >= 4) the
   image is first halved with a random interpolation and the rest of the chain runs with ``sf / 2``;
2. six steps in random order: two blurs, a random resize, the resize to ``1/sf`` of the input, Gaussian noise
   and JPEG. The random resize is always moved before the ``1/sf`` resize (the paper swaps them when needed),
   so the final resolution is set by the latter; the other steps may land on either side of it.
   - blur: 50% anisotropic Gaussian with covariance eigenvalues U(0, 4 + sf) and a random angle, 50% isotropic
     with sigma U(0, 2 + 0.2 sf); odd kernel size 7-25;
   - random resize: 75% resize by 1 / U(1, 2 sf) (bilinear / bicubic / area), 25% blur with a Gaussian shifted
     by (sf - 1) / 2 pixels (sigma U(0.1, 0.6 sf), kernel 25) followed by nearest subsampling by sf;
   - noise (sigma U(2, 25) / 255): 40% grayscale, 40% per-channel, 20% channel-correlated (random covariance);
   - JPEG with quality U{30..95}, applied with probability 0.9;
3. a final JPEG, always.

Output size: with ``scale == sf`` the result is the ``1/sf`` image (SR pairs); with ``scale == 1``
(restoration pairs, the GPEN setting) it is resized back to the input size with a random bilinear/bicubic
interpolation; any other ``scale`` resizes to ``input / scale`` the same way.

Deviations from the released code: the noise level is drawn as a real number, not an integer; the correlated
noise uses the sampled level (the released code uses the range's maximum) and a positive-semi-definite
covariance (it takes ``abs`` of the entries); the optional camera-ISP noise step is left out (it needs the
authors' ISP model, and is off by default in their code too).
"""

from __future__ import annotations

import numpy as np

from gpen_fewshot.data.degradations.base import Degradation
from gpen_fewshot.data.degradations.config import BSRGANConfig
from gpen_fewshot.data.degradations.primitives import (
    add_correlated_noise,
    add_gaussian_noise,
    choose,
    filter_image,
    gaussian_kernel,
    jpeg_compress,
    random_odd,
    resize,
    uniform,
)

_BLUR_1, _BLUR_2, _RANDOM_RESIZE, _FINAL_RESIZE, _NOISE, _JPEG = range(6)


class BSRGANDegradation(Degradation):
    """Random BSRGAN degradation: the model is in the module docstring, its numbers in BSRGANConfig."""

    def __init__(self, config: BSRGANConfig | None = None) -> None:
        self.config = config or BSRGANConfig()

    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """float32 RGB (H, W, 3) [0, 1] -> float32 RGB [0, 1] of the output size (module docstring)."""
        cfg = self.config
        height, width = img.shape[:2]
        lr_size = (max(1, round(height / cfg.sf)), max(1, round(width / cfg.sf)))
        sf = cfg.sf
        out = img
        if sf >= 4 and sf % 2 == 0 and rng.random() < cfg.half_downscale_prob:
            out = resize(out, (height // 2, width // 2), choose(rng, cfg.downsample_interpolations))
            sf //= 2
        for step in self._step_order(rng):
            out = self._apply_step(step, out, sf, lr_size, rng)
        if cfg.final_jpeg:
            out = jpeg_compress(out, self._jpeg_quality(rng))
        return self._to_output_size(out, (height, width), rng)

    def _step_order(self, rng: np.random.Generator) -> list[int]:
        order = [int(s) for s in rng.permutation(6)] if self.config.shuffle else list(range(6))
        first, last = order.index(_RANDOM_RESIZE), order.index(_FINAL_RESIZE)
        if first > last:  # the paper's swap: the 1/sf resize must come after the random one
            order[first], order[last] = order[last], order[first]
        return order

    def _apply_step(
        self, step: int, img: np.ndarray, sf: int, lr_size: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        cfg = self.config
        if step in (_BLUR_1, _BLUR_2):
            return filter_image(img, self._blur_kernel(sf, rng))
        if step == _RANDOM_RESIZE:
            return self._random_resize(img, sf, rng)
        if step == _FINAL_RESIZE:
            return resize(img, lr_size, choose(rng, cfg.downsample_interpolations))
        if step == _NOISE:
            return self._noise(img, rng)
        if rng.random() < cfg.jpeg_prob:
            return jpeg_compress(img, self._jpeg_quality(rng))
        return img

    def _blur_kernel(self, sf: int, rng: np.random.Generator) -> np.ndarray:
        """Gaussian kernel: anisotropic (eigenvalues U(0, 4 + sf)) or isotropic (sigma U(0, 2 + 0.2 sf))."""
        cfg = self.config
        if rng.random() < cfg.aniso_prob:
            eigen_max = cfg.aniso_eigen_base + cfg.aniso_eigen_per_sf * sf
            var_1, var_2 = eigen_max * rng.random(), eigen_max * rng.random()
            theta = np.pi * rng.random()
            size = random_odd(rng, cfg.blur_kernel_size_range)
            return gaussian_kernel(size, np.sqrt(var_1), np.sqrt(var_2), theta)
        size = random_odd(rng, cfg.blur_kernel_size_range)
        sigma = (cfg.iso_sigma_base + cfg.iso_sigma_per_sf * sf) * rng.random()
        return gaussian_kernel(size, sigma, sigma, 0.0)

    def _random_resize(self, img: np.ndarray, sf: int, rng: np.random.Generator) -> np.ndarray:
        """Resize by 1 / U(1, 2 sf), or shifted-Gaussian blur + nearest subsampling by sf."""
        cfg = self.config
        height, width = img.shape[:2]
        if rng.random() < cfg.random_resize_prob:
            factor = uniform(rng, (1.0, max(1.0, cfg.random_resize_max_factor * sf)))
            return resize(
                img, (int(height / factor), int(width / factor)), choose(rng, cfg.downsample_interpolations)
            )
        sigma_max = max(cfg.shifted_blur_sigma_min, cfg.shifted_blur_sigma_per_sf * sf)
        sigma = uniform(rng, (cfg.shifted_blur_sigma_min, sigma_max))
        # peak moved by (sf - 1) / 2 so that sample (0, 0) represents the centre of its sf x sf block
        shift = (sf - 1) / 2.0
        kernel = gaussian_kernel(cfg.shifted_blur_kernel_size, sigma, sigma, 0.0, center=(shift, shift))
        return np.ascontiguousarray(filter_image(img, kernel)[::sf, ::sf])

    def _noise(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        if rng.random() >= cfg.noise_prob:
            return img
        sigma = uniform(rng, cfg.noise_level_range) / 255.0
        kind = rng.random()
        if kind < cfg.noise_gray_prob:
            return add_gaussian_noise(img, sigma, rng, gray=True)
        if kind < cfg.noise_gray_prob + cfg.noise_color_prob:
            return add_gaussian_noise(img, sigma, rng, gray=False)
        return add_correlated_noise(img, sigma, rng)

    def _jpeg_quality(self, rng: np.random.Generator) -> int:
        low, high = self.config.jpeg_quality_range
        return int(rng.integers(low, high + 1))

    def _to_output_size(
        self, img: np.ndarray, input_size: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        target = (input_size[0] // self.scale, input_size[1] // self.scale)
        if img.shape[:2] == target:
            return img
        upscaling = target[0] * target[1] > img.shape[0] * img.shape[1]
        options = self.config.upsample_interpolations if upscaling else self.config.downsample_interpolations
        return resize(img, target, choose(rng, options))
