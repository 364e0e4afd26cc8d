"""OmegaConf resolvers used by ``configs/`` (registered once, on import of ``gpen_fewshot.training``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

# module global: tests patch it here
from gpen_fewshot.utils.precision import cpu_bf16_supported  # noqa: F401

DEMO_PREFIX = "person_"
_MAX_SUFFIX = 1000
_claimed: dict[str, str] = {}  # requested run folder -> the folder this process created for it


def person_dir(person: str, persons_dir: str, demo_dir: str) -> str:
    """Photo folder of ``person``: ``<persons_dir>/<person>`` if it holds photos, else the bundled
    ``<demo_dir>/person_<person>`` if that exists, else ``<persons_dir>/<person>`` (reported missing later).

    A persons-dir folder without photos (only ``weights/``, registered by a finished run on the demo person)
    does not hide the demo photos.
    """
    own = Path(persons_dir) / str(person)
    demo = Path(demo_dir) / f"{DEMO_PREFIX}{person}"
    if demo.is_dir() and not _has_photos(own):
        return str(demo)
    return str(own)


def _has_photos(folder: Path) -> bool:
    from gpen_fewshot.data.io import IMAGE_EXTENSIONS

    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                                   for p in folder.iterdir())


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
        return _checked_name(str(person))
    except ValueError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _checked_name(name: str) -> str:
    try:
        from gpen_fewshot.data.person import validate_person_name
    except ImportError:  # the face pipeline is optional: keep the essential check
        if name in ("", ".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"invalid person name {name!r}") from None
        return name
    return validate_person_name(name)


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
