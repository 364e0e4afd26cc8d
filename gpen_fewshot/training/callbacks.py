"""Lightning callbacks keyed on the module's own iteration counter.

- :class:`IterationCheckpoint`: ``last.ckpt`` every K iterations, at the end and when the run is interrupted
  (Ctrl-C, SIGTERM, an exception) at an iteration boundary; ``best.ckpt`` by a monitored validation metric.
  Every write goes to a temporary file that is renamed into place, so a kill never leaves a broken file.
- :class:`SampleGrid`: saves the validation grid (LQ | restored | GT) as ``samples/iter_XXXXXX.png`` and sends
  it to the loggers.
- :class:`IterationProgressBar`: one bar over the whole run (iterations, not epochs) with the losses.
- :class:`IterationTimer`: wall time of every training iteration (logged as ``time/iteration_s``); the median
  is printed at the end of training, so the cost of a loss term or a setting is measured by the run itself.
- :class:`GracefulInterrupt`: the first Ctrl-C or SIGTERM finishes the current iteration and stops cleanly (a
  checkpoint is written); a second one aborts.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

from gpen_fewshot.training.resume import RECORD_KEY, contents_record
from gpen_fewshot.utils.atomic import atomic_torch_save
from gpen_fewshot.utils.image import write_image

log = logging.getLogger(__name__)


def _iteration(pl_module: pl.LightningModule) -> int:
    """The module's own iteration counter (``global_step`` for modules without one)."""
    iteration = getattr(pl_module, "iteration", None)
    return int(iteration if iteration is not None else pl_module.global_step)


