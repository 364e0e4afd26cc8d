"""MobileFaceNet (InsightFace "model-y1-test2"): a 1 M-parameter ArcFace identity network, ported to PyTorch.

Architecture (Chen et al. 2018, InsightFace's ``fmobilefacenet`` at 128-d, as in the bundled MXNet graph):
``conv_1`` 3x3/2 (64) -> ``conv_2_dw`` depthwise 3x3 -> ``dconv_23`` -> 4 x ``res_3`` -> ``dconv_34`` ->
6 x ``res_4`` -> ``dconv_45`` -> 2 x ``res_5`` -> ``conv_6sep`` 1x1 (512) -> ``conv_6dw7_7`` global depthwise
7x7 (linear) -> ``pre_fc1`` (512 -> 128) -> ``fc1`` BatchNorm1d with ``fix_gamma`` (its scale is 1 whatever
the file holds, as in MXNet). Each unit is conv (no bias) -> BatchNorm -> PReLU, except the projections and
the global depthwise conv, which are linear. ``dconv_*`` are the stride-2 inverted bottlenecks (expand 1x1,
depthwise 3x3 / 2, project 1x1); ``res_*`` the same at stride 1 with an identity shortcut.

BatchNorm eps: the graph sets eps only on ``fc1`` (2e-5); every other BatchNorm uses MXNet's default, 1e-3
(the serialised graph omits attributes left at their default). Checked against the reference cosines of
``scripts/verify_identity.py``.

Module names mirror the MXNet names (``res_3.block0.conv_sep`` <-> ``res_3_block0_conv_sep_*``), so
:func:`load_mobilefacenet` maps every array of the ``.params`` file to exactly one parameter or buffer.

Input convention: (B, 3, 112, 112) float RGB in [-1, 1], faces aligned to ArcFace's 112 x 112 template. The
graph's own preprocessing ``(pixel - 127.5) * 0.0078125`` on 0..255 pixels equals ``x * 127.5 / 128`` on
[-1, 1] input, applied in :meth:`MobileFaceNet.forward`. Colour order: RGB (see ``scripts/verify_identity.py``
for the measurement against BGR).

Licence of the weights: InsightFace's code is MIT; the model was trained on MS1M, so the weights are for
**non-commercial research only** (see ``gpen_fewshot/assets/weights/README.md``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpen_fewshot.faces.mxnet_params import MXNetParamsError, read_mxnet_params

INPUT_SIZE = 112
EMBEDDING_DIM = 128
_BN_EPS = 1e-3  # MXNet's BatchNorm default; the graph leaves it unset on every layer but fc1
_FC1_EPS = 2e-5
_PIXEL_SCALE = 127.5 * 0.0078125  # [-1, 1] input -> the graph's (pixel - 127.5) / 128
# (stage name, blocks, channels, expanded channels) of the stride-1 residual stages; each is preceded by the
# stride-2 bottleneck "dconv_<prev><this>" that brings the channels to `channels`.
_STAGES = (("res_3", 4, 64, 128), ("res_4", 6, 128, 256), ("res_5", 2, 128, 256))
_DOWNSAMPLERS = (("dconv_23", 64, 128, 64), ("dconv_34", 64, 256, 128), ("dconv_45", 128, 512, 128))


class ConvUnit(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional PReLU: MXNet's ``<name>_conv2d / _batchnorm / _relu``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        padding = 1 if kernel == 3 else 0  # the 1x1 and the global 7x7 convs are unpadded
        layers = OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout, eps=_BN_EPS),
        )
        if act:
            layers["relu"] = nn.PReLU(cout)
        super().__init__(layers)


class Bottleneck(nn.Module):
    """Inverted bottleneck: 1x1 expand -> depthwise 3x3 (stride) -> 1x1 linear projection, + identity if
    kept."""

    def __init__(self, cin: int, expanded: int, cout: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv_sep = ConvUnit(cin, expanded)
        self.conv_dw = ConvUnit(expanded, expanded, 3, stride, groups=expanded)
        self.conv_proj = ConvUnit(expanded, cout, act=False)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_proj(self.conv_dw(self.conv_sep(x)))
        return out + x if self.residual else out


class _Stage(nn.Module):
    """``block0 .. block{n-1}``: stride-1 residual bottlenecks (names as in the MXNet graph)."""

    def __init__(self, blocks: int, channels: int, expanded: int) -> None:
        super().__init__()
        for i in range(blocks):
            self.add_module(f"block{i}", Bottleneck(channels, expanded, channels, 1, residual=True))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.children():
            x = block(x)
        return x


class MobileFaceNet(nn.Module):
    """ArcFace MobileFaceNet embedder.

    ``forward(x)``: (B, 3, 112, 112) float RGB in [-1, 1] -> (B, 128) L2-normalised embeddings.
    ``features(x)``: the same input -> list of 4 intermediate maps (56, 28, 14 and 7 px), for perceptual
    losses on faces.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_1 = ConvUnit(3, 64, 3, 2)
        self.conv_2_dw = ConvUnit(64, 64, 3, 1, groups=64)
        for (down, cin, expanded, cout), (stage, blocks, channels, stage_expanded) in zip(
                _DOWNSAMPLERS, _STAGES, strict=True):
            self.add_module(down, Bottleneck(cin, expanded, cout, 2, residual=False))
            self.add_module(stage, _Stage(blocks, channels, stage_expanded))
        self.conv_6sep = ConvUnit(128, 512)
        self.conv_6dw7_7 = ConvUnit(512, 512, 7, groups=512, act=False)
        self.pre_fc1 = nn.Linear(512, EMBEDDING_DIM)
        self.fc1 = nn.BatchNorm1d(EMBEDDING_DIM, eps=_FC1_EPS, affine=True)

    def features(self, x: Tensor) -> list[Tensor]:
        """Feature maps after ``conv_2_dw`` (64 x 56^2), ``res_3`` (64 x 28^2), ``res_4`` (128 x 14^2) and
        ``conv_6sep`` (512 x 7^2); input as :meth:`forward`."""
        x = self.conv_2_dw(self.conv_1(x * _PIXEL_SCALE))
        maps = [x]
        x = self.res_3(self.dconv_23(x))
        maps.append(x)
        x = self.res_4(self.dconv_34(x))
        maps.append(x)
        maps.append(self.conv_6sep(self.res_5(self.dconv_45(x))))
        return maps

    def embed_from_last(self, last: Tensor) -> Tensor:
        """(B, 512, 7, 7) ``conv_6sep`` output -> (B, 128) L2-normalised embedding."""
        x = self.conv_6dw7_7(last).flatten(1)
        return F.normalize(self.fc1(self.pre_fc1(x)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed_from_last(self.features(x)[-1])


# torch leaf (module kind, attribute) -> MXNet name suffix
_SUFFIXES = {
    ("conv", "weight"): "conv2d_weight", ("relu", "weight"): "relu_gamma",
    ("bn", "weight"): "batchnorm_gamma", ("bn", "bias"): "batchnorm_beta",
    ("bn", "running_mean"): "batchnorm_moving_mean", ("bn", "running_var"): "batchnorm_moving_var",
    ("pre_fc1", "bias"): "bias",
    ("fc1", "weight"): "gamma", ("fc1", "bias"): "beta",
    ("fc1", "running_mean"): "moving_mean", ("fc1", "running_var"): "moving_var",
}


def mxnet_name(torch_name: str) -> str:
    """MXNet array name of a parameter / buffer, e.g. ``res_3.block0.conv_sep.bn.running_mean`` ->
    ``aux:res_3_block0_conv_sep_batchnorm_moving_mean``; ``pre_fc1.bias`` -> ``arg:pre_fc1_bias``."""
    if torch_name == "pre_fc1.weight":
        return "arg:fc1_weight"  # the graph feeds FullyConnected "pre_fc1" an input named "fc1_weight"
    module, _, leaf = torch_name.rpartition(".")
    *outer, layer = module.split(".")
    stem = "_".join(outer + [layer]) if layer in ("pre_fc1", "fc1") else "_".join(outer)
    kind = "aux" if leaf.startswith("running_") else "arg"
    return f"{kind}:{stem}_{_SUFFIXES[(layer, leaf)]}"


def load_mobilefacenet(path: str | os.PathLike) -> MobileFaceNet:
    """Build :class:`MobileFaceNet` and fill it strictly from an MXNet ``.params`` file (eval mode, frozen).

    Every parameter and BatchNorm statistic must be in the file with the right shape, and every array of the
    file must be used. ``fc1``'s scale is then reset to 1: the graph declares ``fix_gamma`` on it, so MXNet
    ignores the stored value (read and checked all the same).

    Raises:
        MXNetParamsError: unreadable file, missing / unused arrays or shape mismatches (named in the message).
    """
    path = Path(path)
    arrays = read_mxnet_params(path)
    net = MobileFaceNet()
    targets = {name: tensor for name, tensor in net.state_dict().items()
               if not name.endswith("num_batches_tracked")}
    wanted = {mxnet_name(name): name for name in targets}
    missing = sorted(set(wanted) - set(arrays))
    unused = sorted(set(arrays) - set(wanted))
    if missing or unused:
        raise MXNetParamsError(f"{path}: not the MobileFaceNet of this project: missing {missing[:5]} "
                               f"({len(missing)}), unused {unused[:5]} ({len(unused)})")
    state = {}
    for key, torch_name in wanted.items():
        value = torch.from_numpy(arrays[key]).float()
        expected = targets[torch_name].shape
        if value.shape != expected:
            raise MXNetParamsError(f"{path}: {key} has shape {tuple(value.shape)}, expected "
                                   f"{tuple(expected)}")
        state[torch_name] = value
    net.load_state_dict(state, strict=False)  # strictness checked above; only num_batches_tracked is absent
    with torch.no_grad():
        net.fc1.weight.fill_(1.0)  # fix_gamma=True
    return net.eval().requires_grad_(False)
