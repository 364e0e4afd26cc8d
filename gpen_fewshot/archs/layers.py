"""StyleGAN2 building blocks with the attribute names of the GPEN reference (rosinality naming).

The module tree, parameter names, shapes and initialisation follow the reference so that released GPEN
checkpoints load with ``strict=True``. The forward passes compute the same function, arranged for speed:

* biases are added inside the convolution that produces a tensor (conv2d / the depthwise blur);
* the activation gain (sqrt(2), and ResBlock's 1/sqrt(2)) is folded into the small weight tensors instead of
  being applied to the large activations (leaky ReLU is positively homogeneous);
* leaky ReLU runs in place on freshly made tensors, and the GPEN feature concatenation is built once;
* modulated convolutions fold the batch into conv groups (one conv call per layer) where the weights are
  small, and modulate the activations instead where the weights dominate (low resolutions);
* 1x1 modulated convs (ToRGB) run as matmuls (oneDNN's backward for 3 output channels is very slow);
* the 1x1 downsampling skip convolution only filters the samples its stride keeps.

Why one file over 400 lines: these are the reference network's building blocks, one class each, whose
attribute names make the released state-dict keys; splitting them would scatter the key layout the checkpoints
depend on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import (
    DEFAULT_ACT_SCALE,
    DEFAULT_NEGATIVE_SLOPE,
    fir_filter2d,
    fused_leaky_relu,
    make_kernel,
    upfirdn2d,
)

__all__ = [
    "Blur", "ConstantInput", "ConvLayer", "EqualConv2d", "EqualLinear", "FusedLeakyReLU", "ModulatedConv2d",
    "NoiseInjection", "PixelNorm", "ResBlock", "ScaledLeakyReLU", "StyledConv", "ToRGB", "Upsample",
]

DEFAULT_BLUR_KERNEL = (1, 3, 3, 1)
DEMOD_EPS = 1e-8  # the reference's epsilon inside rsqrt for weight demodulation (and pixel norm)


class PixelNorm(nn.Module):
    """Normalise each sample's feature vector (dim 1) to unit root-mean-square."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + DEMOD_EPS)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate (weights N(0,1)/lr_mul, runtime scale lr_mul/sqrt(in)).

    Args:
        in_dim: input features.
        out_dim: output features.
        bias: whether to learn a bias.
        bias_init: initial bias value.
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        activation: None or "fused_lrelu" (bias + leaky ReLU 0.2, gain sqrt(2)).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None) -> None:
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear: activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        if bias:
            self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        else:
            self.register_parameter("bias", None)
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with the equalised learning rate (weights N(0,1), runtime scale 1/sqrt(fan_in))."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.kernel_size = kernel_size
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channel))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by ``scale * leaky_relu(x + bias, negative_slope)``."""

    def __init__(self, channel: int, negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
                 scale: float = DEFAULT_ACT_SCALE) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"FusedLeakyReLU: scale must be positive, got {scale}")
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class ScaledLeakyReLU(nn.Module):
    """``sqrt(2) * leaky_relu(x)`` without bias (ConvLayer with ``bias=False, activate=True``)."""

    def __init__(self, negative_slope: float = DEFAULT_NEGATIVE_SLOPE) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.scale = DEFAULT_ACT_SCALE

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, None, self.negative_slope, self.scale)


class Blur(nn.Module):
    """FIR low-pass filter (``upfirdn2d`` without resampling); kernel stored as the buffer ``kernel``."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: Tensor, bias: Tensor | None = None, down: int = 1,
                gain: Tensor | None = None) -> Tensor:
        """Filter ``x`` (N,C,H,W); ``gain`` (C,)|(N,C) scales and ``bias`` (C,) shifts the output in the
        same conv; ``down`` decimates."""
        return fir_filter2d(x, self.kernel, self.pad, down, bias, gain)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion + filter, gain factor**2); kernel buffer ``kernel``."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * factor**2
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) convolution, optional 2x up- or downsampling.

    Weight shape (1, out, in, k, k) as in the reference. Two equivalent evaluations, chosen per call from
    the tensor sizes: per-sample modulated weights with the batch folded into conv groups (when the weights
    are small next to the activations: high resolutions), or modulating the activations and scaling the
    conv output (when the weights dominate: low resolutions). ``fuse_modulation`` forces one of them.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL) -> None:
        super().__init__()
        if upsample and downsample:
            raise ValueError("ModulatedConv2d: upsample and downsample are mutually exclusive")
        self.eps = DEMOD_EPS
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.demodulate = demodulate
        self.fuse_modulation: bool | None = None  # None: choose per call from the tensor sizes

    def forward(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """Modulated conv of x (N, in, H, W) with styles (N, style_dim).

        Returns ``gain * modconv(x) + bias`` (bias (out,) optional): (N, out, H', W'), H' = 2H when
        upsampling, H/2 when downsampling.
        """
        s = self.modulation(style) * self.scale  # (N, in)
        weight = self.weight[0]
        out_gain = None  # (N, out) factor applied to the conv output: demodulation times gain
        if self.demodulate:
            # sum over (in, k, k) of (w * s)^2 without materialising the modulated weights
            out_gain = torch.rsqrt(F.linear(s.square(), weight.square().sum(dim=(2, 3))) + self.eps)
            out_gain = out_gain * gain if gain != 1.0 else out_gain
        elif gain != 1.0:
            s = s * gain
        fuse = self.fuse_modulation
        if fuse is None:
            fuse = x.shape[0] * weight.numel() <= x.numel()
        if fuse:
            return self._forward_grouped(x, weight, s, out_gain, bias)
        return self._forward_batched(x, weight, s, out_gain, bias)

    def _forward_grouped(self, x: Tensor, weight: Tensor, s: Tensor, out_gain: Tensor | None,
                         bias: Tensor | None) -> Tensor:
        """Per-sample weights, batch folded into conv groups."""
        n, cin, h, w = x.shape
        k, cout = self.kernel_size, self.out_channel
        coef = s.view(n, 1, cin) if out_gain is None else out_gain.view(n, cout, 1) * s.view(n, 1, cin)
        if k == 1 and not (self.upsample or self.downsample):
            return _pointwise(x, weight.view(1, cout, cin) * coef, bias)
        x = x.reshape(1, n * cin, h, w)
        if self.upsample:
            weight = weight.transpose(0, 1).unsqueeze(0) * coef.transpose(1, 2)[..., None, None]
            out = F.conv_transpose2d(x, weight.reshape(n * cin, cout, k, k), stride=2, groups=n)
            return self.blur(out.view(n, cout, out.shape[2], out.shape[3]), bias=bias)
        weight = (weight.unsqueeze(0) * coef[..., None, None]).reshape(n * cout, cin, k, k)
        group_bias = None if bias is None else bias.repeat(n)
        if self.downsample:
            out = F.conv2d(self.blur(x), weight, group_bias, stride=2, groups=n)
        else:
            out = F.conv2d(x, weight, group_bias, padding=self.padding, groups=n)
        return out.view(n, cout, out.shape[2], out.shape[3])

    def _forward_batched(self, x: Tensor, weight: Tensor, s: Tensor, out_gain: Tensor | None,
                         bias: Tensor | None) -> Tensor:
        """Shared weights: modulate the input channels, scale the output channels."""
        n = x.shape[0]
        x = x * s.view(n, -1, 1, 1).to(x.dtype)
        if self.upsample:  # the output scale and bias ride on the depthwise blur
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            return self.blur(out, bias=bias, gain=out_gain)
        if self.downsample:
            out = F.conv2d(self.blur(x), weight, stride=2)
        elif self.kernel_size == 1:
            out = _pointwise(x, weight.view(1, self.out_channel, self.in_channel), None)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if out_gain is not None:
            out_gain = out_gain.view(n, -1, 1, 1).to(out.dtype)
            if bias is None:
                return out * out_gain
            return torch.addcmul(bias.to(out.dtype).view(1, -1, 1, 1), out, out_gain)
        return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """1x1 conv as a batched matmul: x (N, in, H, W), weight (N|1, out, in) -> (N, out, H, W).

    oneDNN's backward of a 1x1 conv with 3 output channels (ToRGB) is ~20x slower than the matmuls.
    """
    n, _, h, w = x.shape
    out = torch.matmul(weight.to(x.dtype), x.reshape(n, x.shape[1], h * w))
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, 1)
    return out.view(n, -1, h, w)


