"""Contact sheet of a prepared person: every photo, its chosen face, its aligned crop and its decision.

One tile per photo: a coloured title bar (green = train, blue = holdout, red = rejected) naming the file and
the decision, the photo thumbnail with the chosen face boxed in that colour (other faces in yellow), the
aligned crop, and the reason in words.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gpen_fewshot.utils.drawing import draw_text, fit_text, text_width

THUMB = 200
PAD = 6
BAR = 22
LINE = 15
TEXT_LINES = 3
COLUMNS = 4
HEADER_FONT, TITLE_FONT, TEXT_FONT = 16, 13, 12  # px
_COLOURS = {"train": (34, 160, 60), "holdout": (40, 100, 220), "rejected": (200, 35, 35)}
_OTHER_FACE = (235, 200, 0)
_BACKGROUND = (245, 245, 245)
_PANEL = (200, 200, 200)


@dataclass(frozen=True, eq=False)
class SheetEntry:
    """What the sheet shows about one photo.

    Attributes:
        title: file name.
        decision: "used" or a rejection code.
        split: "train" / "holdout" for used photos.
        reason: the decision in words.
        thumbnail: uint8 RGB thumbnail of the photo, or None (unreadable).
        thumb_scale: thumbnail pixels per photo pixel.
        chosen_box: x1, y1, x2, y2 of the chosen face in photo pixels, or None.
        other_boxes: boxes of the other faces in photo pixels.
        crop: uint8 RGB aligned crop, or None.
    """

    title: str
    decision: str
    split: str | None
    reason: str
    thumbnail: np.ndarray | None = None
    thumb_scale: float = 1.0
    chosen_box: Sequence[float] | None = None
    other_boxes: Sequence[Sequence[float]] = ()
    crop: np.ndarray | None = None

    @property
    def status(self) -> str:
        return self.split if self.decision == "used" and self.split else "rejected"

    @property
    def label(self) -> str:
        if self.decision == "used":
            return (self.split or "usable").upper()
        return f"REJECTED: {self.decision}"


def person_contact_sheet(photos: Sequence, records: Sequence, name: str, size: int,
                         template: str) -> np.ndarray:
    """The sheet of ``prepare_person``: one tile per (vetting Photo, PhotoRecord) pair, in file order."""
    entries = []
    for photo, record in zip(photos, records, strict=True):
        thumb = photo.thumbnail
        entries.append(SheetEntry(
            title=record.file, decision=record.decision, split=record.split, reason=record.reason,
            thumbnail=thumb, thumb_scale=thumb.shape[1] / photo.size_wh[0] if thumb is not None else 1.0,
            chosen_box=record.face["box"] if record.face else None, other_boxes=record.other_boxes,
            crop=photo.crop.crop if photo.crop is not None else None,
        ))
    train = sum(r.split == "train" for r in records)
    holdout = sum(r.split == "holdout" for r in records)
    rejected = sum(r.decision != "used" for r in records)
    header = (f"{name} - {size}px '{template}' crops - {len(records)} files: {train} train, {holdout} "
              f"holdout, {rejected} rejected")
    return render_contact_sheet(entries, header=header)


def render_contact_sheet(entries: Sequence[SheetEntry], header: str = "",
                         columns: int = COLUMNS) -> np.ndarray:
    """Grid of tiles, one per entry, under an optional one-line header.

    Returns:
        uint8 (H, W, 3) RGB image.
    """
    tile_w = 2 * THUMB + 3 * PAD
    tile_h = BAR + THUMB + 2 * PAD + TEXT_LINES * LINE + PAD
    columns = max(1, min(columns, len(entries) or 1))
    rows = max(1, -(-len(entries) // columns))
    head = 30 if header else 0
    sheet = np.full((head + rows * (tile_h + PAD) + PAD, columns * (tile_w + PAD) + PAD, 3), _BACKGROUND,
                    np.uint8)
    if header:
        draw_text(sheet, fit_text(header, sheet.shape[1] - 2 * PAD, HEADER_FONT), (PAD, 21), HEADER_FONT,
                  (20, 20, 20))
    for index, entry in enumerate(entries):
        row, col = divmod(index, columns)
        y, x = head + PAD + row * (tile_h + PAD), PAD + col * (tile_w + PAD)
        sheet[y : y + tile_h, x : x + tile_w] = _tile(entry, tile_w, tile_h)
    return sheet


def _tile(entry: SheetEntry, width: int, height: int) -> np.ndarray:
    tile = np.full((height, width, 3), 255, np.uint8)
    colour = _COLOURS[entry.status]
    tile[:BAR] = colour
    title = fit_text(f"{entry.title}  {entry.label}", width - 2 * PAD, TITLE_FONT)
    draw_text(tile, title, (PAD, BAR - 7), TITLE_FONT, (255, 255, 255))
    top = BAR + PAD
    tile[top : top + THUMB, PAD : PAD + THUMB] = _photo_panel(entry, colour)
    tile[top : top + THUMB, 2 * PAD + THUMB : 2 * PAD + 2 * THUMB] = _crop_panel(entry.crop)
    lines = textwrap.wrap(entry.reason, width=_chars_per_line(width - 2 * PAD, TEXT_FONT)) or [""]
    if len(lines) > TEXT_LINES:
        lines = lines[: TEXT_LINES - 1] + [lines[TEXT_LINES - 1][:-3] + "..."]
    for i, line in enumerate(lines[:TEXT_LINES]):
        y = top + THUMB + PAD + (i + 1) * LINE - 3
        draw_text(tile, line, (PAD, y), TEXT_FONT, colour if i == 0 else (40, 40, 40))
    return tile


def _photo_panel(entry: SheetEntry, colour: tuple[int, int, int]) -> np.ndarray:
    panel = np.full((THUMB, THUMB, 3), _PANEL, np.uint8)
    if entry.thumbnail is None:
        draw_text(panel, "no image", (THUMB // 2, THUMB // 2), TEXT_FONT + 3, (90, 90, 90), anchor="mm")
        return panel
    thumb = entry.thumbnail
    factor = min(1.0, THUMB / max(thumb.shape[:2]))
    if factor < 1.0:
        thumb = cv2.resize(thumb, (round(thumb.shape[1] * factor), round(thumb.shape[0] * factor)),
                           interpolation=cv2.INTER_AREA)
    oy, ox = (THUMB - thumb.shape[0]) // 2, (THUMB - thumb.shape[1]) // 2
    panel[oy : oy + thumb.shape[0], ox : ox + thumb.shape[1]] = thumb
    scale = entry.thumb_scale * factor
    for box in entry.other_boxes:
        _box(panel, box, scale, (ox, oy), _OTHER_FACE, 1)
    if entry.chosen_box is not None:
        _box(panel, entry.chosen_box, scale, (ox, oy), colour, 2)
    return panel


def _box(panel: np.ndarray, box: Sequence[float], scale: float, offset: tuple[int, int],
         colour: tuple[int, int, int], thickness: int) -> None:
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    p1 = (round(x1) + offset[0], round(y1) + offset[1])
    p2 = (round(x2) + offset[0], round(y2) + offset[1])
    cv2.rectangle(panel, p1, p2, colour, thickness, cv2.LINE_AA)


def _crop_panel(crop: np.ndarray | None) -> np.ndarray:
    if crop is None:
        panel = np.full((THUMB, THUMB, 3), _PANEL, np.uint8)
        draw_text(panel, "no crop", (THUMB // 2, THUMB // 2), TEXT_FONT + 3, (90, 90, 90), anchor="mm")
        return panel
    interpolation = cv2.INTER_AREA if crop.shape[0] > THUMB else cv2.INTER_LINEAR
    return cv2.resize(crop, (THUMB, THUMB), interpolation=interpolation)


def _chars_per_line(width: int, size: int) -> int:
    return max(10, width // max(1, text_width("n", size)))
