"""``python evaluate.py person=alice`` without ``ckpt``: the person's registered export against its base, or
one line saying how to make one (issue 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli.evaluate import _ckpt
from gpen_fewshot.evaluation.models import ModelSpecError, registered_export, resolve_models
from gpen_fewshot.export import default_export_dir
from gpen_fewshot.training.export import export_run, register_person_export
from gpen_fewshot.training.freezing import ResolvedStage

REPO = Path(__file__).resolve().parents[2]
TINY = {"style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.125}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _register(tmp_path: Path, person: str, persons: Path) -> tuple[Path, Path]:
    """A base file and ``person``'s export tuned from it, registered under ``persons``."""
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(GPENGenerator(32, **TINY).state_dict(), base)
    torch.manual_seed(1)
    tuned = GPENGenerator(32, **TINY).eval()
    everything = ResolvedStage(0, "full", 0, frozenset(n for n, _ in tuned.named_parameters()), frozenset())
    export = export_run(tuned, [everything], str(base), tmp_path / "run" / "export", "gpen", person=person)
    return base, register_person_export(export, person, persons)


def test_no_ckpt_means_the_registered_export_against_its_base(tmp_path: Path) -> None:
    persons = tmp_path / "persons"
    base, registered = _register(tmp_path, "alice", persons)
    assert registered == default_export_dir("alice", persons)
    cfg = {"person": "alice", "ckpt": None, "paths": {"persons_dir": str(persons)}}
    assert _ckpt(cfg) == str(registered)
    specs = resolve_models(_ckpt(cfg))
    assert [(s.role, s.source) for s in specs] == [("base", str(base)), ("tuned", str(registered))]
    assert _ckpt({**cfg, "ckpt": "elsewhere"}) == "elsewhere"  # a given ckpt wins


def test_no_registered_export_is_one_line_saying_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"no registered export in .*python train.py person=bob") as err:
        registered_export("bob", tmp_path / "persons")
    assert "\n" not in str(err.value)
    # the base alone, as before
    assert registered_export("bob", tmp_path / "persons", base="GPEN-BFR-512") is None
    with pytest.raises(ModelSpecError, match="person: "):
        registered_export("../etc", tmp_path / "persons")


def test_evaluate_py_person_only_on_the_demo_photos(tmp_path: Path, subprocess_env: dict) -> None:
    """The registered export of the demo person, found by name, evaluated end to end (PSNR only, 1 level)."""
    persons = Path(subprocess_env["GPEN_FEWSHOT_PERSONS_DIR"])
    _, registered = _register(tmp_path, "obama", persons)
    out = tmp_path / "eval"
    common = [sys.executable, "evaluate.py", f"out_dir={out}", "protocol.levels=[moderate]",
              "protocol.copies=1", "metrics.ssim=false", "metrics.lpips=false", "metrics.fid=false",
              "metrics.niqe=false", "metrics.identity=false", "device=cpu", "progress=false",
              "save_inputs=false", f"cache_dir={tmp_path / 'prepared'}"]
    proc = subprocess.run([*common, "person=obama"], cwd=REPO, env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(registered) in proc.stdout + proc.stderr and (out / "report.md").is_file()
    quiet = {k: v for k, v in subprocess_env.items() if k != "HYDRA_FULL_ERROR"}  # the user's view
    missing = subprocess.run([*common, "person=nobody"], cwd=REPO, env=quiet, capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: no ckpt given and person 'nobody' has no registered export in "
        f"{persons / 'nobody' / 'weights'}: train one with `python train.py person=nobody`, or pass "
        "ckpt=<run dir or export>"]
