"""The training pipeline behind ``python train.py``: config in, trained and exported person model out.

This is the edge where the Hydra ``DictConfig`` is turned into typed objects (``hydra.utils.instantiate`` of
the group files' ``_target_``); nothing below receives a ``DictConfig``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from gpen_fewshot.export import default_export_dir
from gpen_fewshot.export import persons_dir as default_persons_dir
from gpen_fewshot.training.callbacks import GracefulInterrupt, RunRecord
from gpen_fewshot.training.config import RunConfig
from gpen_fewshot.training.export import config_hash, export_run, register_person_export
from gpen_fewshot.training.module import GPENFewShotModule
from gpen_fewshot.training.reporting import (
    RegistrationError,
    check_registrable,
    export_lines,
    vetting_summary,
)
from gpen_fewshot.training.resume import (
    check_resume_checkpoint,
    find_resume_checkpoint,
    resume_command,
)

log = logging.getLogger(__name__)
Echo = Callable[[str], None]  # where user-facing summaries go


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a dict-like group (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values()
            if isinstance(node, DictConfig) and "_target_" in node]


def build_module(cfg: DictConfig) -> GPENFewShotModule:
    """The LightningModule of a composed training config."""
    run = RunConfig(total_iters=int(cfg.iterations), seed=int(cfg.seed),
                    num_sample_images=int(cfg.get("num_sample_images", 8)),
                    template=str(cfg.data.get("template", "gpen")),
                    val_identity=bool(cfg.get("val_identity", True)))
    return GPENFewShotModule(model=instantiate(cfg.model), optim=instantiate(cfg.optim),
                             loss=instantiate(cfg.loss), freezing=instantiate(cfg.freezing), run=run)


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """Trainer with the configured callbacks and loggers (and a record of the recipe in every checkpoint)."""
    callbacks = [*_instantiate_all(cfg.get("callbacks")), RunRecord(hashable_config(cfg))]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.get("logger")) or False)


# The training recipe, hashed into the export's person.json: what was trained and how, not where things are
# (paths, loggers, callbacks) nor who (the person's name is recorded beside the hash).
_HASHED = ("model", "data", "degradation", "freezing", "optim", "loss", "iterations", "seed")
_DATA_PATHS = ("person_dir", "faces_dir", "cache_dir")


def hashable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved training recipe as plain containers, without paths (input of ``config_hash``)."""
    plain = {key: OmegaConf.to_container(cfg[key], resolve=True)
             if OmegaConf.is_config(cfg[key]) else cfg[key]
             for key in _HASHED if key in cfg}
    if isinstance(plain.get("data"), dict):
        plain["data"] = {k: v for k, v in plain["data"].items() if k not in _DATA_PATHS}
    return plain


