"""Discriminator feature-matching loss (the GPEN paper's L_F)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def feature_matching_loss(real_features: Sequence[Tensor], fake_features: Sequence[Tensor],
                          norm: Literal["l1", "l2"] = "l1") -> Tensor:
    """Mean over the discriminator's blocks of the distance between real and fake intermediate features.

    The real features are detached: the loss only pulls the generator's output towards the real image's
    feature statistics, it never trains the discriminator.

    Args:
        real_features: per-block activations of D on the ground truth (list of (B, C_i, H_i, W_i)).
        fake_features: the same blocks on the restored images, differentiable w.r.t. the generator.
        norm: ``"l1"`` (mean absolute difference) or ``"l2"`` (mean squared difference).

    Returns:
        Scalar loss.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(f"feature lists must be non-empty and of equal length, got {len(real_features)} "
                         f"and {len(fake_features)}")
    distance = {"l1": F.l1_loss, "l2": F.mse_loss}[norm]
    terms = [distance(fake, real.detach()) for real, fake in zip(real_features, fake_features, strict=True)]
    return sum(terms) / len(terms)
