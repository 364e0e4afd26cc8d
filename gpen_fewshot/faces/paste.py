"""Paste restored face crops back into the photo: feathered mask, colour-consistent seam, inverse warp.

Mask: a rectangle inset from the crop border, Gaussian-blurred, then shifted/rescaled so it is exactly 0 on
the crop border (the aligned crop's border holds reflected padding that must never reach the photo) and
exactly 1 in the face centre. Every size is a fraction of the crop side, so a 256 and a 512 model paste the
same way. The reference GPEN mask (26 px inset at 512, sigma ~4 px) leaves a 10-20 px transition; ours is
about 6x wider, which hides tone differences that a narrow seam shows as a visible rectangle (GPEN #75, #108).

Seam colour: a restored face rarely has exactly the input's low-frequency colour (exposure, white balance).
Outside a face core (a second, smaller feathered rectangle over eyes, nose and mouth) we replace the restored
crop's low-pass (a Gaussian with sigma ``color_sigma``) by the input crop's, keeping its high frequencies.
Everything the feathered paste blends then has the input's tone, so the blend mixes detail, never two
different tones, and a colour cast of the model fades out across the face instead of tinting a rounded
rectangle of background. A Laplacian-pyramid blend would do a similar job with more code and a band limit
tied to the pyramid depth; the single low-pass split is enough because both masks are smooth at the
low-pass scale.

Overlapping faces: sequential alpha compositing in the order given (callers pass the largest face first, so
smaller faces, whose crops are mostly inside a bigger face's periphery, end up on top of it).

Pixels where every mask is exactly 0 are returned unchanged (bit for bit) when no upscaling is involved.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PasteConfig:
    """Paste-back parameters, as fractions of the aligned crop's side length.

    Attributes:
        inset: distance of the (pre-blur) rectangle edge from the crop border.
        feather: Gaussian sigma of the mask edge; the transition is about 4 sigma wide.
        color_match: give the restored crop the input's low-frequency colour outside the face core.
        color_sigma: Gaussian sigma of the low-pass used for colour matching.
        color_core_inset: inset of the face core (same feather) that keeps the restored colour; at 0.22 the
            core's fully-restored part spans the eyes, nose and mouth of both templates.
    """

    inset: float = 0.11
    feather: float = 0.035
    color_match: bool = True
    color_sigma: float = 0.05
    color_core_inset: float = 0.22

    def __post_init__(self) -> None:
        if not 0.0 <= self.inset < 0.4:
            raise ValueError(f"inset must be in [0, 0.4), got {self.inset}")
        if not 0.0 < self.feather < 0.2:
            raise ValueError(f"feather must be in (0, 0.2), got {self.feather}")
        if not 0.0 < self.color_sigma < 0.5:
            raise ValueError(f"color_sigma must be in (0, 0.5), got {self.color_sigma}")
        if not self.inset <= self.color_core_inset < 0.4:
            raise ValueError(f"color_core_inset must be in [inset, 0.4), got {self.color_core_inset}")


@dataclass(frozen=True, eq=False)
class FacePaste:
    """One face to paste.

    Attributes:
        restored: uint8 (S, S, 3) RGB restored crop.
        inverse_affine: float (2, 3) map from crop pixel coords to source-image pixel coords.
        source_crop: uint8 (S, S, 3) RGB aligned input crop (the one that was restored), used for colour
            matching; ``None`` disables colour matching for this face.
    """

    restored: np.ndarray
    inverse_affine: np.ndarray
    source_crop: np.ndarray | None = None


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a kernel wide enough (+-3 sigma) to reach the tails; float32 in, float32 out."""
    ksize = 2 * int(np.ceil(3.0 * sigma)) + 1
    return cv2.GaussianBlur(image, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=16)
