"""Losses for GPEN fine-tuning: adversarial + regularisers, content, feature matching, LPIPS, identity."""

from gpen_fewshot.losses.adversarial import (
    d_logistic_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    r1_penalty,
)
from gpen_fewshot.losses.content import content_loss
from gpen_fewshot.losses.feature_matching import feature_matching_loss

__all__ = [
    "content_loss",
    "d_logistic_loss",
    "feature_matching_loss",
    "g_nonsaturating_loss",
    "path_length_penalty",
    "r1_penalty",
]
