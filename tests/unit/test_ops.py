"""upfirdn2d / fir_filter2d / fused_leaky_relu against a straightforward reference formulation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpen_fewshot.archs.ops import (
    fir_filter2d,
    fused_leaky_relu,
    make_kernel,
    upfirdn2d,
    upfirdn2d_output_size,
)


def reference_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
                        pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-insert, pad (negative = crop), full FIR convolution tap by tap, keep every down-th sample."""
    (up_x, up_y), (down_x, down_y), (x0, x1, y0, y1) = up, down, pad
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up_y, w * up_x)
    z[:, :, ::up_y, ::up_x] = x
    z = F.pad(z, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    z = z[:, :, max(-y0, 0): z.shape[2] - max(-y1, 0), max(-x0, 0): z.shape[3] - max(-x1, 0)]
    kh, kw = kernel.shape
    out_h, out_w = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = x.new_zeros(n, c, out_h, out_w)
    for i in range(kh):  # true convolution: out[y, x] = sum z[y + i, x + j] * k[kh-1-i, kw-1-j]
        for j in range(kw):
            out += z[:, :, i: i + out_h, j: j + out_w] * kernel[kh - 1 - i, kw - 1 - j]
    return out[:, :, ::down_y, ::down_x]


CASES = [  # up, down, pad (x0, x1, y0, y1)
    ((1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 1), (1, 1), (2, 1, 2, 1)),
    ((1, 1), (2, 2), (2, 2, 2, 2)),
    ((1, 1), (2, 2), (1, 1, 1, 1)),
    ((2, 2), (1, 1), (2, 1, 2, 1)),  # StyleGAN2 Upsample
    ((2, 2), (1, 1), (0, 0, 0, 0)),
    ((2, 2), (1, 1), (3, 3, 3, 3)),  # positive remainder after the transposed conv
    ((2, 2), (1, 1), (-1, 2, 1, -2)),  # negative pad = crop
    ((1, 1), (1, 1), (-1, 0, 0, -2)),
    ((3, 3), (2, 2), (1, 2, 2, 1)),
    ((2, 1), (1, 2), (1, 1, 0, 2)),  # anisotropic factors
]


@pytest.mark.parametrize("up,down,pad", CASES)
@pytest.mark.parametrize("kernel_kind", ["blur", "asymmetric"])
def test_upfirdn2d_matches_reference(up, down, pad, kernel_kind) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    kernel = make_kernel([1, 3, 3, 1]).double() if kernel_kind == "blur" else torch.randn(
        3, 4, generator=gen, dtype=torch.float64)  # non-square, non-symmetric: catches flips and axis mixups
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    expected = reference_upfirdn2d(x, kernel, up, down, pad)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-12), (out - expected).abs().max()
    kh, kw = kernel.shape
    assert out.shape[2] == upfirdn2d_output_size(7, kh, up[1], down[1], (pad[2], pad[3]))
    assert out.shape[3] == upfirdn2d_output_size(9, kw, up[0], down[0], (pad[0], pad[1]))


def test_upfirdn2d_two_value_pad_applies_to_both_axes() -> None:
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    k = make_kernel([1, 3, 3, 1]).double() * 4
    assert torch.equal(upfirdn2d(x, k, up=2, pad=(2, 1)), upfirdn2d(x, k, up=2, pad=(2, 1, 2, 1)))


def test_fir_filter2d_gain_and_bias() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    k = make_kernel([1, 3, 3, 1]).double()
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    plain = reference_upfirdn2d(x, k, (1, 1), (1, 1), (1, 1, 1, 1))
    gain = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
    out = fir_filter2d(x, k, (1, 1), gain=gain, bias=bias)
    assert torch.allclose(out, plain * gain.view(1, 3, 1, 1) + bias.view(1, 3, 1, 1), atol=1e-12)
    sample_gain = torch.rand(2, 3, generator=gen, dtype=torch.float64) + 0.5  # per sample and channel
    out = fir_filter2d(x, k, (1, 1), gain=sample_gain, bias=bias)
    assert torch.allclose(out, plain * sample_gain.view(2, 3, 1, 1) + bias.view(1, 3, 1, 1), atol=1e-12)