def _cached_mask(size: int, inset: float, feather: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    margin = int(round(inset * size))
    mask[margin : size - margin, margin : size - margin] = 1.0
    mask = _blur(mask, max(feather * size, 0.5))
    # Shift so the crop border is exactly 0 (no trace of the crop's edge), rescale so the centre is 1.
    border = max(mask[0].max(), mask[-1].max(), mask[:, 0].max(), mask[:, -1].max())
    mask = np.clip((mask - border) / max(mask.max() - border, 1e-6), 0.0, 1.0)
    mask.setflags(write=False)
    return mask


def face_mask(size: int, config: PasteConfig = PasteConfig()) -> np.ndarray:
    """Soft paste mask for an aligned crop.

    Args:
        size: crop side in pixels.
        config: paste parameters.

    Returns:
        float32 (size, size) read-only array in [0, 1]: 0 on the crop border, 1 in the centre, smooth between.
    """
    if size < 8:
        raise ValueError(f"crop size must be >= 8, got {size}")
    return _cached_mask(int(size), float(config.inset), float(config.feather))


def match_low_frequency(
    restored: np.ndarray, source: np.ndarray, core: np.ndarray, sigma: float
) -> np.ndarray:
    """Give the restored crop the source crop's low-frequency colour outside the face core.

    ``out = restored + (1 - core) * lowpass(source - restored)``: the face core keeps the restored colour,
    the rest of the crop (hair, background: everything the feathered paste blends) gets the input's tone and
    keeps the restored detail. A colour cast of the model then fades out on the face instead of spilling a
    tinted rectangle over the background.

    Args:
        restored: float32 (S, S, 3) restored crop, any range.
        source: float32 (S, S, 3) input crop, same range.
        core: float32 (S, S) face-core mask in [0, 1].
        sigma: low-pass sigma in pixels.

    Returns:
        float32 (S, S, 3) corrected restored crop.
    """
    weight = (1.0 - core)[:, :, None]
    return restored + weight * _lowpass(source - restored, sigma)


def _lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass computed at reduced resolution (the result has no detail finer than sigma anyway).

    A direct blur with sigma ~25 px costs ~60 ms per 512 crop; shrinking by ~sigma/4 first is ~50x cheaper.
    """
    factor = max(1, int(sigma / 4.0))
    if factor == 1:
        return _blur(image, sigma)
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)),
                       interpolation=cv2.INTER_AREA)
    small = _blur(small, sigma / factor)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _roi(inverse_affine: np.ndarray, size: int, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in the image of the warped crop, clipped; None if outside."""
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    mapped = corners @ inverse_affine[:, :2].T + inverse_affine[:, 2]
    x0 = max(int(np.floor(mapped[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(mapped[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 3, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 3, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_faces(
    image: np.ndarray,
    faces: Sequence[FacePaste],
    config: PasteConfig = PasteConfig(),
    scale: float = 1.0,
) -> np.ndarray:
    """Composite restored crops into an image.

    Args:
        image: uint8 (H, W, 3) RGB background at output resolution (the original photo, or the photo
            already upscaled by ``scale``).
        faces: crops to paste; later ones are composited over earlier ones.
        config: mask and colour-matching parameters.
        scale: factor between the coordinates of ``inverse_affine`` (source photo) and ``image``.

    Returns:
        uint8 (H, W, 3) RGB; pixels outside every mask are unchanged.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    out = image.astype(np.float32)
    height, width = image.shape[:2]
    for face in faces:
        _composite(out, face, config, scale, height, width)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _composite(out: np.ndarray, face: FacePaste, config: PasteConfig, scale: float, height: int,
               width: int) -> None:
    """Alpha-composite one face into ``out`` (float32 HWC, modified in place)."""
    size = face.restored.shape[0]
    if face.restored.shape != (size, size, 3):
        raise ValueError(f"restored crop must be (S, S, 3), got {face.restored.shape}")
    mask = face_mask(size, config)
    crop = face.restored.astype(np.float32)
    if config.color_match and face.source_crop is not None:
        core = _cached_mask(size, float(config.color_core_inset), float(config.feather))
        crop = match_low_frequency(crop, face.source_crop.astype(np.float32), core, config.color_sigma * size)
    affine = np.asarray(face.inverse_affine, np.float64) * scale
    box = _roi(affine, size, height, width)
    if box is None:
        return
    x0, y0, x1, y1 = box
    affine[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    # Cubic for the face (sharper when the crop is magnified into an upscaled photo), linear for the mask.
    warped = cv2.warpAffine(crop, affine, dsize, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask), affine, dsize, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha = np.clip(alpha, 0.0, 1.0)[:, :, None]
    region = out[y0:y1, x0:x1]
    # Where alpha == 0 this is region * 1 + 0, i.e. the same float (unchanged pixel, bit for bit).
    region *= 1.0 - alpha
    region += alpha * warped
