"""Resuming is safe: a checkpoint that cannot continue the configured run is refused before anything is
written, a failed start writes no checkpoint, and the printed resume command reproduces the run (issue 15,
item 1)."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from gpen_fewshot.cli.train import main_task
from gpen_fewshot.training.resume import ResumeMismatchError, check_resume_checkpoint, resume_command
from gpen_fewshot.training.run import build_module, build_trainer, hashable_config, train

REPO_ROOT = Path(__file__).resolve().parents[2]
SEARCHPATH = f"hydra.searchpath=[file://{REPO_ROOT / 'tests' / 'configs'}]"

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _interrupted_run(compose_train, stop_at, run_dir: Path, *overrides: str) -> Path:
    """A 4-iteration run stopped after 2 (as after Ctrl-C); returns its last.ckpt."""
    cfg = compose_train("iterations=4", "validate_before_training=false", "data.samples_per_epoch=4",
                        *overrides, output_dir=run_dir)
    module, trainer = build_module(cfg), build_trainer(cfg)
    trainer.callbacks.append(stop_at(2))
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return run_dir / "checkpoints" / "last.ckpt"


def test_mismatched_resume_is_one_error_and_writes_nothing(compose_train, stop_at, tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    ckpt = _interrupted_run(compose_train, stop_at, tmp_path / "first")
    cfg = compose_train("iterations=4", "model.narrow=0.25", f"ckpt_path={ckpt}",
                        output_dir=tmp_path / "second")
    with pytest.raises(ResumeMismatchError, match="does not match this config"):
        train(cfg)
    assert not (tmp_path / "second" / "checkpoints").exists()
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main_task(cfg)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "model.narrow" in err and "Traceback" not in err


def test_shape_mismatch_without_record_is_caught(compose_train, stop_at, tmp_path: Path) -> None:
    """Checkpoints written before the record existed: the shapes are still compared."""
    ckpt = _interrupted_run(compose_train, stop_at, tmp_path / "first")
    state = torch.load(ckpt, weights_only=True)
    del state["gpen_fewshot_record"]
    torch.save(state, ckpt)
    cfg = compose_train("iterations=4", "model.narrow=0.25", output_dir=tmp_path / "second")
    with pytest.raises(ResumeMismatchError, match="size mismatch"):
        check_resume_checkpoint(ckpt, build_module(cfg).state_dict(), hashable_config(cfg))


def test_failed_start_writes_no_checkpoint(compose_train, stop_at, tmp_path: Path) -> None:
    """Lightning's own load fails half-way (iteration restored, weights not): nothing may be saved."""
    ckpt = _interrupted_run(compose_train, stop_at, tmp_path / "first")
    cfg = compose_train("iterations=4", "model.narrow=0.25", output_dir=tmp_path / "second")
    module, trainer = build_module(cfg), build_trainer(cfg)
    with pytest.raises(RuntimeError, match="size mismatch"):
        trainer.fit(module, datamodule=instantiate(cfg.data), ckpt_path=str(ckpt))
    assert not (tmp_path / "second" / "checkpoints" / "last.ckpt").exists()


def test_checkpoint_must_hold_what_it_is_labelled_with(compose_train, stop_at, tmp_path: Path) -> None:
    ckpt = _interrupted_run(compose_train, stop_at, tmp_path / "first")
    cfg = compose_train("iterations=4", output_dir=tmp_path / "second")
    expected, recipe = build_module(cfg).state_dict(), hashable_config(cfg)
    check_resume_checkpoint(ckpt, expected, recipe)  # the genuine file passes
    state = torch.load(ckpt, weights_only=True)
    for optimizer in state["optimizer_states"]:  # what the poisoned last.ckpt of the issue held
        optimizer["state"] = {}
    torch.save(state, ckpt)
    with pytest.raises(ResumeMismatchError, match="labelled iteration 2 but holds no optimiser progress"):
        check_resume_checkpoint(ckpt, expected, recipe)


def test_resume_command_repeats_the_overrides_shell_quoted(tmp_path: Path) -> None:
    run_dir = tmp_path / "out puts" / "alice" / "2026-01-01_10-00-00"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- experiment=smoke\n- person=alice\n- iterations=30\n- paths.log_dir=/tmp/my runs\n- resume=true\n")
    command = resume_command(run_dir)
    words = shlex.split(command)
    assert words == ["python", "train.py", "experiment=smoke", "person=alice", "iterations=30",
                     "paths.log_dir=/tmp/my runs", f"resume='{run_dir}'"]


@pytest.mark.subprocess
def test_printed_resume_command_continues_the_run(tmp_path: Path, subprocess_env) -> None:
    """The issue's repro: Ctrl-C, run the printed command (it must finish the run), then resume=true twice."""
    run_dir = tmp_path / "run"
    args = [SEARCHPATH, "data=synthetic", "experiment=smoke", "logger=none", "iterations=400",
            "val_every=400", "callbacks.checkpoint.every_n_iters=5", f"paths.log_dir={tmp_path}",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO_ROOT, env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    printed = re.search(r"continue with: (.+)", output)
    assert printed, output[-2000:]
    words = shlex.split(printed.group(1))
    assert words[:2] == ["python", "train.py"] and "iterations=400" in words and "experiment=smoke" in words
    words = [w for w in words if not w.startswith("iterations=")] + ["iterations=12"]  # finish it quickly
    done = subprocess.run([sys.executable, *words[1:]], cwd=REPO_ROOT, env=subprocess_env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for _ in range(2):
        again = subprocess.run([sys.executable, "train.py", *args[:-1], "iterations=12", "resume=true"],
                               cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-3000:]
