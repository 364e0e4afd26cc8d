"""Image reading/writing and the project's only colour-order / value-range conversions.

Conventions used everywhere in gpen_fewshot:
- images on disk are read into **uint8 RGB HWC** numpy arrays (``read_image``);
- degradations work on **float32 RGB HWC in [0, 1]** (``to_float`` / ``to_uint8``);
- networks take **float32 RGB NCHW in [-1, 1]** (``image_to_tensor`` / ``tensor_to_image``).
OpenCV's BGR order never leaves this module.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gpen_fewshot.utils.atomic import atomic_write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Refused outright, per photo: past this a file is a mistake or a decompression bomb, not a photo (a
# 200-megapixel phone photo is well below). Pillow's own limit (179 MP) is lifted for our reads only.
ABSURD_PIXELS = 500_000_000


class ImageReadError(ValueError):
    """A file could not be decoded as an image; the message names the file and the reason."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, case-insensitive), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read any common photo as uint8 RGB, the way a person sees it.

    Honours EXIF orientation; converts grayscale, palette, CMYK and 16-bit images; composites transparent
    images over white.

    Args:
        path: image file (JPEG, PNG, WebP, BMP, TIFF).
        max_pixels: None = full resolution; else larger photos are downscaled to at most this many pixels,
            JPEGs decoded at reduced scale (Pillow ``draft``: 1/2, 1/4, 1/8) so a huge photo never exists in
            memory at full size.

    Returns:
        uint8 array (H, W, 3), RGB.

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, or over ``ABSURD_PIXELS``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    try:
        with _no_pillow_pixel_limit(), Image.open(io.BytesIO(data)) as pil:
            width, height = pil.size
            if width * height > ABSURD_PIXELS:
                raise ImageReadError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
                                     f"over the {ABSURD_PIXELS / 1e6:g}-megapixel limit")
            if max_pixels is not None and width * height > max_pixels:
                return _read_reduced(pil, max_pixels)
            pil.load()  # forces a full decode so truncated files fail here, not later
            pil = ImageOps.exif_transpose(pil)
            high_depth = _read_high_bit_depth(data, pil)
            if high_depth is not None:
                return high_depth
            return _pil_to_rgb(pil)
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a readable image (unknown or unsupported format)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err


