"""Overrides Hydra itself rejects are one ``error:`` line and exit 1 (issue 15's rule), before any run
folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpen_fewshot.cli.hydra_args import check_overrides, one_line

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize(("argv", "expected"), [
    (["foo=1"], "Could not override 'foo'; To append to your config use +foo=1"),
    (["model=doesnotexist"],
     "Could not find 'model/doesnotexist'; Available options in 'model': compact_256"),
    (["paths.log_dir=/tmp/a ü"], "cannot parse the override(s) 'paths.log_dir=/tmp/a ü'"),
])
def test_rejected_overrides_are_one_line(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        check_overrides(CONFIGS, "train", argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0]


def test_valid_overrides_flags_and_full_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    check_overrides(CONFIGS, "train", ["experiment=smoke", "iterations=3", "person=demo"])  # nothing raised
    check_overrides(CONFIGS, "train", ["--multirun", "foo=1"])  # sweeps: Hydra's own handling
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    check_overrides(CONFIGS, "train", ["foo=1"])
    assert one_line("A.\n  full_key: x\n\nB:\n\topt_a\n\topt_b\n") == "A; B: opt_a, opt_b"


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_scripts_print_one_line_and_create_no_run_folder(script: str, tmp_path: Path, subprocess_env) -> None:
    env = {k: v for k, v in subprocess_env.items() if k != "HYDRA_FULL_ERROR"}  # the user's default
    proc = subprocess.run([sys.executable, str(REPO_ROOT / script), "nosuchkey=1",
                           f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert (proc.returncode == 1 and lines == [lines[0]] and
            "Could not override 'nosuchkey'" in lines[0]), proc.stderr
    assert not (tmp_path / "run").exists()
