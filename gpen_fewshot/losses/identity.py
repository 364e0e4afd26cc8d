"""Identity losses (``1 - cos`` of ArcFace-family embeddings), a face-perceptual loss, and ArcFace IR-SE50.

The networks and the crop geometry live in ``gpen_fewshot.faces`` (``identity_net``: MobileFaceNet, bundled,
the offline default; IR-SE50 in ``irse50``, downloaded, re-exported here for older imports).

GPEN's own trainer cropped the face region of a GPEN-aligned crop (rows ``35s : H-33s``, cols ``32s : W-36s``
with ``s = size / 256``) and average-pooled it to 112 x 112 (:func:`crop_face_region`); the losses here use
the exact ArcFace alignment instead (``identity_net.arcface_crop``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpen_fewshot.faces.identity_net import IdentityEncoder
from gpen_fewshot.faces.irse50 import IRSE50, load_irse50  # noqa: F401 (public here)

_INPUT_SIZE = 112
# Face box inside a 256-px GPEN crop (rows top/bottom margin, cols left/right margin), as in GPEN's trainer.
_CROP_MARGINS_256 = (35, 33, 32, 36)


def crop_face_region(images: Tensor) -> Tensor:
    """Crop the inner face of GPEN-aligned crops and pool it to 112 x 112 (GPEN trainer's IR-SE50 geometry).

    Kept for reference and tests; the losses use :func:`gpen_fewshot.faces.identity_net.arcface_crop`, the
    exact ArcFace alignment, for both networks.

    Args:
        images: (B, 3, S, S) float RGB in [-1, 1], GPEN-aligned crops of any size S.

    Returns:
        (B, 3, 112, 112) float tensor.
    """
    size = images.shape[-1]
    top, bottom, left, right = (round(m * size / 256) for m in _CROP_MARGINS_256)
    face = images[:, :, top:size - bottom, left:size - right]
    return F.adaptive_avg_pool2d(face, (_INPUT_SIZE, _INPUT_SIZE))


class IdentityLoss(nn.Module):
    """``1 - cos`` between identity embeddings of restored faces and a target.

    Targets: the pair's ground truth (:meth:`forward`) or a fixed embedding, e.g. a person's reference
    (mean embedding over their training photos, :meth:`to_embedding`). The network is frozen and in eval mode;
    gradients flow to the restored images only.

    Args:
        encoder: an :class:`~gpen_fewshot.faces.identity_net.IdentityEncoder` (crop geometry + network), or a
            bare network taking 112 x 112 crops (wrapped with the GPEN-template geometry).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not isinstance(encoder, IdentityEncoder):
            encoder = IdentityEncoder(encoder, type(encoder).__name__.lower())
        self.encoder = encoder

    @property
    def network_name(self) -> str:
        """Name of the identity network (``"mobilefacenet"`` / ``"irse50"``), for labelling metrics."""
        return self.encoder.name

    def forward(self, fake: Tensor, target: Tensor) -> Tensor:
        """Mean ``1 - cos(embed(fake), embed(target))``; images (B, 3, S, S) RGB [-1, 1], aligned crops."""
        with torch.no_grad():
            target_embedding = self.encoder(target)
        return self.to_embedding(fake, target_embedding)

    def to_embedding(self, fake: Tensor, embedding: Tensor) -> Tensor:
        """Mean ``1 - cos(embed(fake), embedding)``; ``embedding`` (D,) or (B, D), need not be unit length."""
        fake_embedding = self.encoder(fake)
        target = F.normalize(embedding.to(fake_embedding).reshape(-1, fake_embedding.shape[1]), dim=1)
        return (1.0 - (fake_embedding * target).sum(1)).mean()


class FacePerceptualLoss(nn.Module):
    """Perceptual distance on an identity network's intermediate features: an offline stand-in for LPIPS.

    Per layer, features are unit-normalised along channels (as LPIPS does) and compared by mean squared
    difference; the layers are averaged. Uses MobileFaceNet's 56/28/14/7-px maps of the ArcFace-aligned face.
    """

    def __init__(self, encoder: IdentityEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, fake: Tensor, target: Tensor) -> Tensor:
        """Scalar loss; images (B, 3, S, S) RGB [-1, 1] aligned crops."""
        with torch.no_grad():
            target_maps = self.encoder.features(target)
        total = fake.new_zeros(())
        fake_maps = self.encoder.features(fake)
        for f, t in zip(fake_maps, target_maps, strict=True):
            total = total + (F.normalize(f, dim=1) - F.normalize(t, dim=1)).pow(2).sum(1).mean()
        return total / len(fake_maps)
