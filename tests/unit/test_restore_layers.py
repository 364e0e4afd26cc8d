"""Restore keeps what it does not restore: the alpha channel and 16-bit depth of the input (issue 15, item
4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gpen_fewshot.restore import FaceModel, RestoreOptions, Restorer
from gpen_fewshot.utils.image import read_image_layers, write_image_layers


def _brighten(amount: float):
    return lambda x: (x + amount).clamp(-1, 1)


def _restorer(model) -> Restorer:
    return Restorer(FaceModel(model, 64), options=RestoreOptions(aligned=True, guard_threshold=None),
                    device="cpu")


@pytest.fixture
def face16(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 64x64 16-bit BGR PNG with values that are not multiples of 257 (8 bits would lose them)."""
    rng = np.random.default_rng(0)
    bgr16 = rng.integers(0, 65536, (64, 64, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), bgr16)
    return path, bgr16


def test_16_bit_in_16_bit_out_and_untouched_pixels_keep_their_values(face16, tmp_path: Path) -> None:
    path, bgr16 = face16
    _restorer(lambda x: x).restore_file(path, tmp_path / "same.png")
    out = cv2.imread(str(tmp_path / "same.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and np.array_equal(out, bgr16)  # an identity restoration changes nothing
    _restorer(_brighten(0.2)).restore_file(path, tmp_path / "bright.png")
    bright = cv2.imread(str(tmp_path / "bright.png"), cv2.IMREAD_UNCHANGED)
    assert bright.dtype == np.uint16 and bright.astype(np.int64).mean() > bgr16.astype(np.int64).mean() + 5000


def test_alpha_channel_is_put_back(tmp_path: Path) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))  # transparent to opaque
    cv2.imwrite(str(tmp_path / "cut.png"), rgba)
    restorer = _restorer(_brighten(0.2))
    restorer.restore_file(tmp_path / "cut.png", tmp_path / "out.png")
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (64, 64, 4) and np.array_equal(out[..., 3], rgba[..., 3])
    assert out[..., :3].mean() > 140  # the colour channels were restored (brightened), not whitened


def test_formats_without_alpha_or_depth_say_what_was_dropped(face16, tmp_path: Path) -> None:
    path, _ = face16
    layers = read_image_layers(path)
    notes = write_image_layers(tmp_path / "flat.jpg", layers.rgb, layers)
    assert len(notes) == 1 and "8-bit" in notes[0]
    rgba = np.dstack([np.full((8, 8, 3), 10, np.uint8), np.zeros((8, 8), np.uint8)])
    cv2.imwrite(str(tmp_path / "clear.png"), rgba)
    layers = read_image_layers(tmp_path / "clear.png")
    notes = write_image_layers(tmp_path / "clear.jpg", layers.rgb, layers)
    assert "composited over white" in notes[0]
    assert cv2.imread(str(tmp_path / "clear.jpg")).min() > 240  # fully transparent -> white, as before


def test_plain_8_bit_photos_are_unchanged_by_the_layer_path(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), rgb[..., ::-1])
    layers = read_image_layers(tmp_path / "p.png")
    assert layers.alpha is None and layers.rgb16 is None and np.array_equal(layers.rgb, rgb)
