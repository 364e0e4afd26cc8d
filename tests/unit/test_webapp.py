"""The web demo's pieces that need neither Gradio nor a browser (the page itself:
tests/integration/test_web_demo.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gpen_fewshot.cli.webapp import (
    BASE_CHOICE,
    INSTALL_HINT,
    GradioMissingError,
    RestoreService,
    import_gradio,
)


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


def test_a_registered_person_is_loaded_once_and_the_strength_follows_each_request(tmp_path: Path) -> None:
    """Through the service, as the page calls it: a tiny tuned export under persons/alice/weights (no
    reference embedding, so its faces route to the base: identity routing itself is tested in
    test_restore.py), a small photo; the restorer is built once and each request's strength is the one
    used."""
    import cv2
    import torch

    from gpen_fewshot.archs import GPENGenerator
    from gpen_fewshot.export import export_person
    from gpen_fewshot.utils.image import read_image, write_image

    torch.manual_seed(0)
    tiny = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}
    base, tuned = GPENGenerator(**tiny).eval(), GPENGenerator(**tiny).eval()
    tuned.load_state_dict(base.state_dict())
    trainable = tuned.parameter_groups()["to_rgb"]
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if name in trainable:
                param.add_(0.2)
    torch.save(base.state_dict(), tmp_path / "base.pth")
    export_person(tuned, tmp_path / "base.pth", tmp_path / "persons" / "alice" / "weights", "alice",
                  trainable, "gpen", {}, None, 3, None)
    group = read_image(Path(__file__).resolve().parents[2] / "data" / "demo" / "group"
                       / "obama_and_biden.jpg")
    photo = tmp_path / "group.jpg"
    write_image(photo, cv2.resize(group, (500, 357), interpolation=cv2.INTER_AREA))

    service = RestoreService(["--device", "cpu", "--no-guard", "--detector", "mobilenet0.25"],
                             persons_root=tmp_path / "persons", output_root=tmp_path / "out")
    first = service.restore(photo, "alice", 0.5)
    second = service.restore(photo, "alice", 1.0)
    assert service.restorer("alice") is service.restorer("alice")  # kept loaded between requests
    for result, strength in ((first, 0.5), (second, 1.0)):
        report = json.loads(result.report.read_text())
        assert report["persons"] == ["alice"] and report["strength"] == strength
        assert read_image(result.after).shape == (357, 500, 3)
        assert result.summary.startswith(f"{len(report['faces'])} face(s); weights: alice at strength "
                                         f"{strength:g}")
    assert first.after.parent != second.after.parent  # one folder per request: nothing is overwritten
