"""gpen-restore never loses the user's files and says what it did (issue 15, items 2, 12, 14, 15)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gpen_fewshot.cli import restore as cli
from gpen_fewshot.utils.image import write_image


class FakeRestorer:
    """Writes a grey image per input; raises KeyboardInterrupt at call ``interrupt_at`` (1-based)."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def describe(self) -> list[str]:
        return ["model: fake"]

    def restore_file(self, source: Path, target: Path, save_faces: bool = False, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        write_image(target, np.full((8, 8, 3), 7, np.uint8))
        return SimpleNamespace(faces=[], info={})


@pytest.fixture
def fake_restorer(monkeypatch):
    restorer = FakeRestorer()
    monkeypatch.setattr(cli, "build_restorer", lambda args, device, fp16: (restorer, 0))
    return restorer


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        write_image(folder / name, np.full((8, 8, 3), 200, np.uint8))
    return folder


def test_output_over_the_input_is_refused_unless_overwrite(photos: Path, fake_restorer, capsys) -> None:
    original = (photos / "a.png").read_bytes()
    assert cli.main(["-i", str(photos / "a.png"), "-o", str(photos / "a.png"), "-q"]) == cli.EXIT_SETUP
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["-i", str(photos), "-o", str(photos), "-q"]) == cli.EXIT_SETUP  # folder onto itself
    (photos.parent / "link.png").hardlink_to(photos / "a.png")  # same inode under another name
    assert (cli.main(["-i", str(photos / "a.png"), "-o", str(photos.parent / "link.png"), "-q"]) ==
            cli.EXIT_SETUP)
    assert (photos / "a.png").read_bytes() == original and fake_restorer.calls == 0
    assert (cli.main(["-i", str(photos / "a.png"), "-o", str(photos / "a.png"), "-q", "--overwrite"]) ==
            cli.EXIT_OK)
    assert (photos / "a.png").read_bytes() != original


def test_unsupported_output_extension_is_an_error(photos: Path, fake_restorer, tmp_path: Path,
                                                  capsys) -> None:
    assert cli.main(["-i", str(photos / "a.png"), "-o", str(tmp_path / "out.gif")]) == cli.EXIT_SETUP
    assert "unsupported output format '.gif'" in capsys.readouterr().err
    assert not (tmp_path / "out.gif").exists()
    assert cli.main(["-i", str(photos / "a.png"), "-o", str(tmp_path / "out.gif") + "/", "-q"]) == cli.EXIT_OK
    assert (tmp_path / "out.gif" / "a.png").is_file()  # asked for a folder explicitly


def test_skipped_folder_entries_are_listed_with_a_reason(photos: Path, fake_restorer, tmp_path: Path,
                                                          capsys) -> None:
    (photos / "d.heic").write_bytes(b"heic")
    (photos / "e.avif").write_bytes(b"avif")
    (photos / "f.jpg").symlink_to(photos / "missing.jpg")
    assert cli.main(["-i", str(photos), "-o", str(tmp_path / "out"), "-q"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert any("d.heic" in line and "unsupported format '.heic'" in line for line in lines)
    assert any("e.avif" in line and "unsupported format" in line for line in lines)
    assert any("f.jpg" in line and "broken symbolic link" in line for line in lines)
    assert "3 file(s) skipped" in captured.out


def test_ctrl_c_exits_130_and_says_how_many_were_written(photos: Path, monkeypatch, tmp_path: Path,
                                                           capsys) -> None:
    restorer = FakeRestorer(interrupt_at=3)
    monkeypatch.setattr(cli, "build_restorer", lambda args, device, fp16: (restorer, 0))
    assert cli.main(["-i", str(photos), "-o", str(tmp_path / "out"), "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: 2 of 3 written" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.jpg"]  # nothing half-written

    def interrupted_setup(args, device, fp16):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_restorer", interrupted_setup)
    assert cli.main(["-i", str(photos), "-o", str(tmp_path / "out2"), "-q"]) == 130
    assert "interrupted: 0 of 3 written" in capsys.readouterr().err


def test_debug_shows_the_traceback(photos: Path, fake_restorer) -> None:
    with pytest.raises(ValueError, match="would overwrite the input"):
        cli.main(["-i", str(photos / "a.png"), "-o", str(photos / "a.png"), "--debug"])
