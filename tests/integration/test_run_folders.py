"""Run folders: unique per run, never created for an unsafe person name (issue 15, items 3 and 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpen_fewshot.cli import resolvers

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(resolvers, "_claimed", {})
    requested = str(tmp_path / "outputs" / "alice" / "2026-01-01_10-00-00")
    first = resolvers.unique_dir(requested)
    assert first == requested and Path(first).is_dir()
    assert resolvers.unique_dir(requested) == first  # Hydra resolves hydra.run.dir more than once
    monkeypatch.setattr(resolvers, "_claimed", {})  # a second process asking for the same folder
    second = resolvers.unique_dir(requested)
    assert second == requested + "_1" and Path(second).is_dir()


def test_run_folder_config_uses_the_guards() -> None:
    text = (REPO_ROOT / "configs" / "hydra" / "default.yaml").read_text()
    assert text.count("${unique_dir:") == 2 and text.count("${safe_person:${person}}") == 2


@pytest.mark.parametrize("name", ["../../x", "/abs"])
def test_unsafe_person_name_is_refused_before_any_folder_exists(name: str, tmp_path: Path,
                                                                 subprocess_env) -> None:
    logs = tmp_path / "deep" / "outputs"
    env = {**subprocess_env}
    env.pop("HYDRA_FULL_ERROR")
    result = subprocess.run([sys.executable, "train.py", f"person={name}", f"paths.log_dir={logs}",
                             "logger=none"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert (result.stderr.strip().splitlines() == [result.stderr.strip()] and
            "invalid person name" in result.stderr)
    assert not (tmp_path / "deep").exists() and not (tmp_path / "x").exists()