def test_fir_filter2d_matches_upfirdn2d_down() -> None:
    x = torch.randn(1, 4, 10, 10, dtype=torch.float64)
    k = make_kernel([1, 3, 3, 1]).double()
    expected = reference_upfirdn2d(x, k, (1, 1), (2, 2), (1, 1, 1, 1))
    assert torch.allclose(fir_filter2d(x, k, (1, 1), down=2), expected, atol=1e-12)


def test_make_kernel_normalised_and_validated() -> None:
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and abs(float(k.sum()) - 1) < 1e-6 and float(k[1, 1]) == pytest.approx(9 / 64)
    with pytest.raises(ValueError, match="make_kernel"):
        make_kernel(torch.ones(2, 2, 2))


def test_upfirdn2d_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="upfirdn2d"):
        upfirdn2d(torch.zeros(3, 8, 8), make_kernel([1, 1]))
    with pytest.raises(ValueError, match="pad"):
        upfirdn2d(torch.zeros(1, 1, 8, 8), make_kernel([1, 1]), pad=(1, 1, 1))


@pytest.mark.parametrize("slope,scale", [(0.2, 2**0.5), (0.1, 3.0), (0.0, 1.0)])
def test_fused_leaky_relu_honours_slope_and_scale(slope, scale) -> None:
    x = torch.randn(2, 5, 3, 3)
    b = torch.randn(5)
    v = x + b.view(1, 5, 1, 1)
    expected = torch.where(v >= 0, v, v * slope) * scale
    assert torch.allclose(fused_leaky_relu(x, b, slope, scale), expected, atol=1e-6)
    assert torch.allclose(fused_leaky_relu(x.flatten(2).mean(2), b, slope, scale),
                          torch.where(v.mean((2, 3)) >= 0, v.mean((2, 3)), v.mean((2, 3)) * slope) * scale,
                          atol=1e-5)  # 2-D input (EqualLinear)


def _away_from_zero(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float64 values with |v| >= 0.1 (finite differences are wrong across the leaky-ReLU kink)."""
    v = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v + 0.1 * torch.sign(v)


def test_ops_gradcheck_and_gradgradcheck() -> None:
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 4, dtype=torch.float64)  # asymmetric kernel
    check = dict(fast_mode=True)  # random projections: the full Jacobians are slow and add nothing here
    for kwargs in (dict(up=2, pad=(2, 1)), dict(down=2, pad=(1, 2)), dict(up=2, down=2, pad=(-1, 2, 1, 0))):
        fn = lambda t, kw=kwargs: upfirdn2d(t, k, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), **check)
        assert torch.autograd.gradgradcheck(fn, (x,), **check)
    gain = torch.rand(1, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    filt = lambda t, g, b: fir_filter2d(t, k, (1, 1), gain=g, bias=b)  # noqa: E731
    assert torch.autograd.gradcheck(filt, (x, gain, bias), **check)
    assert torch.autograd.gradgradcheck(filt, (x, gain, bias), **check)
    v = _away_from_zero((2, 3, 4, 4), 0).requires_grad_()
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    act = lambda t, bb: fused_leaky_relu(t, bb, 0.2, 2**0.5)  # noqa: E731
    assert torch.autograd.gradcheck(act, (v, b), **check)
    assert torch.autograd.gradgradcheck(act, (v, b), **check)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ops_keep_low_precision_dtype(dtype) -> None:
    x = torch.randn(1, 3, 8, 8)
    k = make_kernel([1, 3, 3, 1])  # float32 buffer
    ref = upfirdn2d(x, k * 4, up=2, pad=(2, 1))
    out = upfirdn2d(x.to(dtype), k * 4, up=2, pad=(2, 1))
    assert out.dtype == dtype
    assert torch.allclose(out.float(), ref, atol=5e-2)
    assert fused_leaky_relu(x.to(dtype), torch.zeros(3)).dtype == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fir_filter2d(x, k, (1, 1), bias=torch.zeros(3), gain=torch.ones(3))
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), fir_filter2d(x, k, (1, 1)), atol=5e-2)
