"""The degradation interface shared by every model, and the identity ("none") degradation."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from gpen_fewshot.data.degradations.config import DegradationConfig, NoDegradation
from gpen_fewshot.data.degradations.primitives import check_image, resize


class Degradation(ABC):
    """A random image degradation ``(clean, rng) -> low-quality``.

    Call it as ``lq = degradation(img, rng)`` or, to build a training pair, ``gt, lq = degradation.pair(img,
    rng)`` (``pair`` also returns the ground truth because some models change it: the first-order pipeline
    turns 20% of its pairs grayscale, ground truth included; with ``scale`` > 1 the ground truth is cropped to
    a multiple of the scale so that the pair stays pixel-aligned).
    """

    config: DegradationConfig

    @property
    def scale(self) -> int:
        """Downscaling factor of the output: 1 = same size as the input."""
        return self.config.scale

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade one image.

        Args:
            img: float32 RGB (H, W, 3) in [0, 1].
            rng: the only source of randomness; the same generator state gives the same output.

        Returns:
            float32 RGB in [0, 1], (H, W, 3) if ``scale`` is 1, else (H // scale, W // scale, 3).
        """
        return self.degrade(check_image(img), rng)

    def pair(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth and degraded image of one clean image.

        Args:
            img: float32 RGB (H, W, 3) in [0, 1].
            rng: random generator.

        Returns:
            ``(gt, lq)``: gt float32 (H', W', 3) with H', W' the input size cropped (top-left) to a multiple
            of ``scale``; lq float32 (H' / scale, W' / scale, 3). Both RGB in [0, 1].
        """
        img = check_image(img)
        height, width = img.shape[:2]
        crop_h, crop_w = height - height % self.scale, width - width % self.scale
        if crop_h == 0 or crop_w == 0:
            raise ValueError(f"image of size {height}x{width} is smaller than the scale {self.scale}")
        gt = np.ascontiguousarray(img[:crop_h, :crop_w])
        return self.degrade_pair(gt, rng)

    def degrade_pair(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(gt, lq)`` of an image whose size is a multiple of ``scale``; overridden when gt changes too."""
        return img, self.degrade(img, rng)

    @abstractmethod
    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The model itself, on a validated float32 (H, W, 3) image."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class IdentityDegradation(Degradation):
    """The clean image itself (downscaled with a fixed interpolation when ``scale`` > 1); no randomness."""

    def __init__(self, config: NoDegradation | None = None) -> None:
        self.config = config or NoDegradation()

    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """See :meth:`Degradation.__call__`."""
        height, width = img.shape[:2]
        if self.scale == 1:
            return img.copy()
        return resize(img, (height // self.scale, width // self.scale), self.config.interpolation)
