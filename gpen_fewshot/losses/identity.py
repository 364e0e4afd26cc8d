"""Identity loss with ArcFace IR-SE50 (the network behind the released ``model_ir_se50.pth``).

The backbone is written here with the module names of the released file (TreB1eN/InsightFace_Pytorch,
also used by pSp and GPEN's trainer), so the file loads with ``strict=True``:
``input_layer`` (conv 3x3 -> BN -> PReLU), ``body.<i>`` (24 IR-SE bottlenecks: ``shortcut_layer`` and
``res_layer`` = BN, conv, PReLU, conv, BN, SE), ``output_layer`` (BN2d, dropout, flatten, linear 512*7*7 ->
512, BN1d). The embedding is L2-normalised.

The loss crops the face region of a GPEN-aligned crop (rows ``35s : H-33s``, cols ``32s : W-36s`` with
``s = size / 256``), average-pools it to 112 x 112 and returns ``1 - cos(embed(fake), embed(target))``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (in_channels, depth, units) per stage of the 50-layer network; the first unit of each stage has stride 2.
_IR50_STAGES: tuple[tuple[int, int, int], ...] = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
_EMBEDDING_SIZE = 512
_INPUT_SIZE = 112
# Face box inside a 256-px GPEN crop (rows top/bottom margin, cols left/right margin), as in GPEN's trainer.
_CROP_MARGINS_256 = (35, 33, 32, 36)


class _Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate with 1x1 convolutions ``fc1`` / ``fc2`` (no bias)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """Improved-residual unit with SE; a strided 1x1 max-pool is the shortcut when channels do not change."""

    def __init__(self, in_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 embedding network for 112 x 112 aligned faces.

    ``forward(x)``: (B, 3, 112, 112) float RGB in [-1, 1] -> (B, 512) L2-normalised embeddings.
    """

    def __init__(self, drop_ratio: float = 0.6) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_channels, depth, count in _IR50_STAGES:
            units.append(BottleneckIRSE(in_channels, depth, 2))
            units.extend(BottleneckIRSE(depth, depth, 1) for _ in range(count - 1))
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(drop_ratio), _Flatten(),
            nn.Linear(512 * 7 * 7, _EMBEDDING_SIZE), nn.BatchNorm1d(_EMBEDDING_SIZE, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def load_irse50(path: str | os.PathLike) -> IRSE50:
    """Build :class:`IRSE50` and load a ``model_ir_se50.pth`` state dict strictly (eval mode, frozen).

    Raises:
        ValueError: the file is not an IR-SE50 state dict; the message names the file and the key problems.
    """
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = IRSE50()
    for key, value in net.state_dict().items():
        # Files saved by PyTorch < 0.4.1 have no BatchNorm step counters (unused in eval mode anyway).
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[:3]
        raise ValueError(f"{path}: not an ArcFace IR-SE50 state dict ({' '.join(first)})") from None
    net.eval().requires_grad_(False)
    return net


def crop_face_region(images: Tensor) -> Tensor:
    """Crop the inner face of GPEN-aligned crops and pool it to 112 x 112.

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
    """``1 - cos`` between ArcFace embeddings of the restored face and its ground truth.

    The network is frozen and kept in eval mode (BatchNorm statistics never change); gradients flow to the
    restored images only.
    """

    def __init__(self, network: IRSE50) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> IdentityLoss:
        """Keep the embedding network in eval mode whatever the parent module does."""
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, fake: Tensor, target: Tensor) -> Tensor:
        """Mean ``1 - cos(embed(fake), embed(target))``; images (B, 3, S, S) RGB [-1, 1]."""
        fake_embedding = self.network(crop_face_region(fake))
        with torch.no_grad():
            target_embedding = self.network(crop_face_region(target))
        return (1.0 - (fake_embedding * target_embedding).sum(1)).mean()
