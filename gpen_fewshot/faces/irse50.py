"""ArcFace IR-SE50 (the network behind the released ``model_ir_se50.pth``), with the released module names.

The backbone is written with the module names of the released file (TreB1eN/InsightFace_Pytorch, also used
by pSp and GPEN's trainer), so the file loads with ``strict=True``: ``input_layer`` (conv 3x3 -> BN -> PReLU),
``body.<i>`` (24 IR-SE bottlenecks: ``shortcut_layer`` and ``res_layer`` = BN, conv, PReLU, conv, BN, SE),
``output_layer`` (BN2d, dropout, flatten, linear 512*7*7 -> 512, BN1d). The embedding is L2-normalised.
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
