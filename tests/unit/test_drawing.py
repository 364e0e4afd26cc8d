"""Labels are drawn with PIL: non-ASCII names render as themselves, not as OpenCV's '?' (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from gpen_fewshot.data.contact_sheet import SheetEntry, render_contact_sheet
from gpen_fewshot.evaluation.grids import labelled_grid
from gpen_fewshot.utils import drawing


def _drawn(text: str, size: int = 24) -> np.ndarray:
    image = np.full((40, 160, 3), 255, np.uint8)
    drawing.draw_text(image, text, (4, 30), size)
    return image


@pytest.mark.parametrize("name", ["José", "Zoë", "Łukasz"])
def test_a_non_ascii_label_draws_its_own_glyphs(name: str) -> None:
    ascii_fallback = name.encode("ascii", "replace").decode()  # what cv2.putText could draw: "Jos?"
    drawn, fallback = _drawn(name), _drawn(ascii_fallback)
    assert (drawn < 128).sum() > 50  # not blank
    assert not np.array_equal(drawn, fallback)
    # the glyph itself differs, not only its position: the last letter's columns differ
    assert (drawn != fallback).any(axis=(0, 2)).sum() >= 5


def test_pillows_default_font_also_draws_non_ascii(monkeypatch) -> None:
    monkeypatch.setattr(drawing, "FONT_FILES", ("no-such-font.ttf",))
    drawing.font.cache_clear()
    try:
        assert not np.array_equal(_drawn("José"), _drawn("Jos?"))
    finally:
        drawing.font.cache_clear()


def test_draw_text_touches_only_the_image_and_clips_at_its_edges() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    drawing.draw_text(image, "a long label that does not fit", (20, 15), 18, (255, 255, 255))
    assert image[:, :18].max() == 0 and image[:, 20:].max() > 0
    drawing.draw_text(image, "x", (100, 100), 12)  # entirely outside: nothing happens


def test_fit_text_shortens_with_an_ellipsis() -> None:
    text = "Solvay_conference_1927_restored_with_everything.png"
    fitted = drawing.fit_text(text, 120, 14)
    assert fitted.endswith("...") and drawing.text_width(fitted, 14) <= 120
    assert drawing.fit_text("José", 500, 14) == "José"


def test_contact_sheet_and_grid_headers_render_unicode() -> None:
    entry = SheetEntry(title="José_001.jpg", decision="used", split="train", reason="sharp, frontal")
    ascii_entry = SheetEntry(title="Jos?_001.jpg", decision="used", split="train", reason="sharp, frontal")
    assert not np.array_equal(render_contact_sheet([entry], header="José"),
                              render_contact_sheet([ascii_entry], header="Jos?"))
    tiles = [np.zeros((64, 64, 3), np.uint8)]
    assert not np.array_equal(labelled_grid({"José": tiles}, ["José"]),
                              labelled_grid({"Jos?": tiles}, ["Jos?"]))
