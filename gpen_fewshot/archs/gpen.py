"""GPEN generator: a U-shaped encoder feeding a StyleGAN2 decoder (GAN prior), reference key names.

Images are RGB, float, in [-1, 1], NCHW. The forward pass is deterministic: the encoder features take the
place of StyleGAN2's random noise (concatenated, ``isconcat``), and one latent ``w`` drives every layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .layers import (
    DEFAULT_BLUR_KERNEL,
    ConstantInput,
    ConvLayer,
    EqualLinear,
    PixelNorm,
    StyledConv,
    ToRGB,
)

# ToRGB weight scale of a fresh residual generator: its output starts within ~0.005 (mean abs) of its input.
RESIDUAL_RGB_INIT = 0.01
# Initial gain of the concatenated encoder features in a fresh residual generator. The reference starts every
# NoiseInjection weight at 0, so the decoder first sees no encoder feature at all and the encoder gets no
# gradient until Adam has grown the gains (~lr per step): an overfit probe gained 0.34 dB in 100 updates
# from 0 and 0.67 dB from 1 (issue 13).
RESIDUAL_NOISE_INIT = 1.0
# Kernel of the first encoder layer (ecd0) of a residual generator: the reference's 1x1 leaves a single 3x3
# conv at full resolution between the input and the output; 3x3 took the probe from 0.89 to 1.21 dB
# (issue 13).
RESIDUAL_ECD0_KERNEL = 3

__all__ = ["GPENGenerator", "GeneratorConfig", "StyleDecoder", "channel_table", "log2_size"]


def channel_table(channel_multiplier: int = 2, narrow: float = 1.0, max_size: int = 2048) -> dict[int, int]:
    """GPEN's channels per resolution (shared by generator and discriminator), ``int()`` of each entry.

    Raises:
        ValueError: if ``narrow``/``channel_multiplier`` leave a resolution up to ``max_size`` without
            channels.
    """
    base = {4: 512, 8: 512, 16: 512, 32: 512}
    table = {res: int(c * narrow) for res, c in base.items()}
    for res, c in {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}.items():
        table[res] = int(c * channel_multiplier * narrow)
    if min(c for res, c in table.items() if res <= max_size) <= 0:
        raise ValueError(f"channel_table: channel_multiplier={channel_multiplier}, narrow={narrow} gives a "
                         f"resolution with no channels: {table}")
    return table


def log2_size(size: int, name: str) -> int:
    """log2 of a power-of-two image size between 8 and 2048, else ValueError naming ``name``."""
    if size not in {2**k for k in range(3, 12)}:
        raise ValueError(f"{name}: size must be a power of two between 8 and 2048, got {size}")
    return int(math.log2(size))


@dataclass(frozen=True)
class GeneratorConfig:
    """Constructor arguments of :class:`GPENGenerator` (``dataclasses.asdict``-able)."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    narrow: float = 1.0
    blur_kernel: tuple[int, ...] = DEFAULT_BLUR_KERNEL
    lr_mlp: float = 0.01
    isconcat: bool = True
    residual: bool = False

    def asdict(self) -> dict:
        """Plain dict of the fields (JSON-serialisable)."""
        return asdict(self)


