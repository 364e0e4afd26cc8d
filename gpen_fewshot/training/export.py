"""End-of-run export of a trained generator, in the format of :mod:`gpen_fewshot.export`.

What a finished run writes into ``<run dir>/export/``:

- a **person run** (photos of one person): a person export (``export_person``): ``config.json``,
  ``model.safetensors``, ``person.json`` (person name, base model name + sha256, training-config hash,
  number of training photos, the person's reference identity embedding = mean dlib embedding of the training
  crops, final validation metrics) and ``README.md`` (its model card: base, photos, recipe, metrics, intended
  use, limitations, privacy). Stored as a ``"delta"`` against the base checkpoint the run started from
  when some generator parameter stayed frozen in every freezing stage (the stored tensors are the parameters
  trainable in ANY stage); as ``"full"`` (self-contained; the base, if any, still recorded for
  ``strength < 1``) when the run started from random weights or trained everything.
- any other run (pretraining a prior on a faces folder, synthetic data): a full model export without a
  person (``export_generator``), usable as ``model.generator_weights=<run dir>/export`` of later runs.

:func:`register_person_export` then copies a person export to ``<persons dir>/<name>/weights/``
(``gpen_fewshot.export.default_export_dir``), where ``load_person(name)`` and ``restore.py --person <name>``
look for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.evaluation.identity_metrics import person_reference
from gpen_fewshot.export import (
    ExportError,
    copy_export,
    default_export_dir,
    export_generator,
    export_person,
)
from gpen_fewshot.faces.identity import IdentityEmbedder
from gpen_fewshot.training.freezing import ResolvedStage
from gpen_fewshot.utils.image import read_image

log = logging.getLogger(__name__)

NO_BASE = ("random", "given")  # NetworkSources values that are not a checkpoint on disk


def trainable_generator_params(stages: Iterable[ResolvedStage]) -> set[str]:
    """Names of the generator parameters trainable in at least one stage (what a delta export stores)."""
    return {name for stage in stages for name in stage.generator_params}


def base_checkpoint(initial_weights: str | None) -> str | None:
    """The checkpoint a run started from (``NetworkSources.generator``), or None for random/given weights."""
    if not initial_weights or initial_weights in NO_BASE or not Path(initial_weights).exists():
        return None
    return initial_weights


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of a plain training config: sorted-key JSON, so equal configs hash equally."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reference_embedding(train_crops: Sequence[str | os.PathLike], template: str) -> np.ndarray | None:
    """The person's reference identity: mean dlib embedding of the training crops, float32 (128,).

    Returns None (with a warning) when there are no crops, dlib / its models are unavailable or the crops
    are too small for dlib.
    """
    if not train_crops:
        return None

    try:
        return person_reference([read_image(p) for p in train_crops], IdentityEmbedder(template=template))
    except (ImportError, ValueError) as error:  # dlib missing, crops under 16 px: still useful without it
        log.warning("no reference identity embedding in the export: %s", error)
        return None


def export_run(generator_ema: GPENGenerator, stages: Sequence[ResolvedStage], initial_weights: str | None,
               out_dir: str | os.PathLike, template: str, *, person: str | None = None,
               name: str | None = None, train_crops: Sequence[str | os.PathLike] = (),
               metrics: Mapping[str, float] | None = None, config_digest: str | None = None,
               dtype: str = "fp32", identity_loss: str | None = None,
               recipe: Mapping[str, Any] | None = None) -> Path:
    """Write the export of a finished run (see the module docstring for what goes where).

    Args:
        generator_ema: the EMA generator.
        stages: the run's resolved freezing stages.
        initial_weights: where the generator's initial weights came from (a path, ``"random"``, ``"given"``).
        out_dir: export directory (``<run dir>/export``), atomically replaced.
        template: alignment template of the training crops.
        person: the person's name for a person export; None = a model export without person.
        name: model name of a model export (default: the directory name).
        train_crops: the person's aligned training crops (reference embedding, photo count).
        metrics: final validation metrics.
        config_digest: :func:`config_hash` of the training config.
        dtype: "fp32" or "fp16" storage.
        identity_loss: the identity network a loss term read (recorded in a person export's person.json).
        recipe: the training recipe for a person export's model card (README.md).

    Returns:
        The export directory.
    """
    base = base_checkpoint(initial_weights)
    if person is None:
        return export_generator(generator_ema, out_dir, template, name=name, dtype=dtype,
                                base_checkpoint=base)
    trainable = trainable_generator_params(stages)
    frozen_throughout = {n for n, _ in generator_ema.named_parameters()} - trainable
    mode = "delta" if base is not None and frozen_throughout else "full"
    fields = {"person_name": person, "trainable_param_names": sorted(trainable), "template": template,
              "metrics": dict(metrics or {}), "config_hash": config_digest, "n_photos": len(train_crops),
              "reference_embedding": reference_embedding(train_crops, template), "dtype": dtype,
              "identity_loss": identity_loss, "recipe": recipe}
    try:
        return export_person(generator_ema, base, out_dir, mode=mode, **fields)
    except ExportError as error:
        if base is None:
            raise
        # e.g. the base is itself a delta export: still deliver the trained model, self-contained
        log.warning("exporting without a base reference (%s): %s", base, error)
        return export_person(generator_ema, None, out_dir, mode="full", **fields)


def register_person_export(export_dir: str | os.PathLike, person: str,
                           persons_dir: str | os.PathLike | None = None) -> Path:
    """Copy a person export to ``default_export_dir(person, persons_dir)`` (atomically replacing an old one).

    Returns:
        The registered directory, e.g. ``data/persons/alice/weights``.
    """
    return copy_export(export_dir, default_export_dir(person, persons_dir))
