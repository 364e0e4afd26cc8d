"""Residual GPEN generator (layout, loading, near-identity start), mixture degradation, MobileFaceNet
metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.archs.checkpoints import infer_generator_config, load_generator
from gpen_fewshot.data.degradations import MixtureConfig, build_degradation, sample_rng
from gpen_fewshot.evaluation.metrics import MetricSuite
from gpen_fewshot.training.config import ModelConfig
from gpen_fewshot.training.networks import build_networks

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}


def test_residual_generator_starts_near_the_identity() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    residual = GPENGenerator(**TINY, residual=True)
    plain = GPENGenerator(**TINY)
    assert (residual(x) - x).abs().mean() < 0.02  # small ToRGB init: a face passes through
    assert (plain(x) - x).abs().mean() > 0.1
    assert "input_skip" in residual.state_dict() and "input_skip" not in plain.state_dict()
    # every ToRGB still gets a gradient (not a zero init)
    residual(x).square().mean().backward()
    assert residual.generator.to_rgbs[-1].conv.weight.grad.abs().sum() > 0


def test_residual_layout_has_a_3x3_first_layer_and_open_concatenation_gains() -> None:
    residual, plain = GPENGenerator(**TINY, residual=True), GPENGenerator(**TINY)
    assert residual.ecd0[0][0].weight.shape[-2:] == (3, 3) and plain.ecd0[0][0].weight.shape[-2:] == (1, 1)
    gains = [p for n, p in residual.named_parameters() if n.endswith(".noise.weight")]
    # the decoder sees the encoder from the first update
    assert gains and all(float(p.detach()) == 1.0 for p in gains)
    assert all(float(p.detach()) == 0.0 for n, p in plain.named_parameters() if n.endswith(".noise.weight"))


def test_residual_layout_is_inferred_and_loads_strictly(tmp_path: Path) -> None:
    net = GPENGenerator(**TINY, residual=True)
    torch.save(net.state_dict(), tmp_path / "res.pth")
    assert infer_generator_config(net.state_dict()).residual is True
    assert infer_generator_config(GPENGenerator(**TINY).state_dict()).residual is False
    loaded = load_generator(tmp_path / "res.pth")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loaded.config.residual and torch.equal(loaded(x), net(x))
    # a preset whose residual flag disagrees with the file is one clear error
    with pytest.raises(ValueError, match="does not match"):
        build_networks(ModelConfig(name="tiny", **TINY, generator_weights=str(tmp_path / "res.pth")))
    g, _, _ = build_networks(ModelConfig(name="tiny", **TINY, residual=True,
                                         generator_weights=str(tmp_path / "res.pth")))
    assert g.config.residual


def test_mixture_draws_every_preset_with_its_weight() -> None:
    degradation = build_degradation({"kind": "mixture", "presets": ["none", "moderate"], "weights": [1, 1]})
    assert degradation.config.presets == ("none", "moderate")
    np.testing.assert_allclose(degradation.probabilities, [0.5, 0.5])
    img = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    untouched = sum(np.array_equal(degradation(img, sample_rng(0, k)), img) for k in range(40))
    assert 10 <= untouched <= 30  # about half are "none"
    again = [degradation(img, sample_rng(0, k)) for k in range(3)]
    assert all(np.array_equal(a, degradation(img, sample_rng(0, k))) for k, a in enumerate(again))
    with pytest.raises(ValueError, match="unknown preset"):
        MixtureConfig(presets=("nope",), weights=(1.0,))
    with pytest.raises(ValueError, match="weights"):
        MixtureConfig(presets=("mild",), weights=(1.0, 2.0))


def test_metric_suite_reports_mobilefacenet_identity_beside_dlib() -> None:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    suite = MetricSuite(["psnr", "identity_mfn"])
    reference = suite.identity_mfn.reference(faces)
    result = suite.evaluate(faces, faces, {"mobilefacenet": reference})
    assert result["mfn_similarity_gt"] == pytest.approx(1.0, abs=1e-5)
    assert result["mfn_verified_gt"] == 1.0
    assert -1.0 <= result["mfn_similarity_ref"] <= 1.0
    no_ref = suite.evaluate(faces, faces)
    assert "reference" in str(no_ref["mfn_similarity_ref"])  # Unavailable, with the reason


def test_cpu_precision_falls_back_to_fp32_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpen_fewshot.cli import resolvers

    monkeypatch.setattr(resolvers, "cpu_bf16_supported", lambda: False)
    assert resolvers.cpu_precision("bf16-mixed") == "32-true"
    monkeypatch.setattr(resolvers, "cpu_bf16_supported", lambda: True)
    assert resolvers.cpu_precision("bf16-mixed") == "bf16-mixed"
    monkeypatch.undo()
    assert isinstance(resolvers.cpu_bf16_supported(), bool)  # the real probe answers on any CPU
