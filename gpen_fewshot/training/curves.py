"""``curves.png`` in every run folder: what training changed, readable without syncing any logger.

:class:`TrainingCurves` records the values the module logs (``train/g_*`` and ``train/d_loss`` losses, the
``lr/`` learning rates, the ``val/`` metrics) against the module's own iteration counter, and redraws
``<run dir>/curves.png`` after each validation and at the end of training. Its history is saved in the
checkpoints, so a resumed run's figure starts at iteration 0. Training values are averaged in bins that double
in width whenever more than ``max_points`` are held: memory stays bounded on 200k-iteration runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from gpen_fewshot.training.callbacks import _iteration
from gpen_fewshot.utils.atomic import atomic_open

log = logging.getLogger(__name__)

LR_KEYS = ("lr/generator", "lr/discriminator")
VAL_PSNR = "val/psnr"
# validation identity metrics: dlib distance to the GT (lower = better), identity-loss network similarity
VAL_IDENTITY_PREFIXES = ("val/id_distance_gt", "val/identity_")
_PER_GROUP_SEPARATOR = "_"  # val/psnr_moderate: a per-degradation mean, left out of the figure


def is_loss_key(key: str) -> bool:
    """Training losses drawn in the loss panel (``train/g_*`` terms and the discriminator's logistic loss)."""
    return key.startswith("train/g_") or key == "train/d_loss"


def _val_keys(metrics: Mapping[str, float]) -> list[str]:
    """Overall validation metrics of the figure (per-degradation means ``val/<metric>_<level>`` left out)."""
    keys = [VAL_PSNR] if VAL_PSNR in metrics else []
    identity = [k for k in metrics if k.startswith(VAL_IDENTITY_PREFIXES)]
    # per-group keys extend an overall key by "_<group>": keep the shortest of each family
    return keys + [k for k in identity if not any(k != o and k.startswith(o + _PER_GROUP_SEPARATOR)
                                                  for o in identity)]


class MetricHistory:
    """Training values binned over iterations, validation values per validation.

    Args:
        max_points: training bins held at most (adjacent bins are merged beyond it).
    """

    def __init__(self, max_points: int = 1000) -> None:
        self.max_points = max(2, max_points)
        self.bin_width = 1
        self.train: list[dict[str, float]] = []  # {"iteration": last iteration of the bin, key: mean}
        self.val: list[dict[str, float]] = []  # {"iteration": ..., key: value}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._in_bin = self._last = 0

    def train_points(self) -> list[dict[str, float]]:
        """The training bins, the one still filling included."""
        return self.train + ([self._open_bin()] if self._in_bin else [])

    def add_train(self, iteration: int, values: Mapping[str, float]) -> None:
        """Add one iteration's logged values; a bin is closed every ``bin_width`` iterations."""
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1
        self._in_bin, self._last = self._in_bin + 1, iteration
        if self._in_bin >= self.bin_width:
            self._close_bin()

    def _open_bin(self) -> dict[str, float]:
        point = {key: total / self._counts[key] for key, total in self._sums.items()}
        return {"iteration": float(self._last), "_n": float(self._in_bin), **point}

    def _close_bin(self) -> None:
        self.train.append(self._open_bin())
        self._sums, self._counts, self._in_bin = {}, {}, 0
        if len(self.train) > self.max_points:
            self.train = [_merge(self.train[i:i + 2]) for i in range(0, len(self.train), 2)]
            self.bin_width *= 2

    def add_val(self, iteration: int, values: Mapping[str, float]) -> None:
        """Record a validation (a repeated one at the same iteration replaces the earlier)."""
        self.val = [v for v in self.val if v["iteration"] != iteration]
        self.val.append({"iteration": float(iteration), **values})
        self.val.sort(key=lambda v: v["iteration"])

    def series(self, points: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
        """(iterations, values) of ``key`` where it was recorded."""
        pairs = [(p["iteration"], p[key]) for p in points if key in p]
        return [x for x, _ in pairs], [y for _, y in pairs]

    def state_dict(self) -> dict[str, Any]:
        return {"bin_width": self.bin_width, "train": self.train, "val": self.val,
                "open": {"sums": self._sums, "counts": self._counts, "in_bin": self._in_bin,
                         "last": self._last}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bin_width = int(state.get("bin_width", 1))
        self.train = [dict(p) for p in state.get("train", [])]
        self.val = [dict(p) for p in state.get("val", [])]
        open_bin = state.get("open") or {}
        self._sums, self._counts = dict(open_bin.get("sums", {})), dict(open_bin.get("counts", {}))
        self._in_bin, self._last = int(open_bin.get("in_bin", 0)), int(open_bin.get("last", 0))


def _merge(points: list[dict[str, float]]) -> dict[str, float]:
    """One bin from adjacent bins: per-key means weighted by the iterations in each."""
    merged: dict[str, float] = {"iteration": points[-1]["iteration"], "_n": sum(p["_n"] for p in points)}
    for key in {k for p in points for k in p} - {"iteration", "_n"}:
        having = [p for p in points if key in p]
        merged[key] = sum(p[key] * p["_n"] for p in having) / sum(p["_n"] for p in having)
    return merged


def plot_curves(history: MetricHistory, path: str | os.PathLike, title: str = "") -> Path:
    """Draw losses, learning rates, validation PSNR and identity against iterations into a PNG.

    Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    (losses, lrs), (psnr, identity) = figure.subplots(2, 2, sharex=True)
    train = history.train_points()
    loss_keys = sorted({k for p in train for k in p if is_loss_key(k)})
    _lines(losses, history, train, loss_keys, "training losses (unweighted terms; bin means)", log_y=True)
    _lines(lrs, history, train, [k for k in LR_KEYS if any(k in p for p in train)], "learning rate",
           log_y=True)
    val_keys = _val_keys({k: 0.0 for p in history.val for k in p})
    _lines(psnr, history, history.val, [k for k in val_keys if k == VAL_PSNR],
           "validation PSNR (dB, higher = better)", marker="o")
    id_keys = [k for k in val_keys if k != VAL_PSNR]
    _lines(identity, history, history.val, id_keys, "validation identity", marker="o")
    for axes in (psnr, identity):
        axes.set_xlabel("iteration")
    if title:
        figure.suptitle(title)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return Path(path)


def _lines(axes: Any, history: MetricHistory, points: list[dict[str, float]], keys: list[str], title: str,
           log_y: bool = False, marker: str | None = None) -> None:
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    drawn = False
    for key in keys:
        x, y = history.series(points, key)
        if x:
            line, = axes.plot(x, y, label=_label(key), marker=marker, markersize=4, linewidth=1.2)
            drawn = True
            if marker is not None and x[0] == 0 and len(x) > 1:  # validation before training: the base model
                axes.axhline(y[0], color=line.get_color(), linestyle="--", linewidth=0.8, alpha=0.6,
                             label="before training")
    if not drawn:
        axes.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=axes.transAxes, alpha=0.6)
        return
    if log_y and all(v > 0 for key in keys for v in history.series(points, key)[1]):
        axes.set_yscale("log")
    axes.legend(fontsize=8, loc="best")


def _label(key: str) -> str:
    if key.startswith("val/id_distance"):
        return f"{key} (dlib, lower = better)"
    if key.startswith("val/identity_"):
        return f"{key} (cosine, higher = better; trained on)"
    return key


class TrainingCurves(Callback):
    """Keep a :class:`MetricHistory` of the logged metrics and draw it into ``path`` (rank 0).

    Args:
        path: the PNG (``<run dir>/curves.png``).
        max_points: training bins kept (see :class:`MetricHistory`).
        title: figure title (e.g. the person's name).
    """

    def __init__(self, path: str | os.PathLike, max_points: int = 1000, title: str = "") -> None:
        self.path = Path(path)
        self.title = title
        self.history = MetricHistory(max_points)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if (is_loss_key(k) or k in LR_KEYS) and getattr(v, "numel", lambda: 1)() == 1}
        self.history.add_train(_iteration(pl_module), values)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
        if metrics:
            self.history.add_val(_iteration(pl_module), metrics)
        self._draw(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer)

    def _draw(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        try:
            plot_curves(self.history, self.path, self.title)
        except (OSError, ValueError) as error:  # a figure must never stop training
            log.warning("could not draw %s: %s", self.path, error)

    def state_dict(self) -> dict[str, Any]:
        return self.history.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load_state_dict(state_dict)
