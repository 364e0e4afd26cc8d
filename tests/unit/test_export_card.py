"""Every person export carries a model card (README.md): base, photos, recipe, metrics, use, limits,
privacy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.export import CARD_FILE, copy_export, export_generator, export_person
from gpen_fewshot.export.card import person_card

TINY = {"style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.125}
RECIPE = {"experiment": "fewshot_512", "loss": "content", "iterations": 200, "lr_g": 1e-3}


def _tuned() -> GPENGenerator:
    torch.manual_seed(0)
    return GPENGenerator(32, **TINY).eval()


def test_person_export_has_a_card_with_the_facts_and_the_privacy_note(tmp_path: Path) -> None:
    base = tmp_path / "base.pth"
    torch.save(_tuned().state_dict(), base)
    metrics = {"psnr": 24.51234, "id_distance_gt": 0.31, "psnr_moderate": 23.0}
    out = export_person(_tuned(), base, tmp_path / "alice" / "weights", "alice", [], "gpen", metrics, "cfg",
                        5, np.zeros(128), mode="delta", recipe=RECIPE)
    card = (out / CARD_FILE).read_text(encoding="utf-8")
    assert card.startswith("# Model card: gpen-fewshot person model `alice`")
    assert "| base model | base |" in card and "| training photos | 5 |" in card
    for row in ("| experiment | fewshot_512 |", "| loss | content |", "| iterations | 200 |",
                "| lr g | 0.001 |"):
        assert row in card
    assert "| PSNR (dB, higher = better) | 24.51 |" in card and "`psnr_moderate` 23" in card
    for section in ("## Intended use", "## Limitations", "## Privacy"):
        assert section in card
    assert "`person.json` holds a face embedding" in card and "without that person's consent" in card
    registered = copy_export(out, tmp_path / "persons" / "alice" / "weights")  # registration keeps the card
    assert (registered / CARD_FILE).read_text(encoding="utf-8") == card


def test_card_without_recipe_or_metrics_says_so() -> None:
    card = person_card({"name": "bob", "n_photos": 3, "metrics": {}}, {"size": 32, "base": None})
    assert "none (trained from random weights)" in card and "not recorded" in card and "None recorded" in card


def test_model_exports_without_a_person_have_no_person_card(tmp_path: Path) -> None:
    out = export_generator(_tuned(), tmp_path / "prior")
    assert not (out / CARD_FILE).exists()
