"""The base checkpoint a person export refers to: resolution (name / file / directory) and sha256.

Its tensors are read by :func:`gpen_fewshot.export.reader.load_base_state_dict`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpen_fewshot.export.common import CONFIG_FILE, WEIGHTS_FILE, ExportError
from gpen_fewshot.utils.hashing import sha256_file
from gpen_fewshot.weights import REGISTRY, destination, weight_path


@dataclass(frozen=True)
class BaseReference:
    """A resolved base checkpoint.

    Attributes:
        name: registry name (e.g. "GPEN-BFR-512"), else the file stem or export directory name.
        sha256: hex sha256 of the checkpoint file (of ``model.safetensors`` for an export directory).
        path: the checkpoint file or export directory.
    """

    name: str
    sha256: str
    path: Path


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, hashed once per process


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached while its size and mtime are unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _registry_name_of(path: Path) -> str | None:
    """The registry name whose file is ``path``, if any."""

    resolved = path.resolve()
    for name in REGISTRY:
        try:
            if destination(name).resolve() == resolved:
                return name
        except OSError:
            continue
    return None


def _reference_for_path(path: Path) -> BaseReference:
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not (path / CONFIG_FILE).is_file() or not weights.is_file():
            raise ExportError(f"{path}: base directory is not an export "
                              f"(needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        return BaseReference(path.name, file_sha256(weights), path)
    return BaseReference(_registry_name_of(path) or path.stem, file_sha256(path), path)


def resolve_base(base: str | os.PathLike) -> BaseReference:
    """Resolve a base checkpoint given as a path (file or export directory) or a weights-registry name.

    Raises:
        ExportError: neither an existing path nor a registry name whose file is on disk; the message says
            where the file should be.
    """

    path = Path(base).expanduser()
    if path.exists():
        return _reference_for_path(path)
    name = str(base)
    if name in REGISTRY:
        try:
            file = weight_path(name, download=False)
            return BaseReference(name, file_sha256(file), file)
        except (FileNotFoundError, ValueError) as err:
            raise ExportError(str(err)) from None
    raise ExportError(f"base checkpoint {name!r}: no such file or directory, and not a known weights name "
                      f"({', '.join(n for n, s in REGISTRY.items() if s.kind == 'generator')})")


def resolve_recorded_base(name: str | None, sha256: str | None, path_hint: str | None,
                          override: str | os.PathLike | None, export_dir: Path) -> BaseReference:
    """Find the base an export was written against and check its sha256.

    Search order: ``override``; the registry file of ``name``; the path recorded at export time.

    Raises:
        ExportError: not found, or the sha256 differs (expected and actual are named).
    """
    candidates: list[str | os.PathLike] = [override] if override is not None else []
    if override is None:
        if name in REGISTRY and destination(name).exists():
            candidates.append(name)
        if path_hint and Path(path_hint).exists():
            candidates.append(path_hint)
    if not candidates:
        raise ExportError(f"{export_dir}: its base checkpoint {name!r} (sha256 {sha256}) was not found "
                          f"(recorded path: {path_hint}); put it back or pass the base explicitly")
    ref = resolve_base(candidates[0])
    if sha256 and ref.sha256 != sha256:
        raise ExportError(f"{export_dir}: base checkpoint mismatch: expected {name!r} with sha256 {sha256}, "
                          f"got {ref.path} with sha256 {ref.sha256}")
    return ref
