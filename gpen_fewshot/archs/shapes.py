"""Expected state_dict keys and shapes of the reference GPEN networks, computed from their config alone.

Used to infer a checkpoint's config and to explain mismatches (``checkpoints.py``). Deliberately independent
of the module code in ``gpen.py`` / ``discriminator.py``: the tests check both against the key listings of the
released checkpoints, so each one verifies the other. Works on meta tensors (only ``.shape`` is read).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor

Shapes = dict[str, tuple[int, ...]]

_KERNEL = (4, 4)  # blur / upsample FIR kernel shape for the (1, 3, 3, 1) taps used by every GPEN model


def channels(resolution: int, channel_multiplier: float, narrow: float) -> int:
    """GPEN channel table entry (generator and discriminator share it); may be 0 for unusable configs."""
    if resolution <= 32:
        return int(512 * narrow)
    return int(16384 // resolution * channel_multiplier * narrow)


def _styled(shapes: Shapes, prefix: str, c_in: int, c_out: int, style_dim: int, concat: int,
            up: bool) -> None:
    shapes[f"{prefix}.conv.weight"] = (1, c_out, c_in, 3, 3)
    if up:
        shapes[f"{prefix}.conv.blur.kernel"] = _KERNEL
    shapes[f"{prefix}.conv.modulation.weight"] = (c_in, style_dim)
    shapes[f"{prefix}.conv.modulation.bias"] = (c_in,)
    shapes[f"{prefix}.noise.weight"] = (1,)
    shapes[f"{prefix}.activate.bias"] = (concat * c_out,)


def _to_rgb(shapes: Shapes, prefix: str, c_in: int, style_dim: int, up: bool) -> None:
    shapes[f"{prefix}.bias"] = (1, 3, 1, 1)
    if up:
        shapes[f"{prefix}.upsample.kernel"] = _KERNEL
    shapes[f"{prefix}.conv.weight"] = (1, 3, c_in, 1, 1)
    shapes[f"{prefix}.conv.modulation.weight"] = (c_in, style_dim)
    shapes[f"{prefix}.conv.modulation.bias"] = (c_in,)


def generator_shapes(size: int, style_dim: int, n_mlp: int, channel_multiplier: float, narrow: float,
                     isconcat: bool = True, residual: bool = False) -> Shapes:
    """Every state_dict key of the reference ``FullGenerator`` with its shape, in state_dict order."""
    ch = {2**i: channels(2**i, channel_multiplier, narrow) for i in range(2, int(math.log2(size)) + 1)}
    concat = 2 if isconcat else 1
    shapes: Shapes = {}
    for i in range(1, n_mlp + 1):
        shapes[f"generator.style.{i}.weight"] = (style_dim, style_dim)
        shapes[f"generator.style.{i}.bias"] = (style_dim,)
    shapes["generator.input.input"] = (1, ch[4], 4, 4)
    _styled(shapes, "generator.conv1", ch[4], ch[4], style_dim, concat, up=False)
    _to_rgb(shapes, "generator.to_rgb1", concat * ch[4], style_dim, up=False)
    resolutions = [r for r in ch if r >= 8]
    for k, res in enumerate(resolutions):
        _styled(shapes, f"generator.convs.{2 * k}", concat * ch[res // 2], ch[res], style_dim, concat,
                up=True)
        _styled(shapes, f"generator.convs.{2 * k + 1}", concat * ch[res], ch[res], style_dim, concat,
                up=False)
    for k, res in enumerate(resolutions):
        _to_rgb(shapes, f"generator.to_rgbs.{k}", concat * ch[res], style_dim, up=True)
    k0 = 3 if residual else 1  # the residual layout's first encoder layer is 3x3 (gpen.RESIDUAL_ECD0_KERNEL)
    shapes["ecd0.0.0.weight"] = (ch[size], 3, k0, k0)
    shapes["ecd0.0.1.bias"] = (ch[size],)
    for j in range(1, len(ch)):
        shapes[f"ecd{j}.0.0.kernel"] = _KERNEL
        shapes[f"ecd{j}.0.1.weight"] = (ch[size >> j], ch[size >> (j - 1)], 3, 3)
        shapes[f"ecd{j}.0.2.bias"] = (ch[size >> j],)
    shapes["final_linear.0.weight"] = (style_dim, ch[4] * 16)
    shapes["final_linear.0.bias"] = (style_dim,)
    if residual:
        shapes["input_skip"] = ()
    return shapes


def discriminator_shapes(size: int, channel_multiplier: float, narrow: float) -> Shapes:
    """Every state_dict key of the reference ``Discriminator`` with its shape, in state_dict order."""
    ch = {2**i: channels(2**i, channel_multiplier, narrow) for i in range(2, int(math.log2(size)) + 1)}
    shapes: Shapes = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    for i in range(1, len(ch)):
        c_in, c_out = ch[size >> (i - 1)], ch[size >> i]
        shapes[f"convs.{i}.conv1.0.weight"] = (c_in, c_in, 3, 3)
        shapes[f"convs.{i}.conv1.1.bias"] = (c_in,)
        shapes[f"convs.{i}.conv2.0.kernel"] = _KERNEL
        shapes[f"convs.{i}.conv2.1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"convs.{i}.conv2.2.bias"] = (c_out,)
        shapes[f"convs.{i}.skip.0.kernel"] = _KERNEL
        shapes[f"convs.{i}.skip.1.weight"] = (c_out, c_in, 1, 1)
    shapes["final_conv.0.weight"] = (ch[4], ch[4] + 1, 3, 3)
    shapes["final_conv.1.bias"] = (ch[4],)
    shapes["final_linear.0.weight"] = (ch[4], ch[4] * 16)
    shapes["final_linear.0.bias"] = (ch[4],)
    shapes["final_linear.1.weight"] = (1, ch[4])
    shapes["final_linear.1.bias"] = (1,)
    return shapes


def shape_problems(state_dict: Mapping[str, Tensor], expected: Shapes, complete: bool = True) -> list[str]:
    """Human-readable differences between a state dict and expected shapes (empty if they match).

    ``complete=False`` accepts a subset of the keys (a delta export stores only the tuned tensors).
    """
    missing = [k for k in expected if k not in state_dict] if complete else []
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    problems = []
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape (first: {k} has shape "
                        f"{tuple(state_dict[k].shape)}, expected {expected[k]})")
    if missing:
        problems.append(f"missing {len(missing)} key(s) (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s) (first: {', '.join(unexpected[:3])})")
    return problems
