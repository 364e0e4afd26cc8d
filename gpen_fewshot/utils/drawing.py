"""Text labels on images, drawn with PIL so that any Unicode name renders ("José", not OpenCV's "Jos?").

OpenCV's Hershey fonts (``cv2.putText``) only have ASCII glyphs. Every label of the project's images (contact
sheets, evaluation grids, restore comparisons) goes through :func:`draw_text`: DejaVu Sans when the system has
it, else Pillow's bundled scalable default font.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Tried in order; PIL also looks a bare file name up in the system font folders.
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
ELLIPSIS = "..."


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The label font at ``size`` px (em height), cached."""
    for candidate in FONT_FILES:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int) -> int:
    """Width in pixels of ``text`` drawn at ``size``."""
    left, _, right, _ = font(size).getbbox(text)
    return int(right - left)


def fit_text(text: str, width: int, size: int) -> str:
    """``text``, shortened at the end with "..." until it is at most ``width`` px wide."""
    if text_width(text, size) <= width:
        return text
    while len(text) > 1 and text_width(text + ELLIPSIS, size) > width:
        text = text[:-1]
    return text + ELLIPSIS


def draw_text(image: np.ndarray, text: str, xy: tuple[int, int], size: int,
              colour: tuple[int, int, int] = (0, 0, 0), anchor: str = "ls") -> None:
    """Draw ``text`` onto ``image`` in place.

    Args:
        image: uint8 (H, W, 3) RGB, modified in place (only the text's bounding box is touched).
        text: any Unicode string.
        xy: anchor point in pixels; with the default anchor "ls", the left end of the baseline (as
            ``cv2.putText``'s origin); "mm" centres the text on ``xy`` (PIL anchor codes).
        size: font size in pixels.
        colour: RGB fill.
        anchor: PIL text anchor.
    """
    face = font(size)
    left, top, right, bottom = (int(v) for v in face.getbbox(text, anchor=anchor))
    x0, y0 = max(0, xy[0] + left - 1), max(0, xy[1] + top - 1)
    x1, y1 = min(image.shape[1], xy[0] + right + 1), min(image.shape[0], xy[1] + bottom + 1)
    if x1 <= x0 or y1 <= y0:
        return
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    ImageDraw.Draw(region).text((xy[0] - x0, xy[1] - y0), text, font=face, fill=tuple(int(c) for c in colour),
                                anchor=anchor)
    image[y0:y1, x0:x1] = np.asarray(region)


def label_strip(texts: list[str], widths: list[int], height: int, size: int | None = None,
                background: tuple[int, int, int] = (255, 255, 255),
                colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A strip of labels, each centred over its column (shortened with "..." to fit).

    Args:
        texts: one label per column.
        widths: column widths in pixels.
        height: strip height in pixels.
        size: font size (default: 60% of ``height``).

    Returns:
        uint8 (height, sum(widths), 3) RGB.
    """
    size = size or max(8, round(height * 0.6))
    strip = np.full((height, sum(widths), 3), background, np.uint8)
    x = 0
    for text, width in zip(texts, widths, strict=True):
        draw_text(strip, fit_text(text, width - 6, size), (x + width // 2, height // 2), size, colour,
                  anchor="mm")
        x += width
    return strip
