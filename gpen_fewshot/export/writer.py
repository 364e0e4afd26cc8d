"""Writing person exports (see :mod:`gpen_fewshot.export` for the format)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gpen_fewshot.archs.gpen import GeneratorConfig
from gpen_fewshot.export.base import BaseReference, resolve_base
from gpen_fewshot.export.card import person_card
from gpen_fewshot.export.common import (
    CARD_FILE,
    CONFIG_FILE,
    DTYPES,
    EMBEDDING_DIM,
    FORMAT_NAME,
    FORMAT_VERSION,
    MODES,
    OLD_PREFIX,
    PERSON_FILE,
    WEIGHTS_FILE,
    ExportError,
    PersonMetadata,
    package_version,
    recover_export_dir,
)
from gpen_fewshot.export.reader import load_base_state_dict
from gpen_fewshot.faces.alignment import TEMPLATES
from gpen_fewshot.persons import validate_person_name
from gpen_fewshot.utils.atomic import apply_umask, atomic_write_json

log = logging.getLogger(__name__)

# EMA of a frozen tensor can move it by an ulp (d*p + (1-d)*p != p in floating point): not a change.
_CHANGE_RTOL = 1e-5

def export_person(
    generator_ema: nn.Module,
    base_checkpoint: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    person_name: str,
    trainable_param_names: Iterable[str],
    template: str,
    metrics: Mapping[str, Any] | None,
    config_hash: str | None,
    n_photos: int,
    reference_embedding: np.ndarray | Iterable[float] | None,
    mode: str = "delta",
    dtype: str = "fp32",
    identity_loss: str | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> Path:
    """Write a person's fine-tuned generator as an export directory (atomically replacing an old one), with
    its model card (``README.md``).

    Args:
        generator_ema: the fine-tuned ``GPENGenerator`` (EMA weights); any device.
        base_checkpoint: the checkpoint training started from: a weights-registry name, a checkpoint file or
            an export directory. ``None`` only with ``mode="full"``.
        out_dir: export directory to create, e.g. ``default_export_dir(person_name)``.
        person_name: the person's name (validated).
        trainable_param_names: names of the parameters trainable in any stage (stored in delta mode).
        template: alignment template the crops were made with ("gpen" or "ffhq").
        metrics: final validation metrics (numbers).
        config_hash: hash of the training config.
        n_photos: number of photos trained on.
        reference_embedding: the person's reference identity embedding (128,) or None.
        mode: "delta" (only what differs from the base) or "full" (self-contained).
        dtype: "fp32" or "fp16" storage.
        identity_loss: the identity network a loss term of the training read, None when none did.
        recipe: the training recipe shown in the model card (experiment, loss, iterations, learning rates...).

    Returns:
        The export directory.

    Raises:
        ExportError: bad arguments, base missing or not matching the generator's architecture.
    """

    name = validate_person_name(person_name)
    base = resolve_base(base_checkpoint) if base_checkpoint is not None else None
    base_sd = load_base_state_dict(base) if base is not None else None
    tuned = _cpu_state_dict(generator_ema)
    stored = _select_stored(tuned, base_sd, set(trainable_param_names), mode)
    metadata = PersonMetadata(
        name=name,
        base_model=base.name if base else None,
        base_sha256=base.sha256 if base else None,
        config_hash=config_hash,
        n_photos=int(n_photos),
        reference_embedding=_embedding_tuple(reference_embedding),
        metrics=_plain_metrics(metrics or {}),
        package_version=package_version(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        identity_loss=identity_loss,
    )
    config = _config_dict(generator_ema, template, mode, dtype, base, len(stored), tuned)
    person = dataclasses.asdict(metadata)
    return _write_export(Path(out_dir), config, _to_storage(stored, dtype), person,
                         person_card(person, config, recipe))


def export_generator(
    generator: nn.Module,
    out_dir: str | os.PathLike,
    template: str = "gpen",
    name: str | None = None,
    dtype: str = "fp32",
    base_checkpoint: str | os.PathLike | None = None,
) -> Path:
    """Write a whole generator (e.g. a pretrained prior) as a self-contained export directory (no person).

    Args:
        generator: a ``GPENGenerator``.
        out_dir: export directory to create.
        template: alignment template the model expects.
        name: model name recorded in config.json (default: the directory name).
        dtype: "fp32" or "fp16".
        base_checkpoint: the checkpoint the generator was trained from (registry name, file or export
            directory), recorded for provenance and ``strength < 1``; None = none (trained from scratch or
            unknown).

    Returns:
        The export directory.

    Raises:
        ExportError: the base is missing or does not match the generator's architecture.
    """
    tuned = _cpu_state_dict(generator)
    base = resolve_base(base_checkpoint) if base_checkpoint is not None else None
    if base is not None:
        problems = _shape_problems(tuned, load_base_state_dict(base))
        if problems:
            raise ExportError(f"the generator does not match its base checkpoint: {problems}")
    config = _config_dict(generator, template, "full", dtype, base, len(tuned), tuned)
    config["name"] = name or Path(out_dir).name
    return _write_export(Path(out_dir), config, _to_storage(tuned, dtype), None)


def _cpu_state_dict(generator: nn.Module) -> dict[str, Tensor]:
    if not isinstance(getattr(generator, "config", None), GeneratorConfig):
        raise ExportError(f"expected a GPENGenerator with a GeneratorConfig, got {type(generator).__name__}")
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in generator.state_dict().items()}


def _select_stored(tuned: dict[str, Tensor], base_sd: dict[str, Tensor] | None, trainable: set[str],
                   mode: str) -> dict[str, Tensor]:
    """The tensors to write: all (full mode) or the trainable ones plus any other that differs (delta)."""
    if mode not in MODES:
        raise ExportError(f"export mode must be one of {MODES}, got {mode!r}")
    unknown = sorted(trainable - tuned.keys())
    if unknown:
        raise ExportError(f"{len(unknown)} trainable name(s) are not generator tensors (first: {unknown[0]})")
    if base_sd is not None:
        problems = _shape_problems(tuned, base_sd)
        if problems:
            raise ExportError(f"the generator does not match its base checkpoint: {problems}")
    if mode == "full":
        return tuned
    if base_sd is None:
        raise ExportError("mode='delta' needs base_checkpoint (the weights training started from); "
                          "pass it or use mode='full'")
    changed = [k for k in tuned if k not in trainable and not torch.allclose(tuned[k], base_sd[k],
                                                                                rtol=_CHANGE_RTOL, atol=0.0)]
    if changed:
        log.warning("%d tensor(s) outside the trainable set differ from the base and are stored too "
                    "(first: %s)", len(changed), changed[0])
    keep = trainable | set(changed)
    return {k: v for k, v in tuned.items() if k in keep}


def _shape_problems(state: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> str:
    """'' when ``state``'s keys are a subset of ``reference``'s with equal shapes, else a description."""
    unknown = [k for k in state if k not in reference]
    if unknown:
        return f"{len(unknown)} key(s) not in the base (first: {unknown[0]})"
    wrong = [k for k in state if tuple(state[k].shape) != tuple(reference[k].shape)]
    if wrong:
        k = wrong[0]
        return (f"{len(wrong)} tensor(s) with a different shape (first: {k}: {tuple(state[k].shape)} vs "
                f"{tuple(reference[k].shape)} in the base)")
    return ""


def _to_storage(tensors: dict[str, Tensor], dtype: str) -> dict[str, Tensor]:
    if dtype not in DTYPES:
        raise ExportError(f"export dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = {k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}
    overflow = [k for k, v in out.items() if not torch.isfinite(v).all()]
    if overflow:
        raise ExportError(f"{len(overflow)} tensor(s) are not finite in {dtype} (first: {overflow[0]})")
    return out


def _embedding_tuple(embedding: np.ndarray | Iterable[float] | None) -> tuple[float, ...] | None:
    if embedding is None:
        return None
    values = np.asarray(list(embedding) if not isinstance(embedding, np.ndarray) else embedding, np.float64)
    if values.shape != (EMBEDDING_DIM,) or not np.isfinite(values).all():
        raise ExportError(f"reference_embedding must be {EMBEDDING_DIM} finite floats, "
                          f"got shape {values.shape}")
    return tuple(float(v) for v in values)


def _plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            raise ExportError(f"metric {key!r} is not a number: {value!r}") from None
    return out


def _config_dict(generator: nn.Module, template: str, mode: str, dtype: str, base: BaseReference | None,
                 n_stored: int, tuned: Mapping[str, Tensor]) -> dict[str, Any]:

    if template not in TEMPLATES:
        raise ExportError(f"unknown alignment template {template!r}; choose one of {sorted(TEMPLATES)}")
    arch = dataclasses.asdict(generator.config)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": "GPENGenerator",
        "generator": arch,
        "size": int(arch["size"]),
        "template": template,
        "mode": mode,
        "dtype": dtype,
        "base": None if base is None else {"name": base.name, "sha256": base.sha256, "path": str(base.path)},
        "tensors": {"stored": n_stored, "total": len(tuned)},
    }


def _write_export(out_dir: Path, config: dict, tensors: dict[str, Tensor], person: dict | None,
                  card: str | None = None) -> Path:
    """Write into a temporary sibling directory, then rename it over ``out_dir``."""
    from safetensors.torch import save_file

    with _staged(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt", FORMAT_NAME: str(FORMAT_VERSION)})
        atomic_write_json(tmp / CONFIG_FILE, config)
        if person is not None:
            atomic_write_json(tmp / PERSON_FILE, person)
        if card is not None:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out_dir


def copy_export(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy an export directory (its files, not sub-folders) to ``out_dir``, atomically replacing an old one.

    Returns:
        ``out_dir``.

    Raises:
        ExportError: ``source`` is not an export directory.
    """
    source, out_dir = Path(source), Path(out_dir)
    if not (source / CONFIG_FILE).is_file() or not (source / WEIGHTS_FILE).is_file():
        raise ExportError(f"{source}: not an export directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    with _staged(out_dir) as tmp:
        for file in source.iterdir():
            if file.is_file():
                shutil.copy2(file, tmp / file.name)
    return out_dir


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill: on success it replaces ``out_dir`` (umask applied, old export kept
    aside until the rename is done), on any failure it is removed and ``out_dir`` is untouched."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        apply_umask(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is moved aside first and deleted afterwards.

    A kill between the two renames leaves ``target`` missing and the previous export under
    ``.<name>.old.<pid>``: :func:`recover_export_dir` puts it back (here, and whenever an export is looked
    up).
    """
    recover_export_dir(target)
    old = None
    if target.exists():
        old = target.with_name(f"{OLD_PREFIX.format(name=target.name)}{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
