"""Export format constants, the error type, person metadata and where person exports live."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from gpen_fewshot.persons import weights_dir as default_export_dir

FORMAT_NAME = "gpen-fewshot-generator"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PERSON_FILE = "person.json"
CARD_FILE = "README.md"  # person exports: the model card (gpen_fewshot.export.card)
EMBEDDING_DIM = 128
MODES = ("delta", "full")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export cannot be written or loaded; the message names the directory/file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class PersonMetadata:
    """Contents of ``person.json``.

    Attributes:
        name: person name.
        base_model: name of the base checkpoint training started from (registry name, file stem or export
            directory name), None when trained without one.
        base_sha256: sha256 of the base checkpoint file (``model.safetensors`` for an export directory).
        config_hash: hash of the training config.
        n_photos: number of photos trained on.
        reference_embedding: 128 floats (dlib identity embedding of the person), or None.
        metrics: final validation metrics.
        package_version: gpen-fewshot version that wrote the export.
        created: ISO 8601 UTC creation time.
        identity_loss: the identity network a loss term of the training read (``"mobilefacenet"``,
            ``"irse50"``), None when no term did (and in exports written before this was recorded). Reports
            mark that network's identity metric as trained on.
    """

    name: str
    base_model: str | None
    base_sha256: str | None
    config_hash: str | None
    n_photos: int
    reference_embedding: tuple[float, ...] | None
    metrics: dict[str, float]
    package_version: str
    created: str
    identity_loss: str | None = None

    @property
    def embedding(self) -> np.ndarray | None:
        """Reference identity embedding as float64 (128,), or None when none was stored."""
        if self.reference_embedding is None:
            return None
        return np.asarray(self.reference_embedding, dtype=np.float64)

    @classmethod
    def from_dict(cls, data: dict, source: Path) -> PersonMetadata:
        """Parse ``person.json`` content; ``source`` names the file in error messages."""
        try:
            embedding = data.get("reference_embedding")
            if embedding is not None:
                embedding = tuple(float(v) for v in embedding)
                if len(embedding) != EMBEDDING_DIM:
                    raise ValueError(f"reference_embedding has {len(embedding)} values, "
                                     f"expected {EMBEDDING_DIM}")
            return cls(
                name=str(data["name"]), base_model=data.get("base_model"),
                base_sha256=data.get("base_sha256"),
                config_hash=data.get("config_hash"), n_photos=int(data.get("n_photos", 0)),
                reference_embedding=embedding,
                metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
                package_version=str(data.get("package_version", "unknown")),
                created=str(data.get("created", "")),
                identity_loss=_optional_str(data.get("identity_loss")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ExportError(f"{source}: invalid person metadata ({err})") from None


def _optional_str(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {value!r}")
    return value


OLD_PREFIX = ".{name}.old."  # where _replace_dir moves the previous export while it renames the new one in


def recover_export_dir(target: Path) -> bool:
    """Put back the previous export when a replacement was killed between its two renames.

    Returns:
        True when ``target`` was missing and a complete export was moved back from ``.<name>.old.<pid>``.
    """
    if target.exists() or not target.parent.is_dir():
        return False
    prefix = OLD_PREFIX.format(name=target.name)
    aside = [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()
             and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()]
    if not aside:
        return False
    newest = max(aside, key=lambda p: p.stat().st_mtime_ns)
    try:
        os.replace(newest, target)
    except OSError:  # another process recovered it first, or the folder is read-only: loading reports it
        return target.exists()
    log.warning("%s: restored the previous export from %s (an earlier replacement was interrupted)", target,
                newest.name)
    return True


def find_export_dir(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Export directory for a person name or a path (the export itself or a person folder with ``weights/``).

    Raises:
        ExportError: nothing exported there; the message names the place that was searched.
    """
    path = Path(name_or_path).expanduser()
    recover_export_dir(path)
    recover_export_dir(path / "weights")
    looks_like_path = path.exists() or os.sep in str(name_or_path) or str(name_or_path).startswith(".")
    if looks_like_path:
        for candidate in (path, path / "weights"):
            if (candidate / CONFIG_FILE).is_file():
                return candidate
        what = "does not exist" if not path.exists() else f"has no {CONFIG_FILE} (not a gpen-fewshot export)"
        raise ExportError(f"{path}: {what}")
    try:
        folder = default_export_dir(str(name_or_path), root)
    except ValueError as err:
        raise ExportError(str(err)) from None
    recover_export_dir(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ExportError(f"person {str(name_or_path)!r}: no exported weights in {folder} (train them with "
                          f"`python train.py person={name_or_path}`, or pass the export directory's path)")
    return folder


def discover_persons(root: str | os.PathLike) -> list[Path]:
    """Person export directories under ``root`` (``<root>/<name>/weights/`` or ``<root>/<name>/``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"{root}: persons directory does not exist")
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        for candidate in (child / "weights", child):
            if (candidate / CONFIG_FILE).is_file() and (candidate / PERSON_FILE).is_file():
                found.append(candidate)
                break
    return found


def package_version() -> str:
    """The installed gpen-fewshot version, recorded in exports ("unknown" when run from an uninstalled
    tree)."""
    from importlib import metadata

    try:
        return metadata.version("gpen-fewshot")
    except metadata.PackageNotFoundError:
        return "unknown"
