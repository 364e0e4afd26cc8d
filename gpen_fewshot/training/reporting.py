"""What a person run tells the user before and after training: which photos it uses, whether its export can
be registered, and where the export is (printed commands are shell-quoted, so pasted paths with spaces work).
"""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class RegistrationError(OSError):
    """The person's export cannot be registered (the persons folder is not writable)."""


def vetting_summary(person: str, records: Sequence[Any], manifest: Path) -> str:
    """One paragraph: photos used (train / held out), rejected by reason code, each rejected file, manifest.

    Args:
        person: the person's name.
        records: ``PhotoRecord`` of every photo (``decision``, ``split``, ``file``, ``reason``).
        manifest: the manifest.json with every photo's decision.
    """
    used = [r for r in records if r.decision == "used"]
    rejected = [r for r in records if r.decision != "used"]
    holdout = sum(r.split == "holdout" for r in used)
    lines = [f"person {person!r}: {len(used)} of {len(records)} photos used ({len(used) - holdout} training, "
             f"{holdout} held out for validation)"]
    if rejected:
        counts = ", ".join(f"{n} {code}" for code, n in sorted(Counter(r.decision for r in rejected).items()))
        lines.append(f"  {len(rejected)} not used ({counts}):")
        lines += [f"    {r.file}: {r.decision} - {r.reason}" for r in rejected]
    lines.append(f"  every photo's decision: {manifest}")
    return "\n".join(lines)


def check_registrable(export_dir: Path) -> None:
    """Raise before training when ``export_dir`` (``<persons dir>/<name>/weights``) could not be written.

    The registration renames a sibling temporary folder into place, so the nearest existing folder on the
    way must be writable.

    Raises:
        RegistrationError: names the read-only folder and the two ways out.
    """
    folder = export_dir.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RegistrationError(f"{folder}: not writable, so the trained model could not be registered in "
                                f"{export_dir}; make it writable or train with export.register=false")


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:+@-]+")


def hydra_override(key: str, value: str) -> str:
    """``key=value`` for a shell command line: Hydra-quoted when ``value`` holds characters its override
    grammar reads (spaces, commas, ``=``, quotes...), then shell-quoted."""
    if not _PLAIN_VALUE.fullmatch(value):
        value = '"' + value.replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={value}")


def export_lines(path: Path, registered: Path | None, person: str | None, iteration: int,
                 persons_dir_option: Path | None, problem: str | None = None) -> str:
    """The end-of-run message: where the export is, and the commands that evaluate and use it.

    Args:
        path: the run's export (``<run dir>/export``).
        registered: where it was registered, None when it was not.
        person: the person's name; None for a model export without a person (a prior).
        iteration: the exported iteration.
        persons_dir_option: the persons folder when it is not the default one (passed on to the commands).
        problem: why the registration failed, if it did.
    """
    q = shlex.quote
    if person is None:
        return (f"\nExported the model (EMA generator, iteration {iteration}):\n  {path}\n"
                f"  (a prior for few-shot runs: {q(f'model.generator_weights={path}')})")
    lines = [f"\nExported the model of person {person!r} (EMA generator, iteration {iteration}):",
             f"  run export: {path}"]
    if registered is None:
        lines.append(f"  not registered ({problem or 'export.register=false'})")
        use = f"--weights {q(str(path))}"
    else:
        lines.append(f"  registered: {registered}")
        where = f" --persons-dir {q(str(persons_dir_option))}" if persons_dir_option is not None else ""
        use = f"--person {q(person)}{where}"
    evaluate = [hydra_override("person", person), hydra_override("ckpt", str(path.parent))]
    if persons_dir_option is not None:  # where evaluate.py finds the person's photos
        evaluate.append(hydra_override("paths.persons_dir", str(persons_dir_option)))
    lines += ["  compare it with its base model on the held-out photos:",
              f"    python evaluate.py {' '.join(evaluate)}",
              "  restore a photo with it:",
              f"    python restore.py -i photo.jpg -o restored.png {use}"]
    return "\n".join(lines)
