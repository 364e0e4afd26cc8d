"""Find the checkpoint a run resumes from (``ckpt_path=...`` or ``resume=true`` / ``resume=<run dir>``)."""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from gpen_fewshot.archs.checkpoints import read_checkpoint_file

LAST_CHECKPOINT = "last.ckpt"
CHECKPOINT_DIR = "checkpoints"

log = logging.getLogger(__name__)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def latest_checkpoint(runs_dir: Path, exclude: Path | None = None) -> Path | None:
    """Most recently written ``checkpoints/last.ckpt`` below ``runs_dir`` (any depth), or ``None``."""
    if not runs_dir.is_dir():
        return None
    found = [p for p in runs_dir.glob(f"**/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}")
             if exclude is None or not _is_within(p, exclude)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def _from_run_dir(run_dir: Path) -> Path:
    for candidate in (run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT, run_dir / LAST_CHECKPOINT):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run_dir}: resume=<run dir> but it holds no {CHECKPOINT_DIR}/{LAST_CHECKPOINT}")


def find_resume_checkpoint(ckpt_path: str | os.PathLike | None, resume: bool | str | None, runs_dir: Path,
                           current_run_dir: Path | None = None) -> Path | None:
    """The checkpoint to resume from, or ``None`` for a fresh run.

    Args:
        ckpt_path: explicit checkpoint file (wins over ``resume``).
        resume: ``False``/``None``: fresh run; ``True``: the latest ``last.ckpt`` of this person's runs;
            a path: that run directory (or checkpoint file).
        runs_dir: folder holding this person's runs (``outputs/<person>``).
        current_run_dir: the new run's own folder, never picked.

    Raises:
        FileNotFoundError: the requested checkpoint does not exist (the message says where it looked).
    """
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ckpt_path does not exist")
        return path
    if resume is None or resume is False or str(resume).lower() in ("false", "no", "0", ""):
        return None
    if resume is True or str(resume).lower() in ("true", "yes", "1", "last"):
        path = latest_checkpoint(runs_dir, exclude=current_run_dir)
        if path is None:
            raise FileNotFoundError(f"resume=true but no {CHECKPOINT_DIR}/{LAST_CHECKPOINT} was found under "
                                    f"{runs_dir}; start a fresh run (resume=false) or pass ckpt_path=")
        return path
    target = Path(str(resume)).expanduser()
    if target.is_file():
        return target
    if target.is_dir():
        return _from_run_dir(target)
    raise FileNotFoundError(f"{target}: resume=<run dir> does not exist")


# ------------------------------------------------------------------------------------ resume commands
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"  # holds the hydra.* overrides (e.g. hydra.searchpath)
_NOT_REPEATED = ("resume", "ckpt_path")  # replaced by the resume target in a printed resume command
# hydra.* overrides that place or launch this one run: the resumed run gets a folder of its own
_HYDRA_NOT_REPEATED = ("hydra.run.", "hydra.sweep.", "hydra.mode", "hydra.job.num")
_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./@~+-]*")  # a Hydra override value needing no quotes


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def recorded_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (Hydra's ``.hydra/hydra.yaml`` for ``hydra.*`` ones,
    then ``.hydra/overrides.yaml``), or ``[]`` for a folder Hydra did not create."""
    hydra = _read_yaml(Path(run_dir) / HYDRA_FILE)
    hydra_overrides = (hydra or {}).get("hydra", {}).get("overrides", {}).get("hydra", []) \
        if isinstance(hydra, dict) else []
    task = _read_yaml(Path(run_dir) / OVERRIDES_FILE)
    kept = [str(o) for o in hydra_overrides or [] if not str(o).startswith(_HYDRA_NOT_REPEATED)]
    return kept + ([str(o) for o in task] if isinstance(task, list) else [])


def _hydra_value(text: str) -> str:
    """``text`` as a Hydra override value: quoted when it holds characters Hydra's grammar gives a meaning
    (a ``,`` would make a sweep, ``:`` or ``=`` an interpolation or a second key)."""
    if _HYDRA_PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(run_dir: Path, script: str = "train.py") -> str:
    """The shell command that continues ``run_dir``: its own overrides plus ``resume=<run dir>``.

    Every word is shell-quoted, so paths with spaces survive a paste into a terminal.
    """
    kept = [o for o in recorded_overrides(run_dir) if o.split("=", 1)[0].lstrip("+~") not in _NOT_REPEATED]
    words = ["python", script, *kept, f"resume={_hydra_value(str(run_dir))}"]
    return " ".join(shlex.quote(word) for word in words)


# ------------------------------------------------------------------------------- checkpoint contents
# what a checkpoint holds, written beside it (training.callbacks.RunRecord)
RECORD_KEY = "gpen_fewshot_record"
MODULE_KEY = "gpen_fewshot"  # GPENFewShotModule's own entry (iteration, stage, network configs)
_MUST_MATCH = ("model", "freezing")  # a resume with other values cannot load the weights / optimiser groups
_IRRELEVANT_ON_RESUME = ("model.init", "model.download")  # only decide how the first run got its weights


class ResumeMismatchError(ValueError):
    """A checkpoint cannot continue this run: wrong architecture, other recipe, or not what it claims to
    hold."""


def optimizer_steps(optimizer_states: list[dict[str, Any]]) -> list[int]:
    """Per optimiser, the largest ``step`` count of its parameters (0 when it never stepped)."""
    return [max((int(s.get("step", 0)) for s in opt.get("state", {}).values()), default=0)
            for opt in optimizer_states]


def contents_record(iteration: int, checkpoint: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The record of what ``checkpoint`` holds: iteration, optimiser steps and the training recipe."""
    return {"iteration": int(iteration),
            "optimizer_steps": optimizer_steps(checkpoint.get("optimizer_states", [])), "recipe": recipe}


