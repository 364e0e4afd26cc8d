"""A plain residual U-Net: the yardstick the compact GPEN prior is raced against (not a GPEN, not shipped).

Three scales (32, 64, 128 channels at 1, 1/2 and 1/4 resolution), two 3x3 conv + LeakyReLU per block,
strided-conv downsampling, bilinear upsampling + skip concatenation, output = input + a 3x3 conv of the last
features (zero-initialised, so an untrained net is the identity). About 0.44 M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2))


class ResidualUNet(nn.Module):
    """``forward(x)``: (N, 3, H, W) RGB [-1, 1], H and W multiples of 4 -> same shape, ``x`` + correction."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3, w), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0, mode="bilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="bilinear"), e1], 1))
        return x + self.out(d1)
