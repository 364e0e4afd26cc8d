"""Bad training input is one line naming the value or file, exit code 1, no traceback (issue 15, items 10,
11)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from gpen_fewshot.cli.train import main_task


@pytest.fixture
def one_line_error(compose_train, capsys, monkeypatch):
    """``error(*overrides) -> stderr`` of main_task, asserting exit code 1 and no traceback."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def run(*overrides: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main_task(compose_train(*overrides))
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and "Traceback" not in err
        return err.strip()

    return run


@pytest.mark.parametrize(("override", "expected"), [
    ("iterations=abc", "iterations='abc': expected an integer >= 1"),
    ("iterations=0", "iterations=0: expected an integer >= 1"),
    ("val_every=1.5", "val_every=1.5: expected an integer >= 1"),
    ("data.batch_size=two", "data.batch_size='two': expected an integer >= 1"),
    ("optim.lr_g=fast", "optim.lr_g='fast': expected a number >= 0"),
    ("export.register=maybe", "export.register='maybe': expected true or false"),
])
def test_badly_typed_overrides(override: str, expected: str, one_line_error) -> None:
    assert one_line_error(override) == f"error: {expected}"


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("kind", ["truncated", "random", "pickle", "empty"])
def test_bad_ckpt_path_files(kind: str, tmp_path: Path, one_line_error, capsys) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(_Payload()))
    else:
        path.write_bytes(b"")
    err = one_line_error(f"ckpt_path={path}")
    assert err.startswith(f"error: {path}:") and len(err.splitlines()) == 1, err
    assert "pickled code ran" not in capsys.readouterr().out
