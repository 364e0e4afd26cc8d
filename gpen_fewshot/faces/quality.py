"""Measurements on aligned face crops used to vet training photos: sharpness and same-picture detection.

Both look only at the inner face (eyes, nose, mouth and a margin, located from the crop's template), so a
blurred background (portrait bokeh) or the reflected border of the crop does not count, and both work at a
fixed face scale (ANALYSIS_EYE_DISTANCE pixels between the eyes), so numbers are comparable across crop
sizes and templates.

Photo vetting measures on :func:`analysis_crop`: the face aligned from the ORIGINAL photo straight at that
scale, so its decisions do not depend on the crop size a model trains at (a 32-px training crop holds too
little detail to judge a photo by; upsampling it back to the analysis scale would call every photo blurred).
"""

from __future__ import annotations

import cv2
import numpy as np

from gpen_fewshot.faces.alignment import (
    TEMPLATE_BASE_SIZE,
    align_face,
    template_eye_distance,
    template_points,
)

# Face scale of the analysis: about the eye distance of a 256 px "gpen" crop (53.7 px).
ANALYSIS_EYE_DISTANCE = 50.0
# Inner-face region around the template's landmark box, in eye distances: left/right, above eyes, below mouth.
_MARGIN_SIDE, _MARGIN_TOP, _MARGIN_BOTTOM = 0.45, 0.55, 0.35
_ECC_ITERATIONS = 60
_BORDER = 8  # pixels ignored at the region's edge after registration (reflected border)
_SAME_SCALE = 0.01  # relative scale change below which face_region does not resample (it would only blur)


def analysis_size(template: str) -> int:
    """Crop side at which the template's eye distance is closest to ANALYSIS_EYE_DISTANCE (gpen 238, ffhq
    203)."""
    eye_at_base = template_eye_distance(template, TEMPLATE_BASE_SIZE)
    return round(ANALYSIS_EYE_DISTANCE * TEMPLATE_BASE_SIZE / eye_at_base)


def analysis_crop(image: np.ndarray, landmarks: np.ndarray, template: str) -> np.ndarray:
    """The face aligned from the original photo at the analysis scale (input of the photo checks).

    Args:
        image: uint8 (H, W, 3) RGB photo.
        landmarks: (5, 2) landmarks of the face in ``image`` pixel coords.
        template: alignment template.

    Returns:
        uint8 (A, A, 3) RGB crop, A = ``analysis_size(template)``.
    """
    return align_face(image, landmarks, analysis_size(template), template).crop


def face_region(crop: np.ndarray, template: str) -> np.ndarray:
    """The inner face of an aligned crop, resampled to the analysis scale.

    Args:
        crop: uint8 (S, S, 3) RGB aligned with ``template`` at size S.
        template: the template the crop was aligned with.

    Returns:
        float32 (h, w) gray image in [0, 255] with eye distance ANALYSIS_EYE_DISTANCE.
    """
    size = crop.shape[0]
    if crop.ndim != 3 or crop.shape[1] != size:
        raise ValueError(f"expected a square (S, S, 3) aligned crop, got {crop.shape}")
    points = template_points(template, size).astype(np.float64)
    eye = template_eye_distance(template, size)
    x0 = max(0, int(np.floor(points[:, 0].min() - _MARGIN_SIDE * eye)))
    x1 = min(size, int(np.ceil(points[:, 0].max() + _MARGIN_SIDE * eye)))
    y0 = max(0, int(np.floor(points[:2, 1].min() - _MARGIN_TOP * eye)))
    y1 = min(size, int(np.ceil(points[3:, 1].max() + _MARGIN_BOTTOM * eye)))
    gray = cv2.cvtColor(np.ascontiguousarray(crop[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    factor = ANALYSIS_EYE_DISTANCE / eye
    if abs(factor - 1.0) < _SAME_SCALE:  # an analysis_crop: already at the analysis scale
        return gray.astype(np.float32)
    new_size = (max(8, round(gray.shape[1] * factor)), max(8, round(gray.shape[0] * factor)))
    interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(gray, new_size, interpolation=interpolation).astype(np.float32)


def sharpness(crop: np.ndarray, template: str) -> float:
    """Variance of the Laplacian of the inner face at the analysis scale (higher = sharper).

    Args:
        crop: uint8 (S, S, 3) RGB aligned crop.
        template: the template the crop was aligned with.

    Returns:
        Variance of the 3x3 Laplacian response, in squared 8-bit gray levels.
    """
    region = face_region(crop, template)
    return float(cv2.Laplacian(region, cv2.CV_32F, ksize=1).var())


def same_picture_score(region_a: np.ndarray, region_b: np.ndarray) -> float:
    """How likely two inner-face regions are the same picture (re-encoded, resized, cropped), in [-1, 1].

    ``region_b`` is registered onto ``region_a`` with an affine ECC fit (absorbing the few-pixel landmark
    jitter between two detections), then the normalised correlation of their fine detail (a band-pass:
    Gaussian 0.8 px minus Gaussian 3 px) is returned. Measured: the same picture re-encoded at JPEG 50-75,
    resized 0.6-1.5x, shifted or letterboxed scores 0.965-0.999; different photos of the same person score
    0.2 (median) to 0.81 (99th percentile), consecutive frames of one photo shoot up to 0.956.

    Args:
        region_a: float32 (h, w) from :func:`face_region`.
        region_b: float32 (h', w') from :func:`face_region`.

    Returns:
        Correlation after registration; -1.0 when the registration does not converge.
    """
    height, width = min(region_a.shape[0], region_b.shape[0]), min(region_a.shape[1], region_b.shape[1])
    a, b = region_a[:height, :width], region_b[:height, :width]
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, 1e-5)
    try:
        _, warp = cv2.findTransformECC(_smooth(a, 1.5), _smooth(b, 1.5), warp, cv2.MOTION_AFFINE, criteria,
                                       None, 5)
    except cv2.error:  # no convergence: the faces are too different to register
        return -1.0
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    b = cv2.warpAffine(b, warp, (width, height), flags=flags, borderMode=cv2.BORDER_REFLECT)
    m = _BORDER
    da, db = _detail(a)[m:-m, m:-m], _detail(b)[m:-m, m:-m]
    da, db = da - da.mean(), db - db.mean()
    denominator = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum() / denominator) if denominator > 0 else -1.0


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def _detail(image: np.ndarray) -> np.ndarray:
    """Band-pass: keeps texture and edges, drops JPEG noise and lighting."""
    return _smooth(image, 0.8) - _smooth(image, 3.0)
