"""The web demo's pieces that need neither Gradio nor a browser (the page itself: tests/integration/test_web_demo.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpen_fewshot.webapp import BASE_CHOICE, INSTALL_HINT, GradioMissingError, RestoreService, import_gradio


def _register(root: Path, name: str) -> Path:
    """A folder that ``discover_persons`` counts as an export (its contents are never loaded here)."""
    export = root / name / "weights"
    export.mkdir(parents=True)
    (export / "config.json").write_text("{}")
    (export / "person.json").write_text("{}")
    return export


def test_choices_list_registered_persons_like_the_restore_runner(tmp_path: Path) -> None:
    alice = _register(tmp_path, "alice")
    (tmp_path / "bob" / "photos").mkdir(parents=True)  # a person folder with no export is not offered
    service = RestoreService(["--device", "cpu"], persons_root=tmp_path, output_root=tmp_path / "out")
    assert service.choices() == [BASE_CHOICE, "alice"]
    assert service.persons() == {"alice": alice}
    assert RestoreService(persons_root=tmp_path / "missing").choices() == [BASE_CHOICE]


def test_unknown_person_is_a_one_line_error(tmp_path: Path) -> None:
    service = RestoreService(["--device", "cpu"], persons_root=tmp_path, output_root=tmp_path / "out")
    with pytest.raises(ValueError, match="person 'carol': no registered export under"):
        service.restorer("carol")


def test_missing_gradio_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(GradioMissingError) as err:
        import_gradio()
    assert str(err.value) == INSTALL_HINT and "pip install 'gpen-fewshot[app]'" in INSTALL_HINT


def test_app_without_gradio_exits_2_with_the_install_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from gpen_fewshot.cli.app import main

    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {INSTALL_HINT}"
