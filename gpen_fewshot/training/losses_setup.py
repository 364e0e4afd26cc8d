"""Construction of the optional loss networks (LPIPS, identity network) from a :class:`LossConfig`."""

from __future__ import annotations

import logging

import cv2
import torch
from torch import Tensor, nn

from gpen_fewshot.faces.identity_net import DEFAULT_WEIGHTS, IdentityEncoder, load_identity_network
from gpen_fewshot.losses.identity import FacePerceptualLoss, IdentityLoss
from gpen_fewshot.losses.perceptual import PerceptualLoss
from gpen_fewshot.training.config import LossConfig
from gpen_fewshot.training.networks import locate_weights
from gpen_fewshot.utils.image import image_to_tensor, read_image

log = logging.getLogger(__name__)


def build_auxiliary_losses(loss: LossConfig, download: bool = False,
                           template: str = "gpen") -> dict[str, nn.Module]:
    """Frozen helper networks for the enabled optional losses.

    Keys: ``"lpips"``; ``"identity"`` (an :class:`IdentityLoss`, also used for ``identity_reference``);
    ``"face_perceptual"``. LPIPS enabled without its backbone file is an error (weights registry message).
    The identity terms are skipped with a warning when the identity network's file is missing, unless
    ``loss.identity_required`` (the bundled MobileFaceNet is never missing in a sound install).

    Raises:
        gpen_fewshot.weights.WeightsUnavailableError: a required weight file is missing.
    """
    aux: dict[str, nn.Module] = {}
    if loss.lpips > 0:
        aux["lpips"] = PerceptualLoss(random_backbone=loss.lpips_random_backbone, download=download)
    if loss.uses_identity_network:
        encoder = _identity_encoder(loss, download, template)
        if encoder is not None:
            aux["identity"] = IdentityLoss(encoder)
            if loss.face_perceptual:
                aux["face_perceptual"] = FacePerceptualLoss(encoder)
    return aux


def _identity_encoder(loss: LossConfig, download: bool, template: str) -> IdentityEncoder | None:
    """The identity network of the loss: ``identity_network``, else ``identity_fallback`` when the first's
    weights are missing, else None (terms skipped, warned) unless ``identity_required``."""
    try:
        return _load_encoder(loss.identity_network, loss.identity_weights, download, template)
    except FileNotFoundError as error:
        first_line = str(error).splitlines()[0]
        if loss.identity_fallback and loss.identity_fallback != loss.identity_network:
            log.warning("%s weights missing (%s): the identity losses use %s instead", loss.identity_network,
                        first_line, loss.identity_fallback)
            return _load_encoder(loss.identity_fallback, None, download, template)
        if loss.identity_required:
            raise
        log.warning("identity losses disabled (%s weights missing): %s", loss.identity_network, first_line)
        return None


def _load_encoder(network: str, weights: str | None, download: bool, template: str) -> IdentityEncoder:
    path = locate_weights(weights or DEFAULT_WEIGHTS[network], download)
    return IdentityEncoder(load_identity_network(network, path), network, template)


@torch.no_grad()
def reference_embedding(encoder: IdentityEncoder, crops: list[str], size: int, batch: int = 16) -> Tensor:
    """A person's reference identity: the normalised mean embedding of their clean aligned crops.

    Args:
        encoder: identity encoder (its template must be the crops' template).
        crops: paths of the aligned training crops (uint8 images, resized to ``size`` when needed).
        size: crop side the encoder expects.

    Returns:
        (D,) float unit vector.
    """
    embeddings = []
    for start in range(0, len(crops), batch):
        images = []
        for path in crops[start:start + batch]:
            image = read_image(path)
            if image.shape[:2] != (size, size):
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            images.append(image_to_tensor(image))
        embeddings.append(encoder(torch.stack(images)))
    return torch.nn.functional.normalize(torch.cat(embeddings).mean(0), dim=0)
