"""Image reading edge cases (EXIF, gray, RGBA, 16-bit, CMYK, corrupt files), conversions and atomic writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gpen_fewshot.utils.atomic import atomic_open, atomic_write_json
from gpen_fewshot.utils.image import (
    ImageReadError,
    image_to_tensor,
    list_images,
    read_image,
    tensor_to_image,
    to_float,
    to_uint8,
    write_image,
)


def _gradient_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), np.full_like(xs, 90)], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact(tmp_path):
    img = _gradient_rgb()
    write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)


def test_exif_orientation_is_applied(tmp_path):
    img = _gradient_rgb(20, 40)  # landscape
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)  # displayed as portrait
    expected = np.rot90(img, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


def test_grayscale_rgba_and_palette(tmp_path):
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (4, 6, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, ..., 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = read_image(tmp_path / "t.png")
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])  # transparent -> white

    Image.fromarray(_gradient_rgb()).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (24, 32, 3)


def test_16bit_png_gray_and_colour(tmp_path):
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 1], np.round(gray16 / 257.0).astype(np.uint8))

    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0] = 65535  # red in RGB order
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png")[0, 0], [255, 0, 0])


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(_gradient_rgb()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - _gradient_rgb().astype(int)).mean() < 12


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"hello, I am not an image\n", "not a readable image"),
    ],
)
def test_unreadable_files_raise_one_clear_error(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(tmp_path / name)
    assert name in str(info.value)


def test_truncated_and_missing_files(tmp_path):
    write_image(tmp_path / "full.jpg", _gradient_rgb(64, 64))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_tensor_conversions_round_trip():
    img = _gradient_rgb()
    t = image_to_tensor(img)
    assert t.shape == (3, 24, 32) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    np.testing.assert_array_equal(tensor_to_image(t), img)
    np.testing.assert_array_equal(tensor_to_image(t[None]), img)
    np.testing.assert_array_equal(to_uint8(to_float(img)), img)
    with pytest.raises(ValueError, match="batch"):
        tensor_to_image(torch.zeros(2, 3, 4, 4))


def test_list_images_filters_by_extension(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.webp"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("{broken")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_atomic_files_get_normal_permissions(tmp_path):
    atomic_write_json(tmp_path / "p.json", {})
    assert (tmp_path / "p.json").stat().st_mode & 0o644 == 0o644


def test_unreadable_message_has_no_internal_object_names(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x00" * 100)
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "x.png")
    assert "BytesIO" not in str(info.value)
