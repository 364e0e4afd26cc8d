"""Paste-back: feathered mask, unchanged pixels outside it, colour-consistent seams, overlaps, upscaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gpen_fewshot.faces.alignment import estimate_alignment, template_points
from gpen_fewshot.faces.paste import FacePaste, PasteConfig, face_mask, paste_faces

SIZE = 128


def _face_at(center: tuple[float, float], eye_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(affine, inverse affine) of a synthetic face whose landmarks are the template moved to ``center``."""
    points = template_points("gpen", SIZE).astype(np.float64)
    scale = eye_distance / np.linalg.norm(points[1] - points[0])
    landmarks = (points - points.mean(0)) * scale + np.asarray(center)
    affine = estimate_alignment(landmarks, SIZE, "gpen")
    return affine, cv2.invertAffineTransform(affine)


def _support(inverse: np.ndarray, shape: tuple[int, int], config: PasteConfig,
             scale: float = 1.0) -> np.ndarray:
    """Where the warped mask is > 0 in the image, dilated by 2 px (interpolation reach)."""
    warped = cv2.warpAffine(np.ascontiguousarray(face_mask(SIZE, config)), inverse * scale,
                            (shape[1], shape[0]), flags=cv2.INTER_LINEAR)
    return cv2.dilate((warped > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def test_mask_is_zero_on_border_one_in_centre_and_feathered():
    mask = face_mask(SIZE)
    assert mask.dtype == np.float32 and mask.shape == (SIZE, SIZE)
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    assert mask[SIZE // 2, SIZE // 2] == pytest.approx(1.0, abs=1e-4)
    # No hard step: the largest change between neighbouring pixels is a small fraction of the 0..1 range.
    steps = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
    assert steps < 0.15  # a Gaussian edge with sigma 0.035 * 128 px has a max slope of 0.09 per px
    # and the transition is wide: more than 10% of the crop side between 0.05 and 0.95 on the centre row
    row = mask[SIZE // 2, : SIZE // 2]
    assert np.argmax(row > 0.95) - np.argmax(row > 0.05) > 0.1 * SIZE


def test_mask_scales_with_crop_size():
    small, large = face_mask(64), face_mask(256)
    resized = cv2.resize(large, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(resized - small).max() < 0.05


def test_pixels_outside_the_mask_are_unchanged_and_face_is_pasted():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    affine, inverse = _face_at((200, 150), 40)
    restored = np.full((SIZE, SIZE, 3), 255, np.uint8)
    config = PasteConfig(color_match=False)
    out = paste_faces(image, [FacePaste(restored, inverse, None)], config)
    support = _support(inverse, image.shape[:2], config)
    assert support.mean() < 0.5  # the test is meaningful: most of the image is outside
    np.testing.assert_array_equal(out[~support], image[~support])
    centre = out[140:160, 190:210].astype(int)
    assert centre.min() >= 250  # mask is 1 at the face centre: the restored (white) crop is there


def test_pasting_the_input_crop_back_is_nearly_lossless():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    affine, inverse = _face_at((160, 120), 50)
    crop = cv2.warpAffine(image, affine, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    out = paste_faces(image, [FacePaste(crop, inverse, crop)])
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 6  # two resamplings of a smooth image


def test_seam_has_no_step_even_when_the_restored_colour_differs():
    image = np.full((256, 256, 3), 100, np.uint8)
    affine, inverse = _face_at((128, 128), 60)
    source = cv2.warpAffine(image, affine, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101)
    brighter = np.clip(source.astype(int) + 60, 0, 255).astype(np.uint8)
    for color_match in (False, True):
        out = paste_faces(image, [FacePaste(brighter, inverse, source)], PasteConfig(color_match=color_match))
        diff = out[:, :, 0].astype(float) - 100.0
        assert diff[128, 128] > 55  # the face centre keeps the restored colour
        jump = max(np.abs(np.diff(diff, axis=0)).max(), np.abs(np.diff(diff, axis=1)).max())
        assert jump <= 6, f"colour_match={color_match}: step of {jump} levels between neighbours"
    # a hard (unfeathered) paste would have jumped by 60 levels
    hard = np.zeros((256, 256))
    hard[60:196, 60:196] = 60
    assert np.abs(np.diff(hard, axis=0)).max() == 60


def test_colour_matching_pulls_the_feather_band_towards_the_input():
    image = np.full((256, 256, 3), 100, np.uint8)
    affine, inverse = _face_at((128, 128), 60)
    source = cv2.warpAffine(image, affine, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101)
    brighter = np.clip(source.astype(int) + 60, 0, 255).astype(np.uint8)
    plain = paste_faces(image, [FacePaste(brighter, inverse, source)], PasteConfig(color_match=False))
    matched = paste_faces(image, [FacePaste(brighter, inverse, source)], PasteConfig(color_match=True))
    band = (plain[:, :, 0] > 100) & (plain[:, :, 0] < 150)  # partially blended pixels
    assert band.sum() > 100
    assert matched[band, 0].astype(float).mean() < plain[band, 0].astype(float).mean() - 5


def test_overlapping_faces_composite_in_order():
    image = np.zeros((200, 300, 3), np.uint8)
    _, inv_a = _face_at((140, 100), 60)
    _, inv_b = _face_at((170, 100), 30)  # smaller face overlapping the first one's crop
    red = np.zeros((SIZE, SIZE, 3), np.uint8)
    red[..., 0] = 255
    green = np.zeros((SIZE, SIZE, 3), np.uint8)
    green[..., 1] = 255
    out = paste_faces(image, [FacePaste(red, inv_a), FacePaste(green, inv_b)], PasteConfig(color_match=False))
    assert tuple(out[100, 170]) == (0, 255, 0)  # the later (smaller) face is on top at its centre
    assert out[100, 80, 0] == 255 and out[100, 80, 1] == 0  # the big face elsewhere


def test_scale_two_pastes_into_the_upscaled_image():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    background = cv2.resize(image, (300, 200), interpolation=cv2.INTER_LANCZOS4)
    _, inverse = _face_at((75, 50), 20)
    restored = np.full((SIZE, SIZE, 3), 255, np.uint8)
    config = PasteConfig(color_match=False)
    out = paste_faces(background, [FacePaste(restored, inverse)], config, scale=2.0)
    assert out.shape == (200, 300, 3)
    support = _support(inverse, out.shape[:2], config, scale=2.0)
    np.testing.assert_array_equal(out[~support], background[~support])
    assert out[95:105, 145:155].min() >= 250  # face centre at (150, 100) in the upscaled image


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        paste_faces(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(ValueError):
        PasteConfig(feather=0.0)
    with pytest.raises(ValueError):
        face_mask(4)
