"""Exponential moving average of the generator's weights (rosinality's ``accumulate``, BasicSR ``net_g_ema``).

Only the generator is averaged. Parameters move towards the live ones with ``lerp`` (an exact no-op for a
frozen parameter whose average already equals it, so frozen weights stay bit-identical in the EMA copy);
buffers (blur kernels, running statistics) are copied, never averaged.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` in eval mode, to hold the average."""
    ema = copy.deepcopy(model)
    ema.eval().requires_grad_(False)
    return ema


def ema_decay_at(iteration: int, decay: float, start_iteration: int = 0,
                 rampup: float | None = None) -> float:
    """Decay used at ``iteration``: 0 (plain copy) before ``start_iteration``, ``decay`` afterwards.

    With ``rampup`` the EMA's half-life (``ln 0.5 / ln decay`` iterations) is capped at ``rampup`` times the
    iterations done since ``start_iteration`` (StyleGAN2-ADA's ramp-up): a short run then exports an average
    of its last iterations instead of mostly its starting weights (decay 0.999 has a 693-iteration half-life,
    so after 200 iterations the EMA would still be 82% the initial generator).
    """
    if iteration < start_iteration:
        return 0.0
    if rampup is None or decay == 0.0:
        return decay
    half_life = min(math.log(0.5) / math.log(decay), rampup * (iteration - start_iteration + 1))
    return 0.5 ** (1.0 / half_life) if half_life > 0 else 0.0


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied.

    Raises:
        ValueError: the two modules do not have the same parameter / buffer names.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    ema_params = dict(ema.named_parameters())
    live_params = dict(model.named_parameters())
    if ema_params.keys() != live_params.keys():
        raise ValueError("EMA copy and model have different parameters")
    for name, live in live_params.items():
        if decay == 0.0:  # exact copy (lerp with weight 1 can be off by an ulp)
            ema_params[name].copy_(live)
        else:
            ema_params[name].lerp_(live.detach().to(ema_params[name].dtype), 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buffer in model.named_buffers():
        ema_buffers[name].copy_(buffer)