class NoiseInjection(nn.Module):
    """Adds (or, GPEN's ``isconcat``, concatenates along channels) ``weight * noise``; weight starts at 0.

    GPEN feeds the encoder features as the "noise", so ``noise`` is required (no random noise).
    """

    def __init__(self, isconcat: bool = True) -> None:
        super().__init__()
        self.isconcat = isconcat
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: Tensor, noise: Tensor) -> Tensor:
        scaled = self.weight.to(noise.dtype) * noise
        return torch.cat([image, scaled.to(image.dtype)], dim=1) if self.isconcat else image + scaled


class ConstantInput(nn.Module):
    """Learned constant (1, C, size, size) repeated over the batch."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d + NoiseInjection + FusedLeakyReLU (bias over ``out * 2`` channels when isconcat)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
                 demodulate: bool = True, isconcat: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection(isconcat)
        self.activate = FusedLeakyReLU(out_channel * (2 if isconcat else 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        """x (N, in, H, W), style (N, style_dim), noise (N, out, H', W') -> (N, out*(1+isconcat), H', W')."""
        act = self.activate
        gain, c = act.scale, self.conv.out_channel
        bias = act.bias * gain  # gain folded into weights and biases: lrelu(g*v) = g*lrelu(v), g > 0
        out = self.conv(x, style, gain=gain, bias=bias[:c])
        noise_gain = self.noise.weight * gain
        if self.noise.isconcat and not torch.is_grad_enabled():
            out = torch.cat([out, noise.to(out.dtype)], dim=1)
            # inference: in place on the fresh concatenation, no extra full-size temporary. (Under autograd
            # the in-place slice update would make it clone the slice, so build the half out of place.)
            out[:, c:].mul_(noise_gain).add_(bias[c:].view(1, -1, 1, 1))
        elif self.noise.isconcat:
            half = torch.addcmul(bias[c:].to(out.dtype).view(1, -1, 1, 1), noise.to(out.dtype),
                                 noise_gain.to(out.dtype))
            out = torch.cat([out, half], dim=1)
        else:
            out = torch.addcmul(out, noise.to(out.dtype), noise_gain.to(out.dtype))
        return F.leaky_relu_(out, act.negative_slope)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the upsampled previous skip."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        """x (N, in, H, W) -> (N, 3, H, W); ``skip`` (N, 3, H/2, W/2) is upsampled and added."""
        out = self.conv(x, style, bias=self.bias.view(3))
        if skip is not None:
            out = out + self.upsample(skip).to(out.dtype)
        return out


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU | ScaledLeakyReLU], an ``nn.Sequential`` as in the reference.

    With ``downsample`` the input is blurred (pad chosen so the stride-2 conv halves the size exactly).

    Args:
        in_channel: input channels.
        out_channel: output channels.
        kernel_size: conv kernel size (odd).
        downsample: blur + stride-2 conv.
        blur_kernel: 1-D FIR taps.
        bias: learn a bias (in the activation when ``activate``, else in the conv).
        activate: apply the (scaled) leaky ReLU.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, bias: bool = True,
                 activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel) if bias else ScaledLeakyReLU())
        super().__init__(*layers)
        self.downsample = downsample
        self.activate = activate
        self.padding = padding

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """x (N, in, H, W) -> ``gain *`` layer output (N, out, H', W'), H' = H/2 when downsampling."""
        if gain <= 0:
            raise ValueError(f"ConvLayer: gain must be positive, got {gain}")
        conv: EqualConv2d = self[1] if self.downsample else self[0]
        stride = conv.stride
        if self.downsample:
            if conv.kernel_size == 1:  # a 1x1 stride-2 conv only reads every other blurred sample
                x, stride = self[0](x, down=2), 1
            else:
                x = self[0](x)
        act = self[-1] if self.activate else None
        if act is not None:
            gain = gain * act.scale
        bias = getattr(act, "bias", None) if act is not None else conv.bias
        bias = None if bias is None else bias * gain
        out = F.conv2d(x, conv.weight * (conv.scale * gain), bias, stride=stride, padding=conv.padding)
        return out if act is None else F.leaky_relu_(out, act.negative_slope)


class ResBlock(nn.Module):
    """Discriminator residual block: two 3x3 ConvLayers (second downsamples) + 1x1 downsampling skip,
    / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, in, H, W) -> (N, out, H/2, W/2)."""
        gain = 1.0 / math.sqrt(2.0)
        return self.conv2(self.conv1(x), gain=gain) + self.skip(x, gain=gain)

