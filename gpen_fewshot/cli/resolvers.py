"""OmegaConf resolvers used by ``configs/``: the Hydra edge registers them (``register_resolvers``) before it
composes a config (``train.py``, ``evaluate.py``, the study script, the tests)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from gpen_fewshot.cli.errors import exit_with_error, full_error_wanted
from gpen_fewshot.persons import person_photo_dir, validate_person_name

# module global: tests patch it here
from gpen_fewshot.utils.precision import cpu_bf16_supported  # noqa: F401

_MAX_SUFFIX = 1000
_claimed: dict[str, str] = {}  # requested run folder -> the folder this process created for it


def person_dir(person: str, persons_dir: str, demo_dir: str) -> str:
    """``${person_dir:...}``: the photo folder of ``person``
    (:func:`gpen_fewshot.persons.person_photo_dir`)."""
    return str(person_photo_dir(person, persons_dir, demo_dir))


def cpu_precision(preferred: str = "bf16-mixed") -> str:
    """Lightning precision for a CPU run: ``preferred`` where the CPU runs bf16 natively, else ``32-true``."""
    return preferred if cpu_bf16_supported() else "32-true"


def safe_person(person: object) -> str:
    """``person`` when it is a safe folder name (``data.person.validate_person_name``); used inside the run
    folder's path so that a name like ``../../x`` is refused before Hydra creates any folder.

    Raises:
        SystemExit: (code 1, after one ``error:`` line) for a name that could escape its folder. Hydra
            resolves the run folder before the task starts, outside our error handling, and formats resolver
            errors as a traceback; with ``HYDRA_FULL_ERROR=1`` the ValueError itself is raised.
    """
    try:
        return validate_person_name(str(person))
    except ValueError as error:
        if full_error_wanted():
            raise
        exit_with_error(error)


def unique_dir(path: str) -> str:
    """Create the run folder ``path`` exclusively and return it; when another run already took it (two runs
    started in the same second) create ``path_1``, ``path_2``, ... instead. The same request in the same
    process returns the same folder (Hydra resolves ``hydra.run.dir`` more than once)."""
    if path in _claimed:
        return _claimed[path]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(_MAX_SUFFIX):
        candidate = path if suffix == 0 else f"{path}_{suffix}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _claimed[path] = candidate
        return candidate
    raise FileExistsError(f"{path}: {_MAX_SUFFIX} run folders with this name already exist")


def register_resolvers() -> None:
    """Register ``${person_dir:...}``, ``${safe_person:...}``, ``${unique_dir:...}`` and ``${cpu_precision:}``
    (idempotent)."""
    for name, function in (("person_dir", person_dir), ("safe_person", safe_person),
                           ("unique_dir", unique_dir), ("cpu_precision", cpu_precision)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