def save_checkpoint_atomic(trainer: pl.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` into a temporary file renamed over ``path`` (rank 0 writes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        if trainer.is_global_zero:
            tmp.unlink(missing_ok=True)  # a failed or interrupted save leaves the previous checkpoint only
        raise


class IterationCheckpoint(Callback):
    """Periodic / final / on-interrupt ``last.ckpt`` and monitored ``best.ckpt``.

    Args:
        dirpath: folder of the checkpoints (created).
        every_n_iters: save ``last.ckpt`` every this many iterations (0 = only at the end / interruption).
        monitor: logged metric choosing ``best.ckpt`` (e.g. ``"val/psnr"``); ``None`` = no best checkpoint.
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_iters: int = 500, monitor: str | None = "val/psnr",
                 mode: Literal["max", "min"] = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.dirpath = Path(dirpath)
        self.every_n_iters = every_n_iters
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_iteration: int | None = None
        self._last_saved: int | None = None
        self._progressed = False  # an iteration finished in this process (not only a restored checkpoint)

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    def _save_last(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        iteration = _iteration(pl_module)
        if iteration == self._last_saved or iteration == 0:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self._last_saved = iteration  # set first: it is part of the state written into the file
        save_checkpoint_atomic(trainer, self.last_path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say when periodic checkpoints fall inside epochs (their resume replays part of an epoch's data)."""
        batches = trainer.num_training_batches
        if self.every_n_iters and math.isfinite(batches) and batches and self.every_n_iters % int(batches):
            log.info("checkpoints every %d iterations fall inside %d-iteration epochs: a resume from them "
                     "replays the start of that epoch's data (still correct training, not bit-identical to "
                     "an uninterrupted run); make data.samples_per_epoch = batch_size * every_n_iters to "
                     "align them", self.every_n_iters, int(batches))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Periodic ``last.ckpt``."""
        self._progressed = True
        if self.every_n_iters and _iteration(pl_module) % self.every_n_iters == 0:
            self._save_last(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Final ``last.ckpt`` (also after a graceful Ctrl-C stop)."""
        self._save_last(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``best.ckpt`` when the monitored metric improved (fit only, not the sanity check)."""
        if self.monitor is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        improved = self.best_score is None or (score > self.best_score if self.mode == "max" else
                                               score < self.best_score)
        if improved and not math.isnan(score):
            self.best_score, self.best_iteration = score, _iteration(pl_module)
            self.dirpath.mkdir(parents=True, exist_ok=True)
            save_checkpoint_atomic(trainer, self.best_path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """Save ``last.ckpt`` on SIGTERM / Ctrl-C / errors, unless the interruption hit mid-iteration or
        before any iteration of this process finished (the module may hold a half-restored checkpoint).

        Written by rank 0 alone without a barrier: other ranks may already be gone.
        """
        if not trainer.is_global_zero:
            return
        if not self._progressed:  # a failed start (e.g. a checkpoint that does not fit) must not write one
            return
        if getattr(pl_module, "in_iteration", False):
            log.warning("interrupted inside an iteration: keeping the previous checkpoint (%s)",
                        self.last_path)
            return
        iteration = _iteration(pl_module)
        if iteration in (0, self._last_saved):
            return
        self._last_saved = iteration
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        atomic_torch_save(checkpoint, self.last_path)
        log.warning("run interrupted (%s): checkpoint of iteration %d saved to %s", type(exception).__name__,
                    iteration, self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_iteration": self.best_iteration,
                "last_saved": self._last_saved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_iteration = state_dict.get("best_iteration")
        self._last_saved = state_dict.get("last_saved")


class RunRecord(Callback):
    """Write into every checkpoint a record of what it holds (iteration, optimiser steps, training recipe),
    which :func:`gpen_fewshot.training.resume.check_resume_checkpoint` verifies before a resume.

    Args:
        recipe: the run's training recipe as plain containers (``run.hashable_config``).
    """

    def __init__(self, recipe: dict[str, Any]) -> None:
        self.recipe = recipe

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:

        # the module's own entry (its iteration) is added after the callbacks': ask the module directly
        checkpoint[RECORD_KEY] = contents_record(_iteration(pl_module), checkpoint, self.recipe)


class IterationTimer(Callback):
    """Time each training iteration (data loading excluded, the whole G + D update included).

    Logs ``time/iteration_s`` and, at the end of training, prints the median of the iterations after the first
    ``skip`` (their allocations and lazy loads are not representative) to the log.
    """

    def __init__(self, skip: int = 2) -> None:
        self.skip, self.times, self._start = skip, [], None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._start is None:
            return
        seconds, self._start = time.perf_counter() - self._start, None
        self.times.append(seconds)
        pl_module.log("time/iteration_s", seconds, on_step=True, on_epoch=False)

    def median(self) -> float | None:
        """Median seconds per iteration after the first ``skip`` (None before any such iteration)."""
        timed = self.times[self.skip:]
        return statistics.median(timed) if timed else None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        median = self.median()
        if median is not None:
            log.info("iteration time: median %.3f s over %d iterations (first %d not counted)", median,
                     len(self.times) - self.skip, self.skip)


class SampleGrid(Callback):
    """Write the module's ``last_sample_grid`` (uint8 RGB HWC) after each validation and log it.

    Args:
        dirpath: folder of the PNGs (``iter_XXXXXX.png``).
        every_n_iters: only keep grids at multiples of this (0 = every validation).
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_iters: int = 0) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_iters = every_n_iters
        self.last_path: Path | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        grid = getattr(pl_module, "last_sample_grid", None)
        iteration = _iteration(pl_module)
        if grid is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self.every_n_iters and iteration % self.every_n_iters:
            return
        self.last_path = self.dirpath / f"iter_{iteration:06d}.png"
        write_image(self.last_path, grid)
        for logger in trainer.loggers:
            _log_image(logger, grid, iteration)


def _log_image(logger: Any, grid: np.ndarray, step: int) -> None:
    caption = "LQ | restored (EMA) | GT"
    if hasattr(logger, "log_image"):  # WandbLogger
        logger.log_image(key="samples", images=[grid], step=step, caption=[caption])
    elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoardLogger
        logger.experiment.add_image("samples", grid, global_step=step, dataformats="HWC")


class GracefulInterrupt(Callback):
    """First Ctrl-C (SIGINT) or SIGTERM: stop after the current iteration (``last.ckpt`` is written) and
    remember the signal in ``signal_received`` (``train`` prints the resume command, ``train.py`` exits 128 +
    signal); a second one aborts at once. Replaces Lightning's own SIGTERM handling while training runs, which
    exits with status 0 and skips the resume command."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self.signal_received: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signal_received is not None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.signal_received = signum
            trainer.should_stop = True
            # Lightning validates when should_stop is set (for early stopping): minutes on a real validation
            # set between the signal and the checkpoint. An interrupted run resumes; it needs no metrics now.
            trainer.limit_val_batches = 0
            log.warning("%s: finishing the current iteration and saving a checkpoint (send it again to abort "
                        "without saving)",
                        "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, handler)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._restore()


class IterationProgressBar(ProgressBar):
    """A single tqdm bar counting training iterations up to the run's total, with losses and the stage.

    Args:
        refresh_rate: update the bar every this many iterations.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__()
        self.refresh_rate = max(1, refresh_rate)
        self._enabled = True
        self._bar: Any = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        total = getattr(getattr(pl_module, "run_config", None), "total_iters", None)
        self._bar = tqdm(total=total, initial=_iteration(pl_module), desc="train", unit="it",
                         dynamic_ncols=True, smoothing=0.1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._bar is None:
            return
        iteration = _iteration(pl_module)
        if iteration % self.refresh_rate == 0 or trainer.should_stop:
            self._bar.update(iteration - self._bar.n)
            metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
            stage = getattr(getattr(pl_module, "active_stage", None), "name", None)
            self._bar.set_postfix({**metrics, **({"stage": stage} if stage else {})}, refresh=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def print(self, *args: Any, **kwargs: Any) -> None:
        (self._bar.write if self._bar is not None else print)(" ".join(map(str, args)))
