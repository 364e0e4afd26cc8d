"""The one user-error funnel of the command lines (gpen_fewshot.cli.errors)."""

from __future__ import annotations

import pytest

from gpen_fewshot.cli.errors import exit_with_error, user_errors_exit


def test_a_listed_error_becomes_one_line_and_the_exit_status(capsys, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop, user_errors_exit((FileNotFoundError,), code=3):
        raise FileNotFoundError("photos/alice: no such folder\n(a second line the user need not read)")
    assert stop.value.code == 3
    assert capsys.readouterr().err == "error: photos/alice: no such folder\n"


def test_other_errors_pass_and_full_error_keeps_the_traceback(monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(KeyError), user_errors_exit((FileNotFoundError,)):
        raise KeyError("a bug, not the user's mistake")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FileNotFoundError), user_errors_exit((FileNotFoundError,)):
        raise FileNotFoundError("shown with its traceback")


def test_blank_line_and_an_empty_message(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        exit_with_error(ValueError(""), blank_line=True)
    assert stop.value.code == 1 and capsys.readouterr().err == "\nerror: ValueError\n"
