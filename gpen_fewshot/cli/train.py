"""The command-line edge of ``python train.py``: a composed Hydra config in, one job, one exit status.

The training pipeline itself (:func:`gpen_fewshot.training.run.train`) raises typed errors and reports through
the ``echo`` it is given; here its summaries go to stdout, a user's mistake becomes one ``error:`` line (exit
status 1, :mod:`gpen_fewshot.cli.errors`), and a Ctrl-C / SIGTERM that stopped training becomes 130 / 143.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from gpen_fewshot.archs.checkpoints import CheckpointError
from gpen_fewshot.cli.errors import user_errors_exit
from gpen_fewshot.data.person import NotEnoughPhotosError
from gpen_fewshot.persons import validate_person_name
from gpen_fewshot.training.checks import ConfigValueError, check_config_values
from gpen_fewshot.training.reporting import RegistrationError
from gpen_fewshot.training.resume import ResumeMismatchError
from gpen_fewshot.training.run import TrainingInterrupted, train
from gpen_fewshot.weights import ChecksumMismatchError

log = logging.getLogger(__name__)


class InvalidPersonError(ValueError):
    """The ``person`` value cannot name a folder (it is also the run folder's name)."""


def _validate_person(person: str) -> None:
    try:
        validate_person_name(person)
    except ValueError as error:
        raise InvalidPersonError(str(error)) from None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's files or settings: shown as one message, without a traceback."""
    return (FileNotFoundError, CheckpointError, ChecksumMismatchError, InvalidPersonError,
            ResumeMismatchError, RegistrationError, ConfigValueError, NotEnoughPhotosError)


def metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value of ``name`` (the sweeper's objective); ``None`` with a warning when it was never logged."""
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric %r was never logged (no validation data?); logged: %s", name,
                    sorted(metrics))
        return None
    return metrics[name]


def print_config(cfg: DictConfig) -> None:
    """Log the resolved config (rank 0)."""
    if rank_zero_only.rank == 0:
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def main_task(cfg: DictConfig) -> float | None:
    """What ``train.py`` runs: print the config, train, return the sweep objective.

    Raises:
        SystemExit: (code 1) on a missing file / weights or unusable photos, after printing one clear message
            (set ``HYDRA_FULL_ERROR=1`` for the traceback); (130 / 143) when Ctrl-C / SIGTERM stopped
            training.
    """
    if cfg.get("extras", {}).get("print_config", False):
        print_config(cfg)
    try:
        with user_errors_exit(user_errors(), blank_line=True):
            _validate_person(str(cfg.person))
            check_config_values(cfg)
            metrics = train(cfg, echo=print)
    except TrainingInterrupted as stop:  # the checkpoint and the resume command are out already
        raise SystemExit(stop.exit_code) from None
    return metric_value(metrics, cfg.get("optimized_metric"))
