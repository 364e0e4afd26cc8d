"""The one drawer of labelled comparison grids: columns of images under wrapped labels, one row per photo.

Used by ``evaluate.py``'s report (input | models | ground truth), ``scripts/evaluate_prior.py`` (bicubic |
priors | ground truth, optionally the face centres zoomed) and ``scripts/degradation_grid.py`` (original |
presets). Images are uint8 RGB (H, W, 3); labels are drawn with :mod:`gpen_fewshot.utils.drawing` (any
Unicode) and wrapped, never cut, so long run names stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from gpen_fewshot.utils.drawing import draw_text, text_width

FONT_SIZE, LINE_HEIGHT = 17, 22  # px; capital letters about 13 px tall
_BREAKS = re.compile(r"[^/_\-. ]+[/_\-. ]*|[/_\-. ]+")  # tokens ending after / _ - . or a space


def wrap_label(text: str, width: int, size: int = FONT_SIZE) -> list[str]:
    """Lines of ``text``, each at most ``width`` px wide, broken after / _ - . or a space where possible."""
    lines = [""]
    for token in _BREAKS.findall(text):
        if text_width(lines[-1] + token, size) <= width:
            lines[-1] += token
            continue
        if lines[-1]:
            lines.append("")
        for char in token:  # a token wider than the column: break anywhere
            if lines[-1] and text_width(lines[-1] + char, size) > width:
                lines.append("")
            lines[-1] += char
    return lines


def label_header(texts: Sequence[str], tile: int) -> np.ndarray:
    """uint8 RGB white strip (8 + 22 * lines, len(texts) * tile, 3), each text centred over its column."""
    wrapped = [wrap_label(text, max(tile - 8, 1)) for text in texts]
    height = 8 + LINE_HEIGHT * max(len(lines) for lines in wrapped)
    strip = np.full((height, tile * len(texts), 3), 255, np.uint8)
    for col, lines in enumerate(wrapped):
        for row, line in enumerate(lines):
            x = col * tile + max(4, (tile - text_width(line, FONT_SIZE)) // 2)
            draw_text(strip, line, (x, 4 + LINE_HEIGHT * (row + 1) - 6), FONT_SIZE)
    return strip


def zoom_centre(image: np.ndarray, zoom: int) -> np.ndarray:
    """The central (side / zoom) square of a (side, side, 3) image enlarged ``zoom`` x by pixel copies."""
    side = image.shape[0]
    crop = side // zoom
    start = (side - crop) // 2
    centre = image[start:start + crop, start:start + crop]
    return cv2.resize(centre, (crop * zoom, crop * zoom), interpolation=cv2.INTER_NEAREST)


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` as a (tile, tile) square: enlarged by pixel copies (shows the pixels), shrunk by area."""
    if image.shape[:2] == (tile, tile):
        return image
    mode = cv2.INTER_NEAREST if image.shape[0] < tile else cv2.INTER_AREA
    return cv2.resize(image, (tile, tile), interpolation=mode)


def labelled_grid(columns: Mapping[str, Sequence[np.ndarray]], order: Sequence[str] | None = None,
                  title: str | None = None, min_tile: int = 0, zoom: int = 1) -> np.ndarray:
    """Labelled grid: one column per label in ``order`` (default: the mapping's order), one row per photo.

    Args:
        columns: label -> uint8 RGB square images, one per row (every column the same number of rows).
        order: column labels, left to right.
        title: an optional line above the column labels (wrapped to the grid's width).
        min_tile: tiles are the first column's image side, at least this (smaller images are enlarged by
            pixel copies so that their labels fit; other sizes are fitted to the tile).
        zoom: > 1 shows the central 1/zoom of every image enlarged zoom x (eyes, nose and mouth of an
            aligned crop at 2), so that noise, blur and artefacts are visible at README size.

    Returns:
        uint8 RGB (header + rows * tile, len(order) * tile, 3).

    Raises:
        ValueError: no column, or a first column without rows.
    """
    order = list(order if order is not None else columns)
    if not order or not columns[order[0]]:
        raise ValueError("a labelled grid needs at least one column and one row")
    if zoom > 1:
        columns = {label: [zoom_centre(image, zoom) for image in columns[label]] for label in order}
        title = f"{title}; centre of each face at {zoom}x" if title else f"centre of each face at {zoom}x"
    tile = max(columns[order[0]][0].shape[0], min_tile)
    rows = [np.concatenate([_fit(columns[label][r], tile) for label in order], axis=1)
            for r in range(len(columns[order[0]]))]
    strips = [label_header([title], tile * len(order))] if title else []
    return np.concatenate([*strips, label_header(order, tile), *rows], axis=0)
