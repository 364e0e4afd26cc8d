"""``python evaluate.py`` (Hydra, ``configs/eval.yaml``): the evaluation config -> models, options, report.

The evaluation itself is :mod:`gpen_fewshot.evaluation.runner` (no config, no printing); this module reads the
composed config, resolves the models (``ckpt`` / ``base`` / the person's registered export), runs it, writes
the report and prints where it is. ``user_errors()`` lists the errors shown as one line by ``evaluate.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpen_fewshot.data.person import NotEnoughPhotosError
from gpen_fewshot.evaluation.models import (
    ModelSpec,
    ModelSpecError,
    registered_export,
    resolve_models,
    run_config,
)
from gpen_fewshot.evaluation.protocol import (
    ProtocolConfig,
    ProtocolError,
)
from gpen_fewshot.evaluation.report import ReportSettings, unavailable_reasons, write_report
from gpen_fewshot.evaluation.runner import EvalOptions, EvalResults, MetricSelection, run_evaluation

log = logging.getLogger(__name__)


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, (str, os.PathLike)) else tuple(str(v) for v in value)


def options_from_config(cfg: Mapping[str, Any]) -> EvalOptions:
    """``EvalOptions`` from a plain dict shaped like ``configs/eval.yaml`` (resolved, no DictConfig)."""
    protocol = cfg.get("protocol") or {}
    return EvalOptions(
        person_dir=Path(cfg["person_dir"]),
        protocol=ProtocolConfig(tuple(protocol.get("levels", ProtocolConfig.levels)),
                                int(protocol.get("copies", 2)), int(protocol.get("seed", 0))),
        template=str(cfg.get("template", "gpen")), holdout=cfg.get("holdout"),
        min_photos=int(cfg.get("min_photos") or 3),
        cache_dir=Path(cfg["cache_dir"]) if cfg.get("cache_dir") else None,
        others=_tuple(cfg.get("others")), others_max_persons=cfg.get("others_max_persons"),
        others_max_photos=cfg.get("others_max_photos"), include_input=bool(cfg.get("include_input", True)),
        metrics=MetricSelection(**dict(cfg.get("metrics") or {})), batch_size=int(cfg.get("batch_size", 4)),
        device=str(cfg.get("device", "auto")),
        inputs_dir=Path(cfg["out_dir"]) / "inputs" if cfg.get("save_inputs") else None,
        grid_photos=int(cfg.get("grid_photos", 8)), download=bool(cfg.get("download", False)),
    )


def recorded_data_settings(specs: Sequence[ModelSpec], person: str | None = None) -> dict[str, Any]:
    """``holdout`` / ``min_photos`` / ``cache_dir`` of the first training run of ``person`` among ``specs``
    (they decide which photos that run held out), as far as its config records them."""

    for spec in specs:
        config = run_config(spec.run_dir) if spec.run_dir is not None else {}
        if config and (person is None or str(config.get("person")) == str(person)):
            data = config.get("data") or {}
            return {k: data[k] for k in ("holdout", "min_photos", "cache_dir")
                    if k in data and not (isinstance(data[k], str) and "${" in data[k])}
    return {}


def _warn_other_person(specs: Sequence[ModelSpec], person: str | None) -> None:
    """Evaluating a model on someone it was not tuned for is allowed (specificity) but worth a warning."""

    for spec in specs:
        trained_on = run_config(spec.run_dir).get("person") if spec.run_dir is not None else None
        if person and trained_on and str(trained_on) != str(person):
            log.warning("%s was tuned on person %r, evaluated here on %r", spec.name, trained_on, person)


def main(cfg: Mapping[str, Any], progress: bool = True) -> Path:
    """What ``evaluate.py`` runs: resolve the models, evaluate, write the report; returns the output
    folder."""
    specs = resolve_models(_ckpt(cfg), cfg.get("base"), str(cfg.get("checkpoint", "export")))
    recorded = recorded_data_settings(specs, cfg.get("person"))
    _warn_other_person(specs, cfg.get("person"))
    merged = {**cfg, **{k: v for k, v in recorded.items() if cfg.get(k) is None}}
    options = options_from_config(merged)
    for key, value in recorded.items():
        if cfg.get(key) is not None and cfg[key] != value:
            log.warning("%s=%r differs from the training run's %r: the held-out photos may have been "
                        "trained on", key, cfg[key], value)
    evaluation = run_evaluation(specs, options, progress=progress and bool(cfg.get("progress", True)))
    settings = ReportSettings(str(cfg.get("rank_by", "psnr")), str(cfg.get("rank_level", "mean")),
                              float(cfg.get("specificity_tolerance", 0.03)))
    protocol = {"levels": list(options.protocol.levels), "copies": options.protocol.copies,
                "seed": options.protocol.seed, "person_dir": str(options.person_dir),
                "others": list(options.others), "holdout": options.holdout, "template": options.template}
    paths = write_report(evaluation, cfg["out_dir"], settings, protocol)
    print(f"\nReport: {paths['report.md']}")
    for reason in _unavailable(evaluation):
        print(f"unavailable: {reason}")
    return Path(cfg["out_dir"])


def _ckpt(cfg: Mapping[str, Any]) -> Any:
    """``ckpt``, else the person's registered export (see ``registered_export``)."""

    if cfg.get("ckpt") or not cfg.get("person"):
        return cfg.get("ckpt")
    export = registered_export(str(cfg["person"]), (cfg.get("paths") or {}).get("persons_dir"),
                               cfg.get("base"))
    if export is None:
        log.warning("person %r has no registered export: evaluating the base model alone", cfg["person"])
    else:
        log.info("no ckpt given: evaluating the registered export of %r (%s) against its base", cfg["person"],
                 export)
    return export


def _unavailable(evaluation: EvalResults) -> list[str]:

    return unavailable_reasons(evaluation.results)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's files or settings (shown as one message, no traceback)."""

    return (ModelSpecError, ProtocolError, NotEnoughPhotosError, FileNotFoundError)
