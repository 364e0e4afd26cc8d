"""Differentiable identity networks (ArcFace family) and the geometry that feeds them GPEN-aligned crops.

Two networks, one interface (``net(x)``: (B, 3, 112, 112) float RGB in [-1, 1] -> (B, D) unit embeddings):
- ``"mobilefacenet"``: InsightFace MobileFaceNet, 128-d, bundled (``gpen_fewshot/faces/mobilefacenet.py``);
  the offline default.
- ``"irse50"``: ArcFace IR-SE50 (``model_ir_se50.pth``, 512-d), the GPEN recipe's, downloaded when used.

Geometry (:func:`arcface_crop`): both networks were trained on ArcFace's 112 x 112 alignment
(``ARCFACE_112``). The GPEN template is that same 96 x 112 template padded by 0.25 and scaled, so a GPEN crop
of side S maps to the ArcFace crop by a pure scale + shift, fitted here by least squares on the five template
points (S = 256: scale 0.656, the face box spans crop pixels ~ (27..197, 29..199)). The crop is first
box-filtered by the integer factor that brings the remaining shrink under 2 (no aliasing), then resampled
bilinearly with ``grid_sample``, so gradients reach every input pixel.
"""

from __future__ import annotations

import os

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from gpen_fewshot import weights as registry
from gpen_fewshot.faces.alignment import template_points
from gpen_fewshot.faces.irse50 import load_irse50
from gpen_fewshot.faces.mobilefacenet import load_mobilefacenet

NETWORKS = ("mobilefacenet", "irse50")
DEFAULT_WEIGHTS = {"mobilefacenet": "mobilefacenet", "irse50": "model_ir_se50"}
INPUT_SIZE = 112
# ArcFace's five landmarks in its 112 x 112 crops (insightface), order as our templates.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def crop_to_arcface(size: int, template: str = "gpen") -> tuple[float, float, float]:
    """Scale ``s`` and shift ``(tx, ty)`` with ``arcface_point = s * crop_point + t`` for a ``size`` crop.

    Least-squares fit (uniform scale, no rotation: both templates are upright) in pixel-centre coordinates.
    """
    src = template_points(template, size).astype(np.float64)
    src_c, dst_c = src - src.mean(0), ARCFACE_112 - ARCFACE_112.mean(0)
    scale = float((src_c * dst_c).sum() / (src_c ** 2).sum())
    tx, ty = ARCFACE_112.mean(0) - scale * src.mean(0)
    return scale, float(tx), float(ty)


def arcface_crop(images: Tensor, template: str = "gpen") -> Tensor:
    """Resample aligned face crops to the identity networks' 112 x 112 ArcFace alignment (differentiable).

    Args:
        images: (B, 3, S, S) float RGB in [-1, 1], crops aligned with ``template`` ("gpen" or "ffhq").
        template: the crops' alignment template.

    Returns:
        (B, 3, 112, 112) float, same range; pixels outside the crop are border-replicated.
    """
    size = images.shape[-1]
    scale, tx, ty = crop_to_arcface(size, template)
    factor = max(1, int(1.0 / scale / 2.0))  # box-filter so that grid_sample shrinks by less than 2
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    # Output pixel u (0..111) samples crop pixel (u - t) / s, i.e. pooled pixel ((u - t) / s + 0.5) / f - 0.5.
    # In align_corners=False normalised coordinates, x_n = (2 * p + 1) / n - 1 for pixel p of an n-pixel axis.
    n_in, n_out = images.shape[-1], INPUT_SIZE
    a = (n_out / n_in) / (scale * factor)  # d x_in_n / d x_out_n
    offsets = []
    for t in (tx, ty):
        centre_out = (n_out - 1) / 2  # output pixel at normalised 0
        crop_pixel = (centre_out - t) / scale
        pooled = (crop_pixel + 0.5) / factor - 0.5
        offsets.append((2 * pooled + 1) / n_in - 1)
    theta = images.new_tensor([[a, 0.0, offsets[0]], [0.0, a, offsets[1]]]).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, [images.shape[0], 3, n_out, n_out], align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def load_identity_network(network: str = "mobilefacenet", weights: str | os.PathLike | None = None,
                          download: bool = False) -> nn.Module:
    """The frozen, eval-mode identity network ``network`` with its weights (registry name or file path).

    Raises:
        ValueError: unknown network, or a file that is not that network's weights.
        gpen_fewshot.weights.WeightsUnavailableError: a registry file that is missing (and not downloaded).
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown identity network {network!r}; choose one of {', '.join(NETWORKS)}")
    path = registry.locate(weights or DEFAULT_WEIGHTS[network], download)
    return load_mobilefacenet(path) if network == "mobilefacenet" else load_irse50(path)


class IdentityEncoder(nn.Module):
    """Identity network + geometry: aligned crops of any size -> unit embeddings (frozen, always eval mode).

    ``forward(images)``: (B, 3, S, S) RGB [-1, 1] crops aligned with ``template`` -> (B, D) float embeddings.
    """

    def __init__(self, network: nn.Module, name: str, template: str = "gpen") -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.template = template

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Keep the network in eval mode (BatchNorm statistics never change) whatever the parent does."""
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.network(arcface_crop(images.float(), self.template))

    def features(self, images: Tensor) -> list[Tensor]:
        """Intermediate maps of the network (MobileFaceNet only), input as :meth:`forward`."""
        if not hasattr(self.network, "features"):
            raise ValueError(f"identity network {self.name!r} exposes no intermediate features")
        return self.network.features(arcface_crop(images.float(), self.template))
