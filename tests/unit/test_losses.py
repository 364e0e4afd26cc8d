"""Losses: adversarial + R1 + path length, content, feature matching, identity (ArcFace IR-SE50), LPIPS."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpen_fewshot.losses import (
    content_loss,
    d_logistic_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    r1_penalty,
)
from gpen_fewshot.losses.identity import IRSE50, IdentityLoss, crop_face_region, load_irse50
from gpen_fewshot.losses.perceptual import PerceptualLoss
from gpen_fewshot.weights import WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_adversarial_losses_match_formulas() -> None:
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0], [0.0]])
    expected_d = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5))) / 2 + (
        math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert g_nonsaturating_loss(fake).item() == pytest.approx((math.log1p(math.exp(1.0)) + math.log(2)) / 2)


def test_r1_penalty_of_linear_discriminator_is_weight_norm() -> None:
    weight = torch.randn(3, 4, 4)

    def disc(x: torch.Tensor) -> torch.Tensor:
        return (x * weight).flatten(1).sum(1, keepdim=True)

    penalty, logits = r1_penalty(disc, torch.randn(2, 3, 4, 4))
    assert penalty.item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-5)
    assert logits.shape == (2, 1) and logits.dtype == torch.float32


def test_r1_penalty_is_float32_and_finite_under_autocast() -> None:
    conv = torch.nn.Conv2d(3, 1, 3)

    def disc(x: torch.Tensor) -> torch.Tensor:
        return conv(x).mean((1, 2, 3))[:, None] * 1e3

    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty, logits = r1_penalty(disc, torch.randn(2, 3, 8, 8).bfloat16())
    assert penalty.dtype == torch.float32 and torch.isfinite(penalty)
    penalty.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_path_length_penalty() -> None:
    w = torch.randn(2, 8, requires_grad=True)
    mapping = torch.nn.Linear(8, 3 * 4 * 4)
    fake = mapping(w).reshape(2, 3, 4, 4)
    gen = torch.Generator().manual_seed(0)
    penalty, new_mean, lengths = path_length_penalty(fake, w, torch.zeros(()), 0.5, gen)
    assert lengths.shape == (2,) and (lengths > 0).all()
    assert new_mean.item() == pytest.approx(0.5 * lengths.mean().item(), rel=1e-5)
    penalty.backward()
    assert mapping.weight.grad is not None and mapping.weight.grad.abs().sum() > 0
    again, _, _ = path_length_penalty(mapping(w).reshape(2, 3, 4, 4), w, torch.zeros(()), 0.5,
                                      torch.Generator().manual_seed(0))
    assert again.item() == pytest.approx(penalty.item())  # seeded noise: reproducible


def test_content_loss() -> None:
    gt = torch.zeros(1, 3, 4, 4)
    fake = torch.full_like(gt, 0.2)
    total, parts = content_loss(fake, gt, smooth_l1_weight=1.0, l1_weight=0.5)
    assert parts["smooth_l1"].item() == pytest.approx(0.5 * 0.04)  # 0.5 * MSE below beta
    assert parts["l1"].item() == pytest.approx(0.2)
    assert total.item() == pytest.approx(0.02 + 0.1)
    assert content_loss(fake, gt, 0.0, 0.0)[0].item() == 0.0


def test_feature_matching_loss() -> None:
    real = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    assert feature_matching_loss(real, [r.detach() for r in real]).item() == 0.0
    fake = [(r + 1.0).detach().requires_grad_(True) for r in real]
    loss = feature_matching_loss(real, fake, norm="l1")
    assert loss.item() == pytest.approx(1.0)
    assert feature_matching_loss(real, fake, norm="l2").item() == pytest.approx(1.0)
    loss.backward()
    assert fake[0].grad is not None and real[0].grad is None  # never trains through the real branch
    with pytest.raises(ValueError):
        feature_matching_loss(real, fake[:1])


def test_irse50_has_the_released_layout_and_loads_strictly(tmp_path) -> None:
    from facexlib.recognition.arcface_arch import Backbone

    net = IRSE50()
    state = net.state_dict()
    assert isinstance(net, Backbone) and len(state) == 397  # facexlib's network, the released file's keys
    assert sum(p.numel() for p in net.parameters()) == 43_797_696
    for key, shape in {"input_layer.0.weight": (64, 3, 3, 3),
                       "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
                       "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
                       "output_layer.3.weight": (512, 25088), "output_layer.4.weight": (512,)}.items():
        assert tuple(state[key].shape) == shape, key
    assert len([k for k in state if k.startswith("body.") and k.endswith("res_layer.1.weight")]) == 24
    # an old-format file without BatchNorm step counters, with a DataParallel prefix
    old = {f"module.{k}": torch.randn_like(v.float()) for k, v in state.items() if "num_batches" not in k}
    torch.save(old, tmp_path / "model_ir_se50.pth")
    loaded = load_irse50(tmp_path / "model_ir_se50.pth")
    assert torch.equal(loaded.state_dict()["output_layer.3.weight"], old["module.output_layer.3.weight"])
    torch.save({"input_layer.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        load_irse50(tmp_path / "bad.pth")


def test_face_crop_matches_reference_indices() -> None:
    image = torch.arange(256.0)[None, None, :, None].expand(1, 3, 256, 256)  # value = row index
    crop = crop_face_region(image)
    assert crop.shape == (1, 3, 112, 112)
    rows = image[:, :, 35:223, 32:220]
    assert torch.allclose(crop, F.adaptive_avg_pool2d(rows, 112))
    big = torch.zeros(1, 3, 512, 512)
    big[:, :, 70:446, 64:440] = 1.0
    assert crop_face_region(big).min().item() == 1.0  # exactly the 2x margins at 512


def test_identity_loss_zero_for_same_face_and_differentiable() -> None:
    torch.manual_seed(0)
    loss_fn = IdentityLoss(IRSE50().eval())
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    assert loss_fn(gt, gt).item() == pytest.approx(0.0, abs=1e-5)
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    loss = loss_fn(fake, gt)
    assert 0.0 < loss.item() <= 2.0
    loss.backward()
    assert fake.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss_fn.parameters())
    loss_fn.train()
    assert not loss_fn.encoder.network.training  # BatchNorm statistics stay frozen


def test_lpips_random_backbone_plumbing() -> None:
    loss_fn = PerceptualLoss(random_backbone=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss_fn(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(x, -x).item() > 0


def test_lpips_without_backbone_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="alexnet-owt-7be5be79.pth"):
        PerceptualLoss(download=False)


def test_lpips_loads_torchvision_alexnet_weights() -> None:
    import torchvision

    loss_fn = PerceptualLoss(random_backbone=True)
    alexnet = torchvision.models.alexnet().state_dict()
    loss_fn._load_alexnet(alexnet)
    assert torch.equal(getattr(loss_fn.metric.net.slice3, "6").weight, alexnet["features.6.weight"])
    assert torch.equal(getattr(loss_fn.metric.net.slice5, "10").bias, alexnet["features.10.bias"])