class StyleDecoder(nn.Module):
    """The StyleGAN2 generator inside GPEN (reference attribute ``generator``).

    Args:
        size: output resolution (power of two).
        style_dim: latent width.
        n_mlp: mapping-network depth.
        channel_multiplier: channel multiplier for >= 64 px.
        narrow: global channel scale.
        blur_kernel: FIR taps for resampling.
        lr_mlp: mapping-network learning-rate multiplier.
        isconcat: concatenate (True) or add the encoder features.
    """

    def __init__(self, size: int, style_dim: int, n_mlp: int, channel_multiplier: int = 2,
                 narrow: float = 1.0, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
                 lr_mlp: float = 0.01, isconcat: bool = True) -> None:
        super().__init__()
        self.size, self.style_dim, self.log_size = size, style_dim, log2_size(size, "StyleDecoder")
        mult = 2 if isconcat else 1
        ch = channel_table(channel_multiplier, narrow, size)
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, isconcat=isconcat)
        self.to_rgb1 = ToRGB(ch[4] * mult, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = ch[4]
        for i in range(3, self.log_size + 1):
            out_channel = ch[2**i]
            self.convs.append(StyledConv(in_channel * mult, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel, isconcat=isconcat))
            self.convs.append(StyledConv(out_channel * mult, out_channel, 3, style_dim,
                                         blur_kernel=blur_kernel, isconcat=isconcat))
            self.to_rgbs.append(ToRGB(out_channel * mult, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel
        self.n_latent = self.log_size * 2 - 2

    def forward(self, w: Tensor, features: Sequence[Tensor]) -> Tensor:
        """Synthesise the image.

        Args:
            w: (N, style_dim) latent used by every layer, or (N, n_latent, style_dim) one per layer.
            features: encoder features coarse to fine, ``features[i]`` (N, C_i, 4*2^i, 4*2^i).

        Returns:
            (N, 3, size, size) image, nominally [-1, 1] (no tanh).
        """
        if len(features) != self.log_size - 1:
            raise ValueError(f"StyleDecoder: expected {self.log_size - 1} feature maps, got {len(features)}")
        latent = w.unsqueeze(1).expand(-1, self.n_latent, -1) if w.ndim == 2 else w
        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], features[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.convs[2 * j](out, latent[:, i], features[j + 1])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], features[j + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


class GPENGenerator(nn.Module):
    """GPEN ``FullGenerator``: encoder ``ecd0..ecd{L-2}`` + ``final_linear`` -> z -> ``generator``.

    Args:
        size: image resolution (power of two, 8..2048).
        style_dim: latent width (512 in the released models).
        n_mlp: mapping-network depth (8).
        channel_multiplier: channel multiplier for >= 64 px (2 for 512/1024/2048, 1 for GPEN-BFR-256).
        narrow: global channel scale (0.5 for GPEN-BFR-256).
        blur_kernel: FIR taps for resampling.
        lr_mlp: mapping-network learning-rate multiplier.
        isconcat: concatenate the encoder features to the decoder activations.
        residual: the project's compact-prior layout (off in released models): output = input + decoder
            output, so an untrained network is close to the identity and a clean face passes through; the
            first encoder layer is 3x3 instead of 1x1 and the feature-concatenation gains start at 1 instead
            of 0 (both for learning speed, see the constants above). Adds a scalar buffer ``input_skip`` to
            the state dict, which is how checkpoints tell the layout apart (released files have none and
            load unchanged).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 narrow: float = 1.0, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
                 lr_mlp: float = 0.01, isconcat: bool = True, residual: bool = False) -> None:
        super().__init__()
        self.config = GeneratorConfig(size, style_dim, n_mlp, channel_multiplier, narrow,
                                      tuple(blur_kernel), lr_mlp, isconcat, residual)
        self.log_size = log2_size(size, "GPENGenerator")
        ch = channel_table(channel_multiplier, narrow, size)
        self.generator = StyleDecoder(size, style_dim, n_mlp, channel_multiplier, narrow, blur_kernel,
                                      lr_mlp, isconcat)
        self.names = [f"ecd{i}" for i in range(self.log_size - 1)]
        self.ecd0 = nn.Sequential(ConvLayer(3, ch[size], RESIDUAL_ECD0_KERNEL if residual else 1))
        for j in range(1, self.log_size - 1):
            res = 2 ** (self.log_size - j)
            layer = ConvLayer(ch[2 * res], ch[res], 3, downsample=True, blur_kernel=blur_kernel)
            setattr(self, self.names[j], nn.Sequential(layer))
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, style_dim, activation="fused_lrelu"))
        if residual:
            self.register_buffer("input_skip", torch.ones(()))
            self._shrink_to_rgb(RESIDUAL_RGB_INIT)
            with torch.no_grad():
                for name, param in self.named_parameters():
                    if name.endswith(".noise.weight"):
                        param.fill_(RESIDUAL_NOISE_INIT)

    def _shrink_to_rgb(self, factor: float) -> None:
        """Scale the ToRGB weights down so that the initial residual is small. Not zero: every ToRGB reads the
        concatenated encoder features, and a zero weight would leave that path without gradient."""
        with torch.no_grad():
            for to_rgb in [self.generator.to_rgb1, *self.generator.to_rgbs]:
                to_rgb.conv.weight.mul_(factor)

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> GPENGenerator:
        """Build from a :class:`GeneratorConfig`."""
        return cls(**config.asdict())

    @property
    def n_latent(self) -> int:
        """Number of per-layer latents the decoder consumes (2*log2(size) - 2)."""
        return self.generator.n_latent

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encode a degraded face.

        Args:
            x: (N, 3, size, size) float RGB in [-1, 1].

        Returns:
            ``(z, features)``: z (N, style_dim) (mapped to w by :meth:`mapping`) and the encoder feature maps
            ordered coarse to fine (4 px first, ``size`` px last), as :meth:`decode` consumes them.
        """
        size = self.config.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"GPENGenerator: expected input (N, 3, {size}, {size}), got {tuple(x.shape)}")
        features = []
        out = x
        for name in self.names:
            out = getattr(self, name)(out)
            features.append(out)
        z = self.final_linear(out.reshape(out.shape[0], -1))
        return z, features[::-1]

    def mapping(self, z: Tensor) -> Tensor:
        """Mapping MLP (``generator.style``): z (N, style_dim) -> w (N, style_dim)."""
        return self.generator.style(z)

    def decode(self, w: Tensor, features: Sequence[Tensor]) -> Tensor:
        """Decoder: w (N, style_dim) or (N, n_latent, style_dim) + features -> (N, 3, size, size) image.

        For path-length regularisation pass a repeated ``w`` of shape (N, n_latent, style_dim) that requires
        grad (the reference differentiates with respect to it).
        """
        return self.generator(w, features)

    def forward(self, x: Tensor) -> Tensor:
        """Restore faces: (N, 3, size, size) RGB [-1, 1] -> (N, 3, size, size), nominally [-1, 1]."""
        z, features = self.encode(x)
        out = self.decode(self.mapping(z), features)
        return out + x.to(out.dtype) if self.config.residual else out

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter names per group; every trainable parameter is in exactly one group (some may be empty).

        Groups: "encoder" (ecd*, final_linear), "mapping" (generator.style), "decoder_coarse" (4-16 px),
        "decoder_middle" (32-64 px), "decoder_fine" (>= 128 px), "to_rgb", "noise" (NoiseInjection weights).
        """
        groups: dict[str, list[str]] = {k: [] for k in (
            "encoder", "mapping", "decoder_coarse", "decoder_middle", "decoder_fine", "to_rgb", "noise")}
        for name, _ in self.named_parameters():
            groups[_generator_group(name)].append(name)
        return groups


def _decoder_band(resolution: int) -> str:
    if resolution <= 16:
        return "decoder_coarse"
    return "decoder_middle" if resolution <= 64 else "decoder_fine"


def _generator_group(name: str) -> str:
    """Group of one GPENGenerator parameter name (see ``parameter_groups``)."""
    if not name.startswith("generator."):
        return "encoder"
    parts = name.split(".")
    if parts[1] == "style":
        return "mapping"
    if parts[1] in ("to_rgb1", "to_rgbs"):
        return "to_rgb"
    if name.endswith(".noise.weight"):
        return "noise"
    if parts[1] in ("input", "conv1"):
        return _decoder_band(4)
    if parts[1] == "convs":
        return _decoder_band(2 ** (int(parts[2]) // 2 + 3))
    raise ValueError(f"GPENGenerator.parameter_groups: unexpected parameter {name}")