@rank_zero_only
def _export(module: GPENFewShotModule, cfg: DictConfig, datamodule: Any, metrics: dict[str, float],
            echo: Echo) -> Path:
    """Write ``<run dir>/export`` (a person export for person data) and register a person export.

    The export's path is reported (``echo``) even when the registration fails (the error is raised after it).
    """
    options = cfg.get("export") or {}
    prepared = datamodule.prepared if is_person_run(datamodule) else None
    person = str(cfg.person) if prepared is not None else None
    path = export_run(
        module.generator_ema, module.stages, module.sources.generator, Path(cfg.paths.output_dir) / "export",
        module.run_config.template, person=person, name=str(cfg.person),
        train_crops=prepared.train_crops if prepared is not None else (),
        metrics={k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")},
        config_digest=config_hash(hashable_config(cfg)), dtype=str(options.get("dtype", "fp32")),
        identity_loss=module.identity_network_used,
        recipe=training_recipe(cfg))
    registered, failure = None, None
    if person is not None and options.get("register", True):
        try:
            registered = register_person_export(path, person, cfg.paths.persons_dir)
        except OSError as error:
            failure = RegistrationError(f"could not register the export: {error}")
    echo(export_lines(path, registered, person, module.iteration, _persons_dir_option(cfg),
                      str(failure) if failure else None))
    if failure is not None:
        raise failure
    return path


def _choice_and_name(choice: str | None, name: str | None) -> str:
    return str(choice or name) if not choice or not name or choice == name else f"{choice} ({name})"


# Overrides that say where things are on this machine, not how the model was trained: kept out of the model
# card.
_LOCAL_OVERRIDE = re.compile(r"^[+~]*(paths\.|hydra\.|ckpt_path=|resume=|[\w.]*_dir=)")


def training_recipe(cfg: DictConfig) -> dict[str, Any]:
    """The recipe rows of a person export's model card: config group choices, length, learning rates."""
    from hydra.core.hydra_config import HydraConfig

    try:
        runtime = HydraConfig.get()
        choices = dict(runtime.runtime.choices)
        overrides = [o for o in runtime.overrides.task if not _LOCAL_OVERRIDE.match(o)]
    except ValueError:  # no Hydra context (library use): the composed values alone
        choices, overrides = {}, []
    optim = cfg.optim
    return {
        "experiment": choices.get("experiment") or "none (configs/train.yaml defaults)",
        "model": _choice_and_name(choices.get("model"), cfg.model.get("name")),
        "loss": choices.get("loss", "?"),
        "freezing": choices.get("freezing", "?"),
        "degradation": choices.get("degradation", "?"),
        "iterations": int(cfg.iterations),
        "batch_size": cfg.data.get("batch_size"),
        "lr_g": optim.get("lr_g"),
        "lr_d": optim.get("lr_d"),
        "lr_schedule": f"{optim.get('schedule')}, {optim.get('warmup_iters')} warm-up iterations",
        "seed": int(cfg.seed),
        "overrides": " ".join(overrides) or "none",
    }


def _persons_dir_option(cfg: DictConfig) -> Path | None:
    """``--persons-dir`` for the printed restore command, or None when restore.py finds the folder itself."""

    configured = Path(cfg.paths.persons_dir)
    return None if configured.resolve() == default_persons_dir().resolve() else configured


def is_person_run(datamodule: Any) -> bool:
    """Whether the data is one person's photos (the datamodule says so: ``holds_one_person``, with a
    ``prepared`` PreparedPerson): such a run exports and registers a person, other data (a prior's faces
    folder) a plain model."""
    return bool(getattr(datamodule, "holds_one_person", False))


def _before_person_run(cfg: DictConfig, datamodule: Any, echo: Echo) -> None:
    """Person runs: fail now if the export could not be registered; show which photos are used (rank 0)."""
    if not is_person_run(datamodule):
        return
    if (cfg.get("export") or {}).get("register", True):
        check_registrable(default_export_dir(str(cfg.person), cfg.paths.persons_dir))
    if rank_zero_only.rank == 0:
        prepared = datamodule.prepared
        echo(vetting_summary(str(cfg.person), prepared.records, prepared.manifest_path))


def _finish_loggers(trainer: pl.Trainer) -> None:
    """Close W&B runs: the next job of a multirun (same process) would otherwise log into this one."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            logger.experiment.finish()


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class TrainingInterrupted(Exception):
    """A signal stopped training at an iteration boundary; ``exit_code`` = 128 + the signal (130 for Ctrl-C,
    143 for SIGTERM), so that shells and schedulers see an interrupted job, not a finished one."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.exit_code = 128 + int(signum)


def train(cfg: DictConfig, echo: Echo | None = None) -> dict[str, float]:
    """Run one training job described by a composed ``configs/train.yaml``.

    Args:
        cfg: the composed config.
        echo: where the user-facing summaries go (which photos are used, where the export went and the
            commands to evaluate and restore with it); the command line passes ``print``; None = this
            module's logger (INFO).

    Returns:
        The last logged metrics (``val/psnr``, ...), e.g. for the Optuna sweeper's objective.

    Raises:
        TrainingInterrupted: a Ctrl-C / SIGTERM stopped the run (checkpoint saved, resume command logged).
    """
    echo = echo or log.info
    pl.seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt = find_resume_checkpoint(cfg.get("ckpt_path"), cfg.get("resume", False),
                                  Path(cfg.paths.person_runs_dir), output_dir)
    module = build_module(cfg)
    # a checkpoint that cannot continue this config stops the run before anything is written
    if ckpt is not None:
        check_resume_checkpoint(ckpt, module.state_dict(), hashable_config(cfg))
    if rank_zero_only.rank == 0:
        log.info("person %r (%s); run directory %s", cfg.person, cfg.person_dir, output_dir)
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
        os.makedirs(output_dir, exist_ok=True)
    datamodule = instantiate(cfg.data)
    _before_person_run(cfg, datamodule, echo)
    trainer = build_trainer(cfg)
    if ckpt is None and cfg.get("validate_before_training", True):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    try:
        with warnings.catch_warnings():
            # generator_ema is deliberately in eval mode (it is never trained); Lightning warns about it.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
        finished = module.iteration >= module.run_config.total_iters
        if finished and module.iteration % int(cfg.val_every):  # the last iterations were never validated
            trainer.validate(module, datamodule=datamodule, verbose=False)
    finally:
        _finish_loggers(trainer)
    metrics = _metrics(trainer)
    if finished:
        _export(module, cfg, datamodule, metrics, echo)
    elif rank_zero_only.rank == 0:
        log.warning("stopped at iteration %d of %d; continue with: %s", module.iteration,
                    module.run_config.total_iters, resume_command(output_dir, _script_name()))
    received = next((c.signal_received for c in trainer.callbacks if isinstance(c, GracefulInterrupt)), None)
    if received is not None and not finished:
        raise TrainingInterrupted(received)
    return metrics


def _script_name() -> str:
    """The training script as it was started (``train.py`` when run in-process, e.g. from tests)."""
    return sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "train.py"
