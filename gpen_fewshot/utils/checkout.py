"""The one place that finds the source checkout the package runs from (if it runs from one)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # gpen_fewshot/


def source_root() -> Path | None:
    """The repository root when the package runs from a source checkout (a ``pyproject.toml`` beside the
    package, as with ``pip install -e .``), else None (an installed wheel)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else None
