"""Five-point similarity alignment of faces to the GPEN / FFHQ crop templates.

Coordinates are OpenCV pixel-index coordinates (the centre of the top-left pixel is (0, 0)), the same
convention ``cv2.warpAffine`` uses, so a landmark mapped with ``affine`` lands exactly where its pixel is
sampled in the crop.

Templates (GPEN_REFERENCE.md section 5) are defined at 512 px and scaled linearly to other sizes
(``points * size / 512``), which is what the released GPEN inference does for its 256 model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TEMPLATE_BASE_SIZE = 512

# Order: left eye, right eye, nose tip, left mouth corner, right mouth corner ("left" = image left).
TEMPLATES: dict[str, np.ndarray] = {
    # ArcFace 96x112 template padded by 0.25, as used by released GPEN inference (face_enhancement.py).
    "gpen": np.array(
        [[202.04, 242.88], [309.43, 242.29], [256.08, 303.96], [211.96, 366.83], [300.89, 366.34]],
        dtype=np.float64,
    ),
    # FFHQ / GFPGAN template: the face fills more of the crop.
    "ffhq": np.array(
        [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
        dtype=np.float64,
    ),
}

# The warp itself may shrink by at most this factor; stronger shrinking goes through INTER_AREA first.
MAX_WARP_SHRINK = 1.25

BORDER_MODES = {"fade": cv2.BORDER_REFLECT_101, "reflect": cv2.BORDER_REFLECT_101,
                "constant": cv2.BORDER_CONSTANT}
# "fade": FFHQ-style treatment of the part of the crop outside the photo (reflected, then blurred and faded to
# the median colour of the real pixels over FADE_WIDTH x crop size), so no mirrored face copies at the edge.
FADE_WIDTH = 0.25
FADE_BLUR = 0.02  # Gaussian sigma, as a fraction of the crop size


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned face crop and the transforms between it and its source image.

    Attributes:
        crop: uint8 (size, size, 3) RGB aligned face.
        affine: float64 (2, 3) mapping source-image pixel coords to crop coords.
        inverse_affine: float64 (2, 3) mapping crop coords back to the source image (for paste-back).
    """

    crop: np.ndarray
    affine: np.ndarray
    inverse_affine: np.ndarray

    @property
    def scale(self) -> float:
        """How much the source was magnified into the crop (> 1: upsampled, < 1: downsampled)."""
        return float(np.hypot(self.affine[0, 0], self.affine[1, 0]))


def _check_template(template: str) -> np.ndarray:
    if template not in TEMPLATES:
        raise ValueError(f"unknown face template {template!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def template_points(template: str, size: int) -> np.ndarray:
    """The template's five landmarks for a ``size`` x ``size`` crop.

    Args:
        template: "gpen" or "ffhq".
        size: crop side in pixels (e.g. 256, 512, 1024).

    Returns:
        float32 (5, 2) x, y pixel coordinates.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return (_check_template(template) * (size / TEMPLATE_BASE_SIZE)).astype(np.float32)


def template_eye_distance(template: str, size: int) -> float:
    """Distance in pixels between the template's two eye points at crop size ``size``."""
    pts = template_points(template, size).astype(np.float64)
    return float(np.linalg.norm(pts[1] - pts[0]))


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (scale, rotation, translation; no reflection) taking src to dst.

    Closed-form solution of min sum ||s R src_i + t - dst_i||^2 (Umeyama 1991, specialised to 2-D, where
    s R = [[a, -b], [b, a]]).

    Args:
        src: (N, 2) points, N >= 2, not all equal.
        dst: (N, 2) points.

    Returns:
        float64 (2, 3) affine matrix [[a, -b, tx], [b, a, ty]].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    xs, ys = (src - src_mean).T
    xd, yd = (dst - dst_mean).T
    norm = float(np.sum(xs * xs + ys * ys))
    if norm <= 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide)")
    a = float(np.sum(xs * xd + ys * yd)) / norm
    b = float(np.sum(xs * yd - ys * xd)) / norm
    linear = np.array([[a, -b], [b, a]])
    translation = dst_mean - linear @ src_mean
    return np.hstack([linear, translation[:, None]])


