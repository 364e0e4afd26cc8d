"""Registered exports survive a kill between the two renames of a replacement, and respect the umask
(issue 15, items 7 and 17)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.export import copy_export, export_generator, load_person, writer

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}


@pytest.fixture
def export(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return export_generator(GPENGenerator(**TINY), tmp_path / "export")


def _killed_between_renames(monkeypatch, target: Path, source: Path) -> None:
    """Replace ``target`` with a copy of ``source``, dying right after the old export was moved aside."""
    real_replace = os.replace

    def die_on_second(src, dst):
        real_replace(src, dst)
        if Path(dst).name.startswith(f".{target.name}.old."):
            raise KeyboardInterrupt  # stands in for kill -9: no cleanup code runs after this point either

    monkeypatch.setattr(writer.os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        writer._replace_dir(writer.Path(source), target)
    monkeypatch.setattr(writer.os, "replace", real_replace)


def test_kill_between_the_renames_is_recovered_on_load(export: Path, tmp_path: Path, monkeypatch) -> None:
    target = copy_export(export, tmp_path / "persons" / "alice" / "weights")
    new = tmp_path / "persons" / "alice" / ".weights.new.tmp"
    new.mkdir()
    _killed_between_renames(monkeypatch, target, new)
    assert not target.exists()  # what a kill left behind: only .weights.old.<pid>
    assert load_person("alice", tmp_path / "persons").path == target  # recovered on the next load
    assert (target / "model.safetensors").is_file()


def test_kill_between_the_renames_is_recovered_on_registration(export: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    target = copy_export(export, tmp_path / "weights")
    new = tmp_path / ".weights.new.tmp"
    new.mkdir()
    _killed_between_renames(monkeypatch, target, new)
    copy_export(export, target)  # the next registration
    assert (target / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".weights.old.")]


def test_exports_respect_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        folder = export_generator(GPENGenerator(**TINY), tmp_path / "export")
        registered = copy_export(folder, tmp_path / "persons" / "alice" / "weights")
    finally:
        os.umask(previous)
    for path in (folder, registered):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert {stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == {0o644}
