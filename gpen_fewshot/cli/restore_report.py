"""What ``gpen-restore`` prints: per photo, faces found / restored / skipped and why (faces with the same
outcome on one line), where the outputs went, and the run's total."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gpen_fewshot.restore.records import KEPT_INPUT, RESTORED, SKIPPED


def face_counts(faces: Sequence) -> str:
    """``29 faces found: 27 restored, 2 skipped`` (zero counts left out)."""
    restored = sum(f.decision == RESTORED for f in faces)
    kept = sum(f.decision == KEPT_INPUT for f in faces)
    skipped = sum(f.decision == SKIPPED for f in faces)
    parts = ([f"{restored} restored"] + [f"{kept} kept as input"] * bool(kept)
             + [f"{skipped} skipped"] * bool(skipped))
    return f"{len(faces)} face{'s' * (len(faces) != 1)} found: {', '.join(parts)}"


def face_lines(faces: Sequence, base_label: str) -> list[str]:
    """One line per distinct outcome, naming its faces: ``faces 0-26, 28: restored with gpen-compact-256
    (base)``."""
    groups: dict[str, list[int]] = {}
    for face in faces:
        groups.setdefault(face.outcome(base_label), []).append(face.index)
    return [f"{'faces' if len(indices) > 1 else 'face'} {_ranges(indices)}: {outcome}"
            for outcome, indices in groups.items()]


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    spans: list[list[int]] = []
    for index in sorted(indices):
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def written_line(target: Path, extras: Sequence[Path]) -> str:
    """``wrote out.png (+ out.png.json, out_compare.png)``."""
    shown = ", ".join(_short(p) for p in extras)
    return f"wrote {_short(target)}" + (f" (+ {shown})" if shown else "")


def final_line(restored: int, total: int, failures: int, skipped: int, seconds: float,
               pairs: Sequence[tuple[Path, Path]]) -> str:
    """The run in one line: photos restored, failures, skipped files, total time, where the outputs are."""
    line = f"restored {restored} of {total} photo(s) in {_duration(seconds)}"
    if failures:
        line += f"; {failures} failure(s)"
    if skipped:
        line += f"; {skipped} file(s) skipped (listed above)"
    if restored:
        folders = {target.parent.resolve() for _, target in pairs}
        where = folders.pop() if len(folders) == 1 else Path(os.path.commonpath([str(f) for f in folders]))
        line += f"; outputs in {where}{os.sep}" if len(pairs) > 1 else f"; output: {pairs[0][1].resolve()}"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _short(path: Path) -> str:
    """The path relative to the current folder when it is inside it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
