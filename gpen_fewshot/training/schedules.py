"""Learning-rate schedules as pure functions of the training iteration.

The module keeps its own iteration counter (Lightning's ``global_step`` counts every optimiser step, two per
GAN iteration), so schedules are plain functions ``lr_at(iteration)`` evaluated at the start of every
iteration and written into the optimiser's parameter groups. Nothing is stateful: resuming at iteration ``t``
gives exactly the learning rate an uninterrupted run has at ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleKind = Literal["cosine", "constant", "step"]
SCHEDULE_KINDS: tuple[str, ...] = ("cosine", "constant", "step")


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up followed by a cosine, constant or step decay.

    Attributes:
        base_lr: peak learning rate, reached at the end of the warm-up.
        total_iters: length of the run in iterations; the cosine reaches ``eta_min`` there.
        kind: ``"cosine"`` (to ``eta_min`` at ``total_iters``), ``"constant"`` or ``"step"``
            (multiply by ``gamma`` every ``step_size`` iterations after the warm-up).
        warmup_iters: iterations of linear warm-up from ``base_lr / warmup_iters`` to ``base_lr``; 0 = none.
        eta_min: floor of the cosine schedule.
        step_size: period of the step schedule, in iterations.
        gamma: decay factor of the step schedule.
    """

    base_lr: float
    total_iters: int
    kind: ScheduleKind = "cosine"
    warmup_iters: int = 100
    eta_min: float = 1e-6
    step_size: int = 1000
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown LR schedule {self.kind!r}; choose one of {SCHEDULE_KINDS}")
        if self.base_lr <= 0 or self.total_iters < 1 or self.warmup_iters < 0:
            raise ValueError(
                "LR schedule needs base_lr > 0, total_iters >= 1, warmup_iters >= 0; got "
                f"base_lr={self.base_lr}, total_iters={self.total_iters}, warmup_iters={self.warmup_iters}"
            )
        if not 0 <= self.eta_min <= self.base_lr:
            raise ValueError(f"eta_min must lie in [0, base_lr={self.base_lr}], got {self.eta_min}")
        if self.kind == "step" and (self.step_size < 1 or not 0 < self.gamma <= 1):
            raise ValueError(f"step schedule needs step_size >= 1 and 0 < gamma <= 1, got {self.step_size}, "
                             f"{self.gamma}")

    def lr_at(self, iteration: int) -> float:
        """Learning rate used by the update of (0-based) ``iteration``.

        Warm-up: ``base_lr * (iteration + 1) / warmup_iters`` for ``iteration < warmup_iters``, so the first
        update is not wasted with a zero rate and ``base_lr`` is reached at ``warmup_iters - 1``.
        Cosine: ``eta_min + (base_lr - eta_min) * (1 + cos(pi * p)) / 2`` with
        ``p = (iteration - warmup_iters) / (total_iters - warmup_iters)`` clamped to [0, 1].
        """
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        if iteration < self.warmup_iters:
            return self.base_lr * (iteration + 1) / self.warmup_iters
        after = iteration - self.warmup_iters
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** (after // self.step_size)
        span = max(self.total_iters - self.warmup_iters, 1)
        progress = min(after / span, 1.0)
        return self.eta_min + (self.base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group, scaled by the group's ``lr_scale`` entry (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
