"""GPEN / StyleGAN2 residual discriminator with the reference key names.

Input images are RGB, float, in [-1, 1], NCHW. The minibatch-stddev feature uses the whole batch as one
group (as the GPEN reference does): a batch of one gives the constant sqrt(1e-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .gpen import channel_table, log2_size
from .layers import DEFAULT_BLUR_KERNEL, ConvLayer, EqualLinear, ResBlock

__all__ = ["DiscriminatorConfig", "GPENDiscriminator", "minibatch_stddev"]

STDDEV_EPS = 1e-8


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Constructor arguments of :class:`GPENDiscriminator` (``dataclasses.asdict``-able)."""

    size: int
    channel_multiplier: int = 2
    narrow: float = 1.0
    blur_kernel: tuple[int, ...] = DEFAULT_BLUR_KERNEL

    def asdict(self) -> dict:
        """Plain dict of the fields (JSON-serialisable)."""
        return asdict(self)


def minibatch_stddev(x: Tensor) -> Tensor:
    """Append one channel holding the mean (over C, H, W) of the per-position std over the whole batch.

    Args:
        x: (N, C, H, W) features.

    Returns:
        (N, C + 1, H, W).
    """
    std = torch.sqrt(x.var(dim=0, correction=0) + STDDEV_EPS).mean()
    n, _, h, w = x.shape
    return torch.cat([x, std.to(x.dtype).expand(n, 1, h, w)], dim=1)


class GPENDiscriminator(nn.Module):
    """Residual discriminator: ``convs`` (from-RGB ConvLayer + ResBlocks to 4 px), stddev, ``final_conv``,
    ``final_linear``.

    Args:
        size: image resolution (power of two, 8..2048).
        channel_multiplier: channel multiplier for >= 64 px.
        narrow: global channel scale (the released GPEN-BFR-256-D uses 1, not the generator's 0.5).
        blur_kernel: FIR taps for downsampling.
    """

    def __init__(self, size: int, channel_multiplier: int = 2, narrow: float = 1.0,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL) -> None:
        super().__init__()
        self.config = DiscriminatorConfig(size, channel_multiplier, narrow, tuple(blur_kernel))
        self.log_size = log2_size(size, "GPENDiscriminator")
        ch = channel_table(channel_multiplier, narrow, size)
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_channel = ch[size]
        for i in range(self.log_size, 2, -1):
            out_channel = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = 4  # kept from the reference; the forward uses the whole batch as the group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1),
        )

    @classmethod
    def from_config(cls, config: DiscriminatorConfig) -> GPENDiscriminator:
        """Build from a :class:`DiscriminatorConfig`."""
        return cls(**config.asdict())

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Score images.

        Args:
            x: (N, 3, size, size) float RGB in [-1, 1].
            return_features: also return every ``convs`` block's output (from-RGB at ``size`` px, then each
                ResBlock's, down to 4 px) for a feature-matching loss.

        Returns:
            (N, 1) logits, or ``(logits, features)`` when ``return_features``.
        """
        size = self.config.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"GPENDiscriminator: expected input (N, 3, {size}, {size}), got {tuple(x.shape)}"
            )
        features = []
        out = x
        for block in self.convs:
            out = block(out)
            if return_features:
                features.append(out)
        out = self.final_conv(minibatch_stddev(out))
        logits = self.final_linear(out.reshape(out.shape[0], -1))
        return (logits, features) if return_features else logits

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter names per group: "d_block_<res>" for res = size .. 8 (the from-RGB layer joins
        d_block_<size>; ResBlock ``convs.j`` is named by its input resolution) and "d_head" (final_conv,
        final_linear). Every trainable parameter is in exactly one group.
        """
        size = self.config.size
        groups: dict[str, list[str]] = {f"d_block_{size >> j}": [] for j in range(self.log_size - 2)}
        groups["d_head"] = []
        for name, _ in self.named_parameters():
            if name.startswith("convs."):
                j = int(name.split(".")[1])
                groups[f"d_block_{size >> max(j - 1, 0)}"].append(name)
            else:
                groups["d_head"].append(name)
        return groups
