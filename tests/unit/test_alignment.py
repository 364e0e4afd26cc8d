"""Five-point similarity alignment: exact least squares, sub-pixel crop accuracy, inverse transform."""

from __future__ import annotations

import numpy as np
import pytest

from gpen_fewshot.faces.alignment import (
    TEMPLATES,
    align_face,
    alignment_error,
    estimate_alignment,
    fit_similarity,
    template_eye_distance,
    template_points,
    transform_points,
)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    theta = np.deg2rad(angle_deg)
    c, s = scale * np.cos(theta), scale * np.sin(theta)
    return np.array([[c, -s, tx], [s, c, ty]])


def _dots_image(centres: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """uint8 RGB image with a bright Gaussian dot at each (sub-pixel) centre on black."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    img = np.zeros(shape, np.float64)
    for x, y in centres:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    gray = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _centroids(crop: np.ndarray, expected: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid of the dot found in a window around each expected position."""
    gray = crop[:, :, 0].astype(np.float64)
    out = []
    for x, y in expected:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        win = gray[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
        ys, xs = np.mgrid[0 : win.shape[0], 0 : win.shape[1]]
        out.append([x0 + (win * xs).sum() / win.sum(), y0 + (win * ys).sum() / win.sum()])
    return np.array(out)


def test_templates_match_reference_numbers_and_scale_linearly() -> None:
    np.testing.assert_allclose(template_points("gpen", 512)[0], [202.04, 242.88], atol=1e-4)
    np.testing.assert_allclose(template_points("ffhq", 512)[4], [313.09, 371.15], atol=1e-4)
    for name in TEMPLATES:
        np.testing.assert_allclose(template_points(name, 256), template_points(name, 512) / 2, atol=1e-4)
        np.testing.assert_allclose(template_points(name, 1024), template_points(name, 512) * 2, atol=1e-3)
    assert template_eye_distance("gpen", 512) == pytest.approx(107.39, abs=0.01)


def test_fit_similarity_recovers_known_transform_exactly() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(5, 2))
    true = _similarity(0.37, -23.0, 41.5, -7.25)
    est = fit_similarity(src, transform_points(src, true))
    np.testing.assert_allclose(est, true, atol=1e-10)


def test_fit_similarity_is_least_squares_under_noise() -> None:
    """The closed form must beat any perturbed similarity on the same noisy points."""
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, size=(5, 2))
    dst = transform_points(src, _similarity(1.3, 10.0, 5.0, 9.0)) + rng.normal(0, 2.0, size=(5, 2))
    best = fit_similarity(src, dst)
    best_cost = np.sum((transform_points(src, best) - dst) ** 2)
    a, b = best[0, 0], best[1, 0]
    for da, db, dt in rng.normal(0, 1e-3, size=(50, 3)):
        other = np.array([[a + da, -(b + db), best[0, 2] + dt], [b + db, a + da, best[1, 2] - dt]])
        assert np.sum((transform_points(src, other) - dst) ** 2) > best_cost


@pytest.mark.parametrize(
    ("template", "size", "scale", "angle"),
    [("gpen", 256, 1.0, 12.0), ("ffhq", 256, 0.9, -30.0), ("gpen", 128, 1 / 3.2, 7.0)],
)
def test_dots_land_on_template_within_a_tenth_of_a_pixel(
    template: str, size: int, scale: float, angle: float
) -> None:
    """Dots drawn at known source landmarks end up at the template points of the crop (< 0.1 px).

    The last case shrinks the source 3.2x, which goes through the INTER_AREA anti-aliasing path.
    """
    to_crop = _similarity(scale, angle, 17.3, -11.6)
    target = template_points(template, size).astype(np.float64)
    src_pts = transform_points(target, np.linalg.inv(np.vstack([to_crop, [0, 0, 1]]))[:2])
    shift = 40 / scale - src_pts.min(axis=0)  # keep every dot well inside the source image
    src_pts += shift
    to_crop[:, 2] -= to_crop[:, :2] @ shift
    shape = (int(src_pts[:, 1].max() + 60 / scale), int(src_pts[:, 0].max() + 60 / scale))
    image = _dots_image(src_pts, shape, sigma=2.0 / scale)
    aligned = align_face(image, src_pts, size, template)
    np.testing.assert_allclose(aligned.affine, to_crop, atol=1e-9)
    found = _centroids(aligned.crop, target, radius=8)
    assert np.abs(found - target).max() < 0.1, found - target


def test_inverse_affine_maps_template_back_to_landmarks() -> None:
    landmarks = np.array([[100.0, 120.0], [160.0, 118.0], [131.0, 150.0], [108.0, 185.0], [152.0, 184.0]])
    aligned = align_face(np.zeros((300, 300, 3), np.uint8), landmarks, 512, "gpen")
    back = transform_points(template_points("gpen", 512), aligned.inverse_affine)
    # Real landmarks are not an exact similarity of the template: compare against the fit, not the input.
    fitted_back = transform_points(transform_points(landmarks, aligned.affine), aligned.inverse_affine)
    np.testing.assert_allclose(fitted_back, landmarks, atol=1e-9)
    assert np.abs(back - landmarks).max() < 6.0
    assert alignment_error(landmarks, aligned.affine, 512) < 6.0 * aligned.scale
    assert aligned.crop.shape == (512, 512, 3) and aligned.crop.dtype == np.uint8


def test_border_modes() -> None:
    """A face at the photo's corner: constant leaves black, reflect mirrors the texture, fade (default)
    keeps the photo's pixels and turns the outside into a smooth fade to the median colour."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(200, 200, 3), dtype=np.uint8)
    landmarks = transform_points(template_points("gpen", 256), _similarity(0.5, 0.0, -60.0, -60.0))
    constant = align_face(image, landmarks, 256, border="constant")
    reflect = align_face(image, landmarks, 256, border="reflect").crop
    fade = align_face(image, landmarks, 256).crop
    assert constant.crop[:110, :110].max() == 0
    assert reflect[:100, :100].std() > 40  # mirrored noise
    # Crop pixels from the photo (source x, y >= 0 <=> crop x, y >= 120) are untouched.
    np.testing.assert_array_equal(fade[122:, 122:], reflect[122:, 122:])
    far = fade[:60, :60].astype(float)
    assert far.std() < 3 and np.abs(far.mean(axis=(0, 1)) - np.median(image.reshape(-1, 3), axis=0)).max() < 6


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown face template"):
        template_points("arcface", 256)
    with pytest.raises(ValueError, match="5 landmarks"):
        estimate_alignment(np.zeros((4, 2)), 256)
    with pytest.raises(ValueError, match="degenerate"):
        estimate_alignment(np.ones((5, 2)), 256)
    with pytest.raises(ValueError, match="border"):
        align_face(np.zeros((10, 10, 3), np.uint8), np.random.default_rng(0).random((5, 2)), 64,
                   border="wrap")
