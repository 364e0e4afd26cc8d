"""Very large photos: decoded at reduced scale for preparation, refused only when absurd, per photo
(issue 15, item 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from gpen_fewshot.utils import image as image_io
from gpen_fewshot.utils.image import ImageReadError, read_image


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 400x300 JPEG; tests lower the pixel limits instead of writing a 200-megapixel file."""
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_photo_over_pillows_bomb_limit_is_read(photo: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 120,000 px > 2x: Pillow alone raises
    assert read_image(photo).shape == (300, 400, 3)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # the limit is lifted for our read only


def test_large_jpeg_is_decoded_at_reduced_scale(photo: Path, monkeypatch) -> None:
    drafts = []
    real_draft = JpegImageFile.draft
    monkeypatch.setattr(JpegImageFile, "draft", lambda self, *a: drafts.append(a) or real_draft(self, *a))
    image = read_image(photo, max_pixels=20_000)
    assert (image.shape[0] * image.shape[1] <= 20_000 and
            image.shape[1] / image.shape[0] == pytest.approx(4 / 3, 0.02))
    assert drafts  # the JPEG decoder was asked for a reduced size, the full image was never decoded
    assert read_image(photo, max_pixels=10**9).shape == (300, 400, 3)  # below the limit: untouched


def test_absurd_size_is_one_reason_per_photo(photo: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(image_io, "ABSURD_PIXELS", 50_000)
    with pytest.raises(ImageReadError, match="400x300 is 0.1 megapixels, over the 0.05-megapixel limit"):
        read_image(photo)
    from gpen_fewshot.data.photo_vetting import VettingSettings, load_photo

    result = load_photo(photo, detector=None, settings=VettingSettings(), seen={})
    assert result.decision == "unreadable" and "megapixel limit" in result.reason