def estimate_alignment(landmarks: np.ndarray, size: int, template: str = "gpen") -> np.ndarray:
    """Similarity transform taking a face's five landmarks onto the template at crop size ``size``.

    Args:
        landmarks: (5, 2) float, source-image pixel coords (left eye, right eye, nose, left/right mouth).
        size: crop side in pixels.
        template: "gpen" (default, matches released GPEN models) or "ffhq".

    Returns:
        float64 (2, 3) affine matrix, source coords -> crop coords.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if landmarks.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks, got array of shape {landmarks.shape}")
    return fit_similarity(landmarks, template_points(template, size).astype(np.float64))


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points; returns float64 (N, 2)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ np.asarray(affine, dtype=np.float64)[:, :2].T + np.asarray(affine)[:, 2]


def alignment_error(landmarks: np.ndarray, affine: np.ndarray, size: int, template: str = "gpen") -> float:
    """RMS distance in crop pixels between the mapped landmarks and the template (pose/landmark misfit)."""
    mapped = transform_points(landmarks, affine)
    target = template_points(template, size).astype(np.float64)
    return float(np.sqrt(np.mean(np.sum((mapped - target) ** 2, axis=1))))


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    template: str = "gpen",
    border: str = "fade",
) -> AlignedFace:
    """Warp a face to the template with a similarity transform.

    Where the crop reaches outside the photo, the default "fade" reflects the photo and then blurs the
    reflection and fades it to the median colour of the real pixels, as FFHQ (the data GPEN's prior was
    trained on) was built. A constant (black) border would put a hard artificial edge into the crop that blur
    and JPEG degradations smear towards the face and the discriminator learns as "real"; a plain reflection
    puts a mirrored copy of the face at the crop's edge. The paste-back mask never reaches the crop's border,
    so none of these pixels is ever pasted into the photo.

    Args:
        image: uint8 (H, W, 3) RGB source image.
        landmarks: (5, 2) float landmarks in ``image`` pixel coords.
        size: crop side in pixels.
        template: "gpen" or "ffhq".
        border: "fade" (default), "reflect" or "constant" (black).

    Returns:
        AlignedFace with the uint8 (size, size, 3) RGB crop and both transforms.
    """
    if border not in BORDER_MODES:
        raise ValueError(f"unknown border mode {border!r}; choose one of {sorted(BORDER_MODES)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    affine = estimate_alignment(landmarks, size, template)
    source, pre_scale = _antialias_source(image, affine)
    # The crop samples the shrunk source: crop <- original <- shrunk, i.e. affine o pre_scale^-1.
    warp = affine if pre_scale is None else _compose(affine, cv2.invertAffineTransform(pre_scale))
    crop = cv2.warpAffine(
        source, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=BORDER_MODES[border], borderValue=0
    )
    inverse = cv2.invertAffineTransform(affine)
    if border == "fade":
        crop = _fade_outside(crop, _inside_mask(inverse, image.shape[:2], size))
    return AlignedFace(crop=crop, affine=affine, inverse_affine=inverse)


def _inside_mask(inverse_affine: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """bool (size, size): crop pixels whose source position lies inside the photo."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    a = inverse_affine.astype(np.float32)
    src_x = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    src_y = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    height, width = shape
    return (src_x >= -0.5) & (src_x <= width - 0.5) & (src_y >= -0.5) & (src_y <= height - 0.5)


def _fade_outside(crop: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Blur, then fade to the median real colour, the crop pixels outside the photo (by distance from it)."""
    if inside.all() or not inside.any():
        return crop
    size = crop.shape[0]
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.clip(distance / (FADE_WIDTH * size), 0.0, 1.0)[:, :, None]
    out = crop.astype(np.float32)
    blurred = cv2.GaussianBlur(out, (0, 0), FADE_BLUR * size)
    median = np.median(crop[inside], axis=0).astype(np.float32)
    out += (blurred - out) * np.clip(3.0 * fade, 0.0, 1.0)
    out += (median - out) * fade
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine equal to applying ``inner`` then ``outer``."""
    linear = outer[:, :2] @ inner[:, :2]
    translation = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return np.hstack([linear, translation[:, None]])


def _antialias_source(image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink the source with area averaging when the crop samples it sparser than ~1/MAX_WARP_SHRINK.

    Bilinear ``warpAffine`` does not low-pass, so a face shrunk 3x into the crop would alias (jagged
    hair, moire on fabric) and teach the model aliasing as ground truth. The image is first resized with
    INTER_AREA so that the remaining warp shrinks by at most MAX_WARP_SHRINK.

    Returns:
        (source image to warp, (2, 3) map from original to source coords or None when not resized).
    """
    scale = float(np.hypot(affine[0, 0], affine[1, 0]))
    if scale >= 1.0 / MAX_WARP_SHRINK:
        return image, None
    height, width = image.shape[:2]
    factor = scale * MAX_WARP_SHRINK
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / width, new_h / height
    # Pixel-centre convention of cv2.resize: x_small = (x + 0.5) * fx - 0.5.
    pre_scale = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
    return small, pre_scale
