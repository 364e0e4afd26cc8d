"""Person runs say which photos they use, check the registration before training, and always print where the
export is, with shell-quoted commands (issue 15, items 5, 13, 16)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gpen_fewshot.training import reporting, run
from gpen_fewshot.training.reporting import RegistrationError, export_lines
from gpen_fewshot.training.run import train

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _person_cfg(compose_train, tmp_path: Path):
    return compose_train("experiment=smoke", "iterations=2", "val_every=2", "validate_before_training=false",
                         f"data.cache_dir={tmp_path / 'prepared'}", "data.val_degradations=[moderate]",
                         "data.val_copies=1", "export.register=true", "logger=none", shrink=False)


def test_read_only_persons_folder_fails_before_training(compose_train, tmp_path: Path, monkeypatch) -> None:
    cfg = _person_cfg(compose_train, tmp_path)
    persons = Path(cfg.paths.persons_dir)
    persons.mkdir(parents=True)
    # as root chmod does not stop writes: stand in for a folder the user cannot write
    monkeypatch.setattr(reporting.os, "access", lambda path, mode: Path(path) != persons)
    with pytest.raises(RegistrationError, match="export.register=false"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_vetting_summary_first_and_export_path_even_when_registration_fails(compose_train, tmp_path: Path,
                                                                             monkeypatch, capsys) -> None:
    cfg = _person_cfg(compose_train, tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "persons" / "obama"))

    monkeypatch.setattr(run, "register_person_export", refuse)
    with pytest.raises(RegistrationError, match="could not register"):
        train(cfg, echo=print)
    out = capsys.readouterr().out
    assert "person 'obama': 4 of 4 photos used (3 training, 1 held out" in out
    assert "manifest.json" in out.split("Exported")[0]  # the summary comes before training
    export = Path(cfg.paths.output_dir) / "export"
    assert f"run export: {export}" in out and "not registered (could not register" in out
    assert (export / "model.safetensors").is_file()


def _command(text: str, script: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.strip().startswith(f"python {script}"))
    return shlex.split(line)


def test_printed_commands_are_shell_quoted(tmp_path: Path) -> None:
    path = tmp_path / "my runs" / "2026-01-01_10-00-00" / "export"
    text = export_lines(path, None, "alice", 10, None)
    assert _command(text, "restore.py")[-2:] == ["--weights", str(path)]
    assert _command(text, "evaluate.py")[2:] == ["person=alice", f'ckpt="{path.parent}"']  # Hydra-quoted too
    persons = tmp_path / "p q"
    text = export_lines(path, persons / "alice" / "weights", "alice", 10, persons)
    assert _command(text, "restore.py")[-4:] == ["--person", "alice", "--persons-dir", str(persons)]
    assert _command(text, "evaluate.py")[-1] == f'paths.persons_dir="{persons}"'
    prior = export_lines(path, None, None, 10, None)
    assert f"model.generator_weights={path}" in shlex.split(
        prior.splitlines()[-1].split("few-shot runs: ")[1][:-1])


def test_printed_overrides_parse_back_to_the_paths() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in ("/runs/alice/2026-01-01_10-00-00", "/my runs/a,b=c", "/it's \"quoted\"", "/ünï"):
        override = shlex.split(reporting.hydra_override("ckpt", value))[0]
        assert parser.parse_override(override).value() == value


def test_person_run_ends_with_evaluate_and_restore_commands(compose_train, tmp_path: Path, capsys) -> None:
    cfg = _person_cfg(compose_train, tmp_path)
    train(cfg, echo=print)
    out = capsys.readouterr().out
    run_dir = Path(cfg.paths.output_dir)
    assert _command(out, "evaluate.py")[2:] == ["person=obama", f"ckpt={run_dir}"]
    assert _command(out, "restore.py")[-2:] == ["--person", "obama"]  # persons dir: $GPEN_FEWSHOT_PERSONS_DIR
    card = (run_dir / "export" / "README.md").read_text(encoding="utf-8")  # the model card, registered too
    assert card == (Path(cfg.paths.persons_dir) / "obama" / "weights"
                    / "README.md").read_text(encoding="utf-8")
    assert "| training photos | 3 |" in card and "| iterations | 2 |" in card and "| loss | content |" in card
    assert "| experiment | smoke |" in card and "PSNR (dB" in card and "without that person's consent" in card


def test_vetting_summary_names_every_dropped_photo(tmp_path: Path) -> None:
    from types import SimpleNamespace as Record

    records = [Record(file="a.jpg", decision="used", split="train", reason="ok"),
               Record(file="b.jpg", decision="used", split="holdout", reason="ok"),
               Record(file="c.heic", decision="unreadable", split=None, reason="unknown format"),
               Record(file="d.jpg", decision="no_face", split=None, reason="no face found")]
    text = reporting.vetting_summary("mix", records, tmp_path / "manifest.json")
    assert text.splitlines()[0] == "person 'mix': 2 of 4 photos used (1 training, 1 held out for validation)"
    assert "2 not used (1 no_face, 1 unreadable)" in text
    assert "c.heic: unreadable - unknown format" in text and "d.jpg: no_face - no face found" in text
