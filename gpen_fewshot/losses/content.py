"""Pixel (content) losses between a restored image and its ground truth."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def content_loss(fake: Tensor, target: Tensor, smooth_l1_weight: float = 1.0, l1_weight: float = 0.0,
                 beta: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted Smooth-L1 + L1 distance.

    On [-1, 1] images Smooth-L1 with ``beta = 1`` is ``0.5 * MSE`` for every pixel error below 1 (the GPEN
    reference trainer's content loss).

    Args:
        fake: (B, 3, S, S) restored images, RGB, [-1, 1].
        target: same shape, ground truth.
        smooth_l1_weight: weight of ``F.smooth_l1_loss(fake, target, beta=beta)``; 0 skips it.
        l1_weight: weight of ``F.l1_loss``; 0 skips it.
        beta: Smooth-L1 transition point.

    Returns:
        ``(weighted_sum, parts)`` where ``parts`` maps ``"smooth_l1"`` / ``"l1"`` to the unweighted terms
        that were computed.
    """
    parts: dict[str, Tensor] = {}
    total = fake.new_zeros(())
    if smooth_l1_weight:
        parts["smooth_l1"] = F.smooth_l1_loss(fake, target, beta=beta)
        total = total + smooth_l1_weight * parts["smooth_l1"]
    if l1_weight:
        parts["l1"] = F.l1_loss(fake, target)
        total = total + l1_weight * parts["l1"]
    return total, parts