def check_resume_checkpoint(path: Path, expected: dict[str, Any], recipe: dict[str, Any]) -> None:
    """Fail before anything is written when ``path`` cannot continue a run of this config.

    Args:
        path: the checkpoint to resume from.
        expected: the configured module's ``state_dict()`` (names and shapes are compared).
        recipe: this run's training recipe (``run.hashable_config``).

    Raises:
        CheckpointError: unreadable, truncated or pickled-object file (one line, names the file).
        ResumeMismatchError: not a training checkpoint, another architecture or freezing schedule, or a file
            whose contents do not match its record; the message says how to resume correctly.
    """

    checkpoint = read_checkpoint_file(path)
    hint = _resume_hint(path)
    if (not isinstance(checkpoint, dict) or
            not {"state_dict", "optimizer_states", MODULE_KEY} <= checkpoint.keys()):
        raise ResumeMismatchError(f"{path}: not a training checkpoint of this project (no weights, optimiser "
                                  "state and iteration); to start from its weights use "
                                  "model.generator_weights=")
    record = checkpoint.get(RECORD_KEY)
    if isinstance(record, dict) and isinstance(record.get("recipe"), dict):
        _compare_recipes(record["recipe"], recipe, path, hint)
    _compare_shapes(checkpoint["state_dict"], expected, path, hint)
    _check_contents(checkpoint, record, path)


def _resume_hint(path: Path) -> str:
    """How to resume the run that wrote ``path`` (its run folder: ``<run>/checkpoints/last.ckpt``)."""
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    if (run_dir / OVERRIDES_FILE).is_file():
        return f"; resume it with its own settings: {resume_command(run_dir)}"
    return "; resume with the overrides the run was started with"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"model.size": 32, ...}``."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, sub in tree.items():
        flat.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _compare_recipes(recorded: dict[str, Any], current: dict[str, Any], path: Path, hint: str) -> None:
    """Architecture / freezing differences are errors; other recipe changes (e.g. more iterations) a
    warning."""
    old, new = _flatten(recorded), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    fatal = [k for k in changed if k.split(".")[0] in _MUST_MATCH and k not in _IRRELEVANT_ON_RESUME]
    if fatal:
        shown = ", ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in fatal[:3])
        raise ResumeMismatchError(f"{path}: the checkpoint does not match this config ({shown}){hint}")
    if changed:
        log.warning("resuming %s with changed settings: %s", path, ", ".join(changed[:8]))


def _compare_shapes(stored: dict[str, Any], expected: dict[str, Any], path: Path, hint: str) -> None:
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    wrong = [k for k in expected if k in stored and tuple(stored[k].shape) != tuple(expected[k].shape)]
    problems = []
    if wrong:
        problems.append(f"size mismatch for {wrong[0]}: {tuple(stored[wrong[0]].shape)} in the checkpoint, "
                        f"{tuple(expected[wrong[0]].shape)} in this model ({len(wrong)} in all)")
    if missing or unexpected:
        problems.append(f"{len(missing)} missing and {len(unexpected)} unexpected key(s) "
                        f"(first: {(missing or unexpected)[0]})")
    if problems:
        raise ResumeMismatchError(f"{path}: the checkpoint does not fit the configured model: "
                                  + "; ".join(problems) + hint)


def _check_contents(checkpoint: dict[str, Any], record: Any, path: Path) -> None:
    """The file holds what it is labelled with: its iteration's optimiser progress (and its own record)."""
    iteration = int(checkpoint[MODULE_KEY].get("iteration", 0))
    steps = optimizer_steps(checkpoint["optimizer_states"])
    if iteration > 0 and not any(steps):
        raise ResumeMismatchError(f"{path}: labelled iteration {iteration} but holds no optimiser progress "
                                  "(written by a failed start?); resume from an older checkpoint or "
                                  "start afresh")
    if (isinstance(record, dict) and
            (record.get("iteration"), record.get("optimizer_steps")) != (iteration, steps)):
        raise ResumeMismatchError(f"{path}: holds iteration {iteration} (optimiser steps {steps}) but "
                                  f"records iteration {record.get('iteration')} (steps "
                                  f"{record.get('optimizer_steps')})")
