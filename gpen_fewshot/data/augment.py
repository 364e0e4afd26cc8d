"""Face-safe augmentations of aligned crops, applied to the clean image before it is degraded.

Aligned face crops put the eyes and mouth at fixed template positions that GPEN relies on, so only changes
that keep that geometry roughly intact are used: a horizontal flip (the template is left-right symmetric), a
small zoom of 0.9-1.1 about a slightly jittered centre (output size kept, borders reflected), and
brightness/contrast jitter. No rotation. Because the degradation runs after this, lq and gt stay
pixel-aligned.

Optionally the clean crop's level of detail is also changed, because a prior learns from its targets what a
clean face looks like and "restores" faces that look otherwise: it is *softened* (resized down by a random
factor and back up, like a small face upscaled) or *sharpened* (unsharp mask, like the crisp, sharpened press
photos of CelebA: a prior trained only on soft chips blurred such faces as if their detail were noise, losing
5-9 dB against the input on the worst of them). The changed crop is both the target and the input of the
degradation, so the pair teaches "this detail is content, keep it".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters; the defaults are the project's face-safe ranges.

    Attributes:
        hflip_prob: probability of a horizontal flip.
        scale_range: zoom factor ~ U(min, max); > 1 zooms in, < 1 out; (1, 1) disables it.
        max_shift: centre jitter as a fraction of the side, at most the slack the zoom leaves.
        brightness: additive brightness shift ~ U(-b, b) on [0, 1] images.
        contrast: contrast factor ~ U(1 - c, 1 + c) around the image mean.
        soften_prob: probability that the crop is softened (0 = never).
        soften_range: softening factor ~ U(min, max): the crop is resized to side / factor (area) and back
            (bicubic).
        sharpen_prob: probability that the crop is sharpened instead (0 = never; soften_prob + sharpen_prob
            <= 1). Three extra draws only when either is > 0, so the random stream of configs without them
            is unchanged.
        sharpen_amount: unsharp-mask amount ~ U(min, max): img + amount * (img - gaussian_blur(img)).
        sharpen_sigma: sigma of that Gaussian in pixels ~ U(min, max).
    """

    hflip_prob: float = 0.5
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.02
    brightness: float = 0.1
    contrast: float = 0.1
    soften_prob: float = 0.0
    soften_range: tuple[float, float] = (1.0, 2.5)
    sharpen_prob: float = 0.0
    sharpen_amount: tuple[float, float] = (0.3, 1.2)
    sharpen_sigma: tuple[float, float] = (0.8, 1.6)

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {self.scale_range}")
        if not (0.0 <= self.soften_prob and 0.0 <= self.sharpen_prob and
                self.soften_prob + self.sharpen_prob <= 1):
            raise ValueError("soften_prob and sharpen_prob must be >= 0 with a sum <= 1, got "
                             f"{self.soften_prob} and {self.sharpen_prob}")
        for name in ("sharpen_amount", "sharpen_sigma"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {getattr(self, name)}")
        if not 1.0 <= self.soften_range[0] <= self.soften_range[1]:
            raise ValueError(f"soften_range must be (min, max) with 1 <= min <= max, got {self.soften_range}")
        for name in ("max_shift", "brightness", "contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


NO_AUGMENT = AugmentConfig(
    hflip_prob=0.0, scale_range=(1.0, 1.0), max_shift=0.0, brightness=0.0, contrast=0.0
)


def augment_face(img: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Randomly flip, zoom and colour-jitter an aligned face crop, then soften or sharpen it if configured.

    Args:
        img: float32 RGB (H, W, 3) in [0, 1].
        rng: source of randomness (a fixed number of draws per call, whatever is enabled).
        config: augmentation parameters.

    Returns:
        float32 RGB (H, W, 3) in [0, 1], same size as ``img``.
    """
    flip, zoom, shift_x, shift_y, brightness, contrast = _draw(rng, config)
    detail = _draw_detail(rng, config)
    out = img[:, ::-1] if flip else img
    if zoom != 1.0 or shift_x != 0.0 or shift_y != 0.0:
        out = _zoom(out, zoom, shift_x, shift_y)
    if brightness != 0.0 or contrast != 1.0:
        mean = float(out.mean())
        out = (out - mean) * np.float32(contrast) + np.float32(mean + brightness)
    if detail is not None:
        out = detail(out)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def _draw(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[bool, float, float, float, float, float]:
    """All random numbers of one call, drawn in a fixed order so the stream does not depend on the config."""
    u = rng.random(6)
    flip = bool(u[0] < cfg.hflip_prob)
    zoom = cfg.scale_range[0] + (cfg.scale_range[1] - cfg.scale_range[0]) * float(u[1])
    slack = min(cfg.max_shift, abs(zoom - 1.0) / 2.0)  # never shift further than the zoom allows
    shift_x, shift_y = slack * (2.0 * float(u[2]) - 1.0), slack * (2.0 * float(u[3]) - 1.0)
    brightness = cfg.brightness * (2.0 * float(u[4]) - 1.0)
    contrast = 1.0 + cfg.contrast * (2.0 * float(u[5]) - 1.0)
    return flip, zoom, shift_x, shift_y, brightness, contrast


def _draw_detail(rng: np.random.Generator, cfg: AugmentConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    """The detail change of one call (soften, sharpen or None); draws nothing when both are off."""
    if cfg.soften_prob <= 0.0 and cfg.sharpen_prob <= 0.0:
        return None
    u = rng.random(3)
    if u[0] < cfg.soften_prob:
        factor = cfg.soften_range[0] + (cfg.soften_range[1] - cfg.soften_range[0]) * float(u[1])
        return (lambda img: _soften(img, factor)) if factor > 1.0 else None
    if u[0] < cfg.soften_prob + cfg.sharpen_prob:
        amount = cfg.sharpen_amount[0] + (cfg.sharpen_amount[1] - cfg.sharpen_amount[0]) * float(u[1])
        sigma = cfg.sharpen_sigma[0] + (cfg.sharpen_sigma[1] - cfg.sharpen_sigma[0]) * float(u[2])
        return lambda img: _sharpen(img, amount, sigma)
    return None


def _sharpen(img: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Unsharp mask of (H, W, 3) in [0, 1]: img + amount * (img - blur), clipped to [0, 1] by the caller."""
    blurred = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return img + np.float32(amount) * (img - blurred)


def _soften(img: np.ndarray, factor: float) -> np.ndarray:
    """Resize (H, W, 3) down to side / factor (area average) and back up (bicubic): an upscaled small face."""
    height, width = img.shape[:2]
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    down = cv2.resize(np.ascontiguousarray(img), small, interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (width, height), interpolation=cv2.INTER_CUBIC)


def _zoom(img: np.ndarray, zoom: float, shift_x: float, shift_y: float) -> np.ndarray:
    """Scale about the (shifted) centre, keeping the size; reflected borders fill a zoom-out."""
    height, width = img.shape[:2]
    center_x = (width - 1) / 2.0 + shift_x * width
    center_y = (height - 1) / 2.0 + shift_y * height
    # maps output pixel p to input pixel center + (p - out_center) / zoom (warpAffine gets the forward map)
    matrix = np.array(
        [[zoom, 0.0, (width - 1) / 2.0 - zoom * center_x], [0.0, zoom, (height - 1) / 2.0 - zoom * center_y]],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        np.ascontiguousarray(img),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
