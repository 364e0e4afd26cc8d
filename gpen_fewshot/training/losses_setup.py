"""Construction of the optional loss networks (LPIPS, ArcFace identity) from a :class:`LossConfig`."""

from __future__ import annotations

import logging

from torch import nn

from gpen_fewshot.losses.identity import IdentityLoss, load_irse50
from gpen_fewshot.losses.perceptual import PerceptualLoss
from gpen_fewshot.training.config import LossConfig
from gpen_fewshot.training.networks import locate_weights

log = logging.getLogger(__name__)


def build_auxiliary_losses(loss: LossConfig, download: bool = False) -> dict[str, nn.Module]:
    """Frozen helper networks for the enabled optional losses: ``{"lpips": ..., "identity": ...}``.

    LPIPS enabled without its backbone file is an error (weights registry message). The identity loss is
    skipped with a warning when ``model_ir_se50`` is missing, unless ``loss.identity_required``.

    Raises:
        gpen_fewshot.weights.WeightsUnavailableError: a required weight file is missing.
    """
    aux: dict[str, nn.Module] = {}
    if loss.lpips > 0:
        aux["lpips"] = PerceptualLoss(random_backbone=loss.lpips_random_backbone, download=download)
    if loss.identity > 0:
        try:
            path = locate_weights(loss.identity_weights, download)
        except FileNotFoundError as error:
            if loss.identity_required:
                raise
            log.warning("identity loss disabled (weight %s ignored): %s", loss.identity,
                        str(error).splitlines()[0])
        else:
            aux["identity"] = IdentityLoss(load_irse50(path))
    return aux