@contextlib.contextmanager
def _no_pillow_pixel_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit while we read (we check ``ABSURD_PIXELS`` ourselves)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_reduced(pil: Image.Image, max_pixels: int) -> np.ndarray:
    """Decode a photo larger than ``max_pixels`` at reduced scale, then area-downscale it to fit."""
    scale = math.sqrt(max_pixels / (pil.width * pil.height))
    # draft() picks the strongest JPEG reduction still >= the requested size: asking for half the target
    # side lets it go one halving further, so a 200 MP photo is decoded at 1/4, never at full size.
    pil.draft("RGB", (max(1, int(pil.width * scale / 2)), max(1, int(pil.height * scale / 2))))
    pil.load()
    rgb = _pil_to_rgb(ImageOps.exif_transpose(pil))
    height, width = rgb.shape[:2]
    if width * height <= max_pixels:
        return rgb
    factor = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _read_high_bit_depth(data: bytes, pil: Image.Image) -> np.ndarray | None:
    """16-bit images decoded by OpenCV (Pillow truncates 16-bit RGB), scaled to uint8; None if 8-bit."""
    if pil.format not in ("PNG", "TIFF"):
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    if (pil.width, pil.height) != (arr.shape[1], arr.shape[0]):  # EXIF rotated it: follow Pillow
        return None
    arr8 = np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    if arr8.ndim == 2:
        return np.repeat(arr8[:, :, None], 3, axis=2)
    if arr8.shape[2] == 4:
        rgb = cv2.cvtColor(arr8[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float32)
        alpha = arr8[:, :, 3:4].astype(np.float32) / 255.0
        return np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return cv2.cvtColor(arr8, cv2.COLOR_BGR2RGB)


def _pil_to_rgb(pil: Image.Image) -> np.ndarray:
    """Any Pillow mode to uint8 RGB; transparency is composited over white."""
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(pil, dtype=np.float32)
        scale = 257.0 if arr.max() > 255 else 1.0
        gray = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA"):
        pil = pil.convert("RGBA")
        background = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(background, pil)
    return np.ascontiguousarray(np.asarray(pil.convert("RGB"), dtype=np.uint8))


def write_image(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write a uint8 RGB (H, W, 3) or grayscale (H, W) image atomically; format from the extension."""
    path = Path(path)
    if image.dtype != np.uint8:
        raise TypeError(f"write_image expects uint8, got {image.dtype}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {ext} image")
    atomic_write_bytes(path, buf.tobytes())


# ----------------------------------------------------------------------- what restore must give back
ALPHA_FORMATS = (".png", ".webp", ".tif", ".tiff")  # OpenCV writes an alpha channel in these
DEEP_FORMATS = (".png", ".tif", ".tiff")  # and 16 bits per channel in these


@dataclass(frozen=True)
class ImageLayers:
    """A photo as restore sees it plus what it must put back.

    Attributes:
        rgb: uint8 (H, W, 3) RGB colour channels (not composited: the alpha channel is kept apart).
        alpha: the alpha channel (H, W), uint8 or uint16 like the file, or None.
        rgb16: uint16 (H, W, 3) RGB of a 16-bit file (``rgb`` is its 8-bit rounding), or None.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    rgb16: np.ndarray | None = None


def read_image_layers(path: str | os.PathLike) -> ImageLayers:
    """Read a photo for restoration: like :func:`read_image`, but keeping the alpha channel and 16-bit depth.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    rgb = read_image(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if Path(path).suffix.lower() in ALPHA_FORMATS else None
    if raw is None or raw.ndim != 3 or raw.shape[:2] != rgb.shape[:2]:  # no extra layers (or EXIF-rotated)
        return ImageLayers(rgb)
    alpha = raw[:, :, 3] if raw.shape[2] == 4 else None
    colour = cv2.cvtColor(raw[:, :, :3], cv2.COLOR_BGR2RGB)
    if raw.dtype == np.uint16:
        return ImageLayers(np.round(colour / 257.0).astype(np.uint8), alpha, colour)
    return ImageLayers(colour if alpha is not None else rgb, alpha)


def write_image_layers(path: str | os.PathLike, image: np.ndarray, layers: ImageLayers) -> list[str]:
    """Write a restored uint8 RGB ``image`` (the input scaled by an integer factor) with the input's alpha
    channel and bit depth put back, atomically.

    16-bit: the restoration's change is added to the 16-bit input (resized like the output), so the pixels
    it did not touch keep their 16-bit values. Formats that cannot hold alpha / 16 bits get the 8-bit image
    composited over white, and the returned notes say what was dropped.

    Returns:
        One line per dropped layer (empty when nothing was lost).
    """
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    size = (image.shape[1], image.shape[0])
    notes, out = [], image
    if layers.rgb16 is not None and ext in DEEP_FORMATS:
        base8, base16 = (_resized(layers.rgb, size), _resized(layers.rgb16, size))
        change = (image.astype(np.int32) - base8.astype(np.int32)) * 257
        out = np.clip(base16.astype(np.int32) + change, 0, 65535).astype(np.uint16)
    elif layers.rgb16 is not None:
        notes.append(f"{path.name}: {ext} holds 8 bits per channel; the 16-bit input was written as 8-bit")
    alpha = None if layers.alpha is None else _resized(layers.alpha, size)
    if alpha is None or ext in ALPHA_FORMATS:
        _encode(path, out, alpha, ext)
        return notes
    weight = (alpha.astype(np.float32) / np.iinfo(alpha.dtype).max)[:, :, None]
    _encode(path, np.round(image * weight + 255.0 * (1.0 - weight)).astype(np.uint8), None, ext)
    return [*notes, f"{path.name}: {ext} has no alpha channel; transparent areas were composited over white"]


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` at (width, height) ``size``, resampled as the restored photo's background (Lanczos)."""
    if (array.shape[1], array.shape[0]) == size:
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_LANCZOS4)


def _encode(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, ext: str) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if alpha is not None:
        if alpha.dtype != bgr.dtype:  # an 8-bit alpha under 16-bit colour (or the reverse): match the colour
            alpha = (alpha.astype(np.uint16) * 257) if bgr.dtype == np.uint16 else np.round(alpha / 257.0)
        bgr = np.dstack([bgr, alpha.astype(bgr.dtype)])
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {ext} image")
    atomic_write_bytes(path, buf.tobytes())


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """RGB <-> BGR channel swap of an (H, W, 3) array (its own inverse); for OpenCV-based third-party code."""
    return np.ascontiguousarray(image[:, :, ::-1])


bgr_to_rgb = rgb_to_bgr


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1], same shape."""
    return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (values outside are clipped) -> uint8 [0, 255], rounded."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB HWC image (uint8 [0,255] or float [0,1]) -> float32 tensor (3, H, W) in [-1, 1]."""
    arr = to_float(image) if image.dtype == np.uint8 else image.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))) * 2.0 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Tensor (3, H, W) or (1, 3, H, W) in [-1, 1] (clipped) -> uint8 RGB (H, W, 3)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"tensor_to_image takes one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    arr = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 0.5).numpy().transpose(1, 2, 0)
    return to_uint8(arr)
