"""--help of the CLIs says what applies to them, with the real defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpen_fewshot.cli.prepare_person import build_parser
from gpen_fewshot.data.photo_vetting import VettingSettings

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_help_lists_evaluation_options_not_training_groups() -> None:
    proc = subprocess.run([sys.executable, "evaluate.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "python evaluate.py person=alice" in proc.stdout and "protocol:" in proc.stdout
    for training_only in ("experiment:", "hparams_search:", "freezing:", "Configuration groups"):
        assert training_only not in proc.stdout, training_only


def test_prepare_person_help_shows_the_defaults_it_uses() -> None:
    text = build_parser().format_help()
    assert f"(default: {VettingSettings.min_face_scale})" in text
    assert f"(default: {VettingSettings.min_sharpness})" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    args = build_parser().parse_args(["someone"])
    assert args.min_face_scale == VettingSettings.min_face_scale and args.holdout is None
