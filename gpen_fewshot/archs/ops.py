"""Pure-PyTorch StyleGAN2 operators: FIR resampling (upfirdn2d) and the fused bias + leaky ReLU.

Both run on any device and dtype PyTorch supports, need no compiled extension and support double backward
(R1 and path-length regularisation differentiate through them twice).

``upfirdn2d`` follows the StyleGAN2 definition: insert ``up - 1`` zeros after every sample, pad by
``pad`` (negative values crop), convolve with the FIR ``kernel`` (a true convolution, i.e. the kernel is
flipped relative to ``conv2d``'s correlation), keep every ``down``-th sample. Instead of materialising the
zero-inserted tensor it uses one depthwise ``conv_transpose2d`` (stride ``up``) or ``conv2d`` (stride
``down``), which gives identical values at a fraction of the cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fir_filter2d", "fused_leaky_relu", "make_kernel", "upfirdn2d", "upfirdn2d_output_size"]

DEFAULT_NEGATIVE_SLOPE = 0.2
DEFAULT_ACT_SCALE = math.sqrt(2.0)


def make_kernel(taps: tuple[float, ...] | list[float] | Tensor) -> Tensor:
    """Build a normalised 2-D FIR kernel.

    Args:
        taps: 1-D taps (outer product with themselves) or a 2-D kernel.

    Returns:
        float32 kernel of shape (K, K) (or the given 2-D shape) summing to 1.
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    if k.ndim != 2:
        raise ValueError(f"make_kernel: expected 1-D taps or a 2-D kernel, got shape {tuple(k.shape)}")
    return k / k.sum()


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _pad4(pad: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Normalise ``pad`` to (x0, x1, y0, y1); two values apply to both axes (the StyleGAN2 convention)."""
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad[0], pad[1], pad[2], pad[3]
    raise ValueError(f"upfirdn2d: pad must have 2 or 4 entries, got {pad}")


def upfirdn2d_output_size(
    size: int, kernel_size: int, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> int:
    """Length of one spatial axis after :func:`upfirdn2d` (``pad`` = (before, after) for that axis)."""
    return (size * up + pad[0] + pad[1] - kernel_size) // down + 1


def upfirdn2d(
    x: Tensor,
    kernel: Tensor,
    up: int | tuple[int, int] = 1,
    down: int | tuple[int, int] = 1,
    pad: tuple[int, ...] = (0, 0),
) -> Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images.

    Args:
        x: (N, C, H, W) tensor, any floating dtype.
        kernel: (kh, kw) FIR kernel; cast to ``x.dtype`` (so it works under autocast).
        up: zero-insertion factor, int or (up_x, up_y).
        down: decimation factor, int or (down_x, down_y).
        pad: (p0, p1) for both axes or (x0, x1, y0, y1); negative values crop.

    Returns:
        (N, C, H', W') tensor with H' = (H*up_y + y0 + y1 - kh) // down_y + 1 (W' likewise).
    """
    if x.ndim != 4 or kernel.ndim != 2:
        raise ValueError(f"upfirdn2d: expected x (N,C,H,W) and a 2-D kernel, got {tuple(x.shape)}, "
                         f"{tuple(kernel.shape)}")
    up_x, up_y = _pair(up)
    down_x, down_y = _pair(down)
    px0, px1, py0, py1 = _pad4(tuple(pad))
    if up_x == 1 and up_y == 1:
        return fir_filter2d(x, kernel, (px0, px1, py0, py1), (down_x, down_y))
    channels = x.shape[1]
    kh, kw = kernel.shape
    # Zero-insert + convolve == transposed convolution with stride `up` and the unflipped kernel. Its
    # "full" output starts kh-1 samples before the reference's padded signal, so shift by the pads.
    left_x, right_x = px0 + 1 - kw, px1 + up_x - kw
    left_y, right_y = py0 + 1 - kh, py1 + up_y - kh
    crop_x = max(0, -max(left_x, right_x))  # the crop both sides need: conv_transpose2d does it itself
    crop_y = max(0, -max(left_y, right_y))
    weight = kernel.to(dtype=x.dtype, device=x.device).expand(channels, 1, kh, kw)
    out = F.conv_transpose2d(x, weight, stride=(up_y, up_x), padding=(crop_y, crop_x), groups=channels)
    rest = [left_x + crop_x, right_x + crop_x, left_y + crop_y, right_y + crop_y]
    if any(rest):
        out = F.pad(out, rest)
    if down_x > 1 or down_y > 1:
        out = out[:, :, ::down_y, ::down_x]
    return out


def fir_filter2d(
    x: Tensor,
    kernel: Tensor,
    pad: tuple[int, ...] = (0, 0),
    down: int | tuple[int, int] = 1,
    bias: Tensor | None = None,
    gain: Tensor | None = None,
) -> Tensor:
    """``upfirdn2d`` without upsampling, optionally with per-channel gains and bias in the same conv.

    Args:
        x: (N, C, H, W) tensor.
        kernel: (kh, kw) FIR kernel (true convolution; cast to ``x.dtype``).
        pad: (p0, p1) for both axes or (x0, x1, y0, y1); negative values crop.
        down: decimation factor, int or (down_x, down_y).
        bias: optional (C,) tensor added to every output sample (after the gain).
        gain: optional (C,) or (N, C) tensor multiplying each channel's (each sample's) output.

    Returns:
        (N, C, H', W') tensor, H' = (H + y0 + y1 - kh) // down_y + 1 (W' likewise).
    """
    down_x, down_y = _pair(down)
    px0, px1, py0, py1 = _pad4(tuple(pad))
    n, channels, h, w = x.shape
    kh, kw = kernel.shape
    if px0 == px1 >= 0 and py0 == py1 >= 0:
        padding = (py0, px0)  # let the conv pad: no padded copy of x
    else:
        x, padding = F.pad(x, [px0, px1, py0, py1]), (0, 0)
    # conv2d correlates, so flip to convolve; one depthwise filter per channel.
    weight = kernel.to(dtype=x.dtype, device=x.device).flip([0, 1]).expand(channels, 1, kh, kw)
    if bias is not None:
        bias = bias.to(x.dtype)
    if gain is not None and gain.ndim == 2 and n > 1:
        # per-sample gains: fold the batch into the channels (a view for contiguous x)
        weight = weight.repeat(n, 1, 1, 1) * gain.reshape(-1, 1, 1, 1).to(x.dtype)
        bias = None if bias is None else bias.repeat(n)
        out = F.conv2d(x.reshape(1, n * channels, h, w), weight, bias, (down_y, down_x), padding,
                       groups=n * channels)
        return out.view(n, channels, out.shape[2], out.shape[3])
    if gain is not None:
        weight = weight * gain.reshape(-1, 1, 1, 1).to(x.dtype)
    return F.conv2d(x, weight, bias, stride=(down_y, down_x), padding=padding, groups=channels)


def fused_leaky_relu(
    x: Tensor,
    bias: Tensor | None = None,
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
    scale: float = DEFAULT_ACT_SCALE,
) -> Tensor:
    """``scale * leaky_relu(x + bias, negative_slope)`` with the bias broadcast along dim 1.

    Args:
        x: (N, C, ...) tensor.
        bias: (C,) tensor or None.
        negative_slope: slope for negative inputs.
        scale: output gain (sqrt(2) keeps the activation variance for leaky ReLU 0.2).

    Returns:
        Tensor with the shape and dtype of ``x`` (the bias is cast to ``x.dtype``).
    """
    if bias is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x + bias.to(x.dtype).view(shape)
    return F.leaky_relu(x, negative_slope) * scale
