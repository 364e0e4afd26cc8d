"""Persons: the name rules, where person folders live, and the folders of one person.

The one home of these rules for training, evaluation, export and restore:

- a **person name** is a safe folder name (:func:`validate_person_name`); it names the photo folder, the run
  folder and the weights folder;
- the **persons root** is ``$GPEN_FEWSHOT_PERSONS_DIR``, else ``<repo>/data/persons`` in a source checkout,
  else ``./data/persons`` (:func:`persons_root`; ``configs/paths/default.yaml`` reads the same variable);
- a person's **photos** are ``<root>/<name>/`` (the bundled demo person ``data/demo/person_<name>/`` stands in
  when that folder holds no photos, :func:`person_photo_dir`), and the **registered weights** are
  ``<root>/<name>/weights/`` (:func:`weights_dir`), where ``restore.py --person <name>`` looks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gpen_fewshot.utils.checkout import source_root
from gpen_fewshot.utils.image import IMAGE_EXTENSIONS

ENV_PERSONS_DIR = "GPEN_FEWSHOT_PERSONS_DIR"
DEMO_PREFIX = "person_"  # bundled demo persons: data/demo/person_<name>/
WEIGHTS_SUBDIR = "weights"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def validate_person_name(name: str) -> str:
    """Return ``name`` if it is a safe person name, else raise ValueError.

    Allowed: letters, digits, ``_``, ``-`` and ``.`` (not first), at most 100 characters, no ``..``. This
    excludes path separators, absolute paths, parent references and hidden names.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid person name {name!r}: use letters, digits, '_', '-' and '.' (not first), "
                         "at most 100 characters, no '/' or '..'")
    return name


def persons_root() -> Path:
    """Folder of person folders: ``$GPEN_FEWSHOT_PERSONS_DIR``, else ``<repo>/data/persons`` in a source
    checkout, else ``./data/persons``."""
    env = os.environ.get(ENV_PERSONS_DIR)
    if env:
        return Path(env).expanduser()
    repo = source_root()
    return (repo if repo is not None else Path()) / "data" / "persons"


def resolve_person_dir(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An existing folder as given, else a validated person name under ``root`` (default ``persons_root()``).

    Raises:
        ValueError: not a folder and not a valid person name.
        FileNotFoundError: a valid name without a folder.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if "/" in str(name_or_path) or os.sep in str(name_or_path):
        raise FileNotFoundError(f"{name_or_path}: no such folder")
    name = validate_person_name(str(name_or_path))
    folder = Path(root) if root is not None else persons_root()
    if not (folder / name).is_dir():
        raise FileNotFoundError(f"no photo folder for person {name!r}: {folder / name} does not exist")
    return folder / name


def person_photo_dir(person: str, persons_dir: str | os.PathLike, demo_dir: str | os.PathLike) -> Path:
    """Photo folder of ``person``: ``<persons_dir>/<person>`` if it holds photos, else the bundled
    ``<demo_dir>/person_<person>`` if that exists, else ``<persons_dir>/<person>`` (reported missing later).

    A persons-dir folder without photos (only ``weights/``, registered by a finished run on the demo person)
    does not hide the demo photos.
    """
    own = Path(persons_dir) / str(person)
    demo = Path(demo_dir) / f"{DEMO_PREFIX}{person}"
    if demo.is_dir() and not _has_photos(own):
        return demo
    return own


def weights_dir(person: str, root: str | os.PathLike | None = None) -> Path:
    """Where a person's weights are registered: ``<root or persons_root()>/<name>/weights``."""
    return Path(root if root is not None else persons_root()) / validate_person_name(person) / WEIGHTS_SUBDIR


def _has_photos(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                                   for p in folder.iterdir())
