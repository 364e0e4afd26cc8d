"""MobileFaceNet port: MXNet params reader, strict loading, graph agreement, geometry, losses,
verification."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot import weights
from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.faces.alignment import template_points
from gpen_fewshot.faces.identity_net import (
    ARCFACE_112,
    IdentityEncoder,
    arcface_crop,
    crop_to_arcface,
    load_identity_network,
)
from gpen_fewshot.faces.mobilefacenet import MobileFaceNet, load_mobilefacenet, mxnet_name
from gpen_fewshot.faces.mxnet_params import MXNetParamsError, read_mxnet_params
from gpen_fewshot.losses.identity import FacePerceptualLoss, IdentityLoss
from gpen_fewshot.training.config import LossConfig
from gpen_fewshot.training.losses_setup import build_auxiliary_losses

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SYMBOL = SHARED / "weights" / "mobilefacenet" / "model-symbol.json"
PAIRS = SHARED / "data" / "lfw_pairs"


def write_params(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an MXNet NDArray list (the format of the reader's docstring)."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for array in arrays.values():
        array = np.ascontiguousarray(array, dtype=np.float32)
        out.append(struct.pack("<IiI", 0xF993FAC9, 0, array.ndim))
        out.append(struct.pack(f"<{array.ndim}q", *array.shape) + struct.pack("<iii", 1, 0, 0))
        out.append(array.tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name.encode())) + name.encode())
    path.write_bytes(b"".join(out))


@pytest.fixture(scope="module")
def bundled_arrays() -> dict[str, np.ndarray]:
    return read_mxnet_params(weights.weight_path("mobilefacenet"))


def test_reader_round_trip_and_errors(tmp_path: Path) -> None:
    arrays = {"arg:a_weight": np.arange(6, dtype=np.float32).reshape(2, 3), "aux:b_moving_var": np.ones(4)}
    write_params(tmp_path / "m.params", arrays)
    back = read_mxnet_params(tmp_path / "m.params")
    assert list(back) == list(arrays)
    np.testing.assert_array_equal(back["arg:a_weight"], arrays["arg:a_weight"])
    data = (tmp_path / "m.params").read_bytes()
    (tmp_path / "short.params").write_bytes(data[:40])
    with pytest.raises(MXNetParamsError, match="truncated"):
        read_mxnet_params(tmp_path / "short.params")
    (tmp_path / "magic.params").write_bytes(b"\x00" * 8 + data[8:])
    with pytest.raises(MXNetParamsError, match="magic"):
        read_mxnet_params(tmp_path / "magic.params")
    (tmp_path / "tail.params").write_bytes(data + b"xx")
    with pytest.raises(MXNetParamsError, match="unexpected bytes"):
        read_mxnet_params(tmp_path / "tail.params")


def test_bundled_file_is_registered_and_loads_strictly(bundled_arrays: dict[str, np.ndarray]) -> None:
    assert weights.REGISTRY["mobilefacenet"].location == "bundled"
    assert len(bundled_arrays) == 284 and sum(a.size for a in bundled_arrays.values()) == 1_022_848
    net = load_mobilefacenet(weights.weight_path("mobilefacenet"))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {mxnet_name(k) for k in state} == set(bundled_arrays)  # every array used, every parameter filled
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    conv = net.res_4.block3.conv_dw.conv.weight.numpy()
    np.testing.assert_array_equal(conv, bundled_arrays["arg:res_4_block3_conv_dw_conv2d_weight"])


@pytest.mark.parametrize("change", ["missing", "unused", "shape"])
def test_strict_load_rejects_incomplete_files(tmp_path: Path, bundled_arrays, change: str) -> None:
    arrays = dict(bundled_arrays)
    if change == "missing":
        del arrays["aux:res_5_block1_conv_dw_batchnorm_moving_mean"]
    elif change == "unused":
        arrays["arg:extra_weight"] = np.zeros(3, np.float32)
    else:
        arrays["arg:pre_fc1_bias"] = np.zeros(64, np.float32)
    write_params(tmp_path / "bad.params", arrays)
    with pytest.raises(MXNetParamsError, match="res_5_block1|extra_weight|pre_fc1_bias"):
        load_mobilefacenet(tmp_path / "bad.params")


@pytest.mark.weights
@pytest.mark.skipif(not SYMBOL.is_file(), reason="needs ../shared/weights/mobilefacenet/model-symbol.json")
def test_module_matches_the_mxnet_graph() -> None:
    """Every Convolution / BatchNorm of the graph has its counterpart with the same hyper-parameters."""
    nodes = json.loads(SYMBOL.read_text())["nodes"]
    modules = dict(MobileFaceNet().named_modules())
    by_mx = {mxnet_name(f"{name}.weight").removeprefix("arg:").removesuffix("_conv2d_weight"): m
             for name, m in modules.items() if isinstance(m, torch.nn.Conv2d)}
    convs = [n for n in nodes if n["op"] == "Convolution"]
    assert len(convs) == len(by_mx) == 49
    for node in convs:
        attrs, conv = node["attrs"], by_mx[node["name"].removesuffix("_conv2d")]
        pairs = re.findall(r"\d+", attrs["kernel"]), re.findall(r"\d+", attrs["stride"]), re.findall(
            r"\d+", attrs.get("pad", "(0, 0)"))
        assert conv.kernel_size == tuple(map(int, pairs[0])) and conv.stride == tuple(map(int, pairs[1]))
        assert conv.padding == tuple(map(int, pairs[2])), node["name"]
        assert conv.groups == int(attrs["num_group"]) and conv.out_channels == int(attrs["num_filter"])
    eps = {n["name"]: float(n["attrs"].get("eps", 1e-3)) for n in nodes if n["op"] == "BatchNorm"}
    assert eps.pop("fc1") == MobileFaceNet().fc1.eps
    assert set(eps.values()) == {modules["conv_1.bn"].eps}


def test_geometry_maps_the_gpen_template_onto_arcface() -> None:
    for size in (128, 256, 512):
        scale, tx, ty = crop_to_arcface(size)
        mapped = template_points("gpen", size) * scale + np.array([tx, ty])
        assert np.abs(mapped - ARCFACE_112).max() < 1.0
    # a bright pixel at the left-eye landmark of a 256 crop lands at ArcFace's left eye
    image = -torch.ones(1, 3, 256, 256)
    x, y = np.round(template_points("gpen", 256)[0]).astype(int)
    image[..., y - 2:y + 3, x - 2:x + 3] = 1.0
    out = arcface_crop(image)[0, 0]
    peak = np.unravel_index(int(out.argmax()), out.shape)
    assert abs(peak[1] - ARCFACE_112[0, 0]) <= 2 and abs(peak[0] - ARCFACE_112[0, 1]) <= 2


@pytest.fixture(scope="module")
def encoder() -> IdentityEncoder:
    return IdentityEncoder(load_identity_network("mobilefacenet"), "mobilefacenet")


def test_identity_loss_backpropagates_to_the_generator_input(encoder: IdentityEncoder) -> None:
    torch.manual_seed(0)
    generator = GPENGenerator(64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125, residual=True)
    lq = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    loss = IdentityLoss(encoder)(generator(lq), gt) + FacePerceptualLoss(encoder)(generator(lq), gt)
    loss.backward()
    assert torch.isfinite(lq.grad).all() and lq.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert all(p.grad is None for p in encoder.parameters())  # the identity network stays frozen


def test_identity_loss_targets(encoder: IdentityEncoder) -> None:
    faces = torch.rand(2, 3, 128, 128) * 2 - 1
    loss = IdentityLoss(encoder)
    assert loss(faces, faces).item() == pytest.approx(0.0, abs=1e-5)
    own = encoder(faces)
    assert loss.to_embedding(faces, own).item() == pytest.approx(0.0, abs=1e-5)
    assert loss.to_embedding(faces, -own[0]).item() > 1.0  # away from a target = a large loss
    assert FacePerceptualLoss(encoder)(faces, faces).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_config_builds_the_identity_terms() -> None:
    assert build_auxiliary_losses(LossConfig()) == {}  # all off unless configured
    aux = build_auxiliary_losses(LossConfig(identity=0.5, face_perceptual=0.1))
    assert set(aux) == {"identity", "face_perceptual"} and aux["identity"].network_name == "mobilefacenet"
    with pytest.raises(ValueError, match="face_perceptual"):
        LossConfig(face_perceptual=1.0, identity_network="irse50")
    with pytest.raises(ValueError, match="identity_network"):
        LossConfig(identity_network="vgg")


@pytest.mark.weights
@pytest.mark.subprocess
@pytest.mark.skipif(not PAIRS.is_dir(), reason="needs ../shared/data/lfw_pairs")
def test_verify_identity_script_on_a_subset() -> None:
    script = REPO / "scripts" / "verify_identity.py"
    done = subprocess.run([sys.executable, str(script), "--pairs", str(PAIRS), "--limit", "60"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"accuracy=([\d.]+) threshold=(-?[\d.]+) mean_abs_cos_diff=([\d.]+) pairs=(\d+)",
                         last)
    assert match, last
    assert float(match[1]) >= 0.9 and float(match[3]) < 0.02 and int(match[4]) >= 59
