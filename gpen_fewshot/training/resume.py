"""Find the checkpoint a run resumes from (``ckpt_path=...`` or ``resume=true`` / ``resume=<run dir>``)."""

from __future__ import annotations

import os
from pathlib import Path

LAST_CHECKPOINT = "last.ckpt"
CHECKPOINT_DIR = "checkpoints"


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
