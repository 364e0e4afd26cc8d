"""GPEN generator / discriminator: reference parity, key names, parameter groups, autocast, double
backward."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpen_fewshot.archs import DiscriminatorConfig, GeneratorConfig, GPENDiscriminator, GPENGenerator
from gpen_fewshot.archs.layers import ConvLayer, ModulatedConv2d, ResBlock, StyledConv, ToRGB

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "gpen_parity"
PARITY = ["generator_s64_cm1_n0.125.pt", "generator_s128_cm2_n0.0625.pt",
          "discriminator_s64_cm1_n0.125.pt", "discriminator_s128_cm2_n0.0625.pt"]
RELEASED = {  # key listing -> (class, kwargs, parameter count in millions or None)
    "GPEN-BFR-512": (GPENGenerator, dict(size=512), 71.0),
    "GPEN-BFR-256": (GPENGenerator, dict(size=256, channel_multiplier=1, narrow=0.5), 18.9),
    "GPEN-BFR-1024": (GPENGenerator, dict(size=1024), 71.2),
    "GPEN-BFR-2048": (GPENGenerator, dict(size=2048), 71.3),
    "GPEN-BFR-512-D": (GPENDiscriminator, dict(size=512), 29.0),
    "GPEN-BFR-256-D_cm1_n1": (GPENDiscriminator, dict(size=256, channel_multiplier=1), None),
    "GPEN-BFR-256-D_cm2_n1": (GPENDiscriminator, dict(size=256, channel_multiplier=2), None),
}
TINY_G = dict(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 32)
TINY_D = dict(size=32, channel_multiplier=1, narrow=1 / 32)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster, and immune to other processes stalling an OpenMP barrier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _set_fusion(model: torch.nn.Module, fuse: bool | None) -> None:
    for module in model.modules():
        if isinstance(module, ModulatedConv2d):
            module.fuse_modulation = fuse


def _tiny_generator(seed: int = 0) -> GPENGenerator:
    torch.manual_seed(seed)
    g = GPENGenerator(**TINY_G)
    with torch.no_grad():  # non-zero noise weights so the encoder features reach the decoder
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.uniform_(0.2, 1.0)
    return g


@pytest.mark.parametrize("name", PARITY)
def test_parity_with_reference_fixture(name: str) -> None:
    data = torch.load(FIXTURES / name, weights_only=True)
    is_generator = name.startswith("generator")
    model = (GPENGenerator if is_generator else GPENDiscriminator)(**data["config"]).eval()
    assert list(model.state_dict()) == list(data["state_dict"])
    model.load_state_dict(data["state_dict"], strict=True)
    # automatic choice, then each modulated-conv evaluation forced everywhere (the generator has both)
    for fuse in (None, True, False) if is_generator else (None,):
        _set_fusion(model, fuse)
        with torch.no_grad():
            out = model(data["input"])
        assert out.shape == data["output"].shape
        diff = (out - data["output"]).abs().max().item()
        assert diff < 1e-4, f"{name} (fuse_modulation={fuse}): max |diff| {diff}"
    out = model(data["input"])  # autograd on: the generator builds its concatenations out of place
    assert out.requires_grad and (out.detach() - data["output"]).abs().max().item() < 1e-4


def _key_lines(model: torch.nn.Module) -> list[str]:
    return [f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()]


@pytest.mark.parametrize("listing", list(RELEASED))
def test_released_key_names_and_shapes(listing: str) -> None:
    cls, kwargs, millions = RELEASED[listing]
    with torch.device("meta"):  # no memory for the 71 M-parameter models
        model = cls(**kwargs)
    expected = (FIXTURES / f"keys_{listing}.txt").read_text().splitlines()
    assert _key_lines(model) == expected
    if millions is not None:
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)


def test_generator_parameter_groups_partition() -> None:
    with torch.device("meta"):
        g = GPENGenerator(256, channel_multiplier=1, narrow=0.5)
    groups = g.parameter_groups()
    assert set(groups) == {"encoder", "mapping", "decoder_coarse", "decoder_middle", "decoder_fine", "to_rgb",
                           "noise"}
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in g.named_parameters())  # each parameter exactly once
    assert all(n.startswith(("ecd", "final_linear")) for n in groups["encoder"])
    assert all(n.startswith("generator.style.") for n in groups["mapping"])
    assert all(n.endswith("noise.weight") for n in groups["noise"]) and len(groups["noise"]) == 13
    assert "generator.input.input" in groups["decoder_coarse"]
    assert "generator.convs.3.conv.weight" in groups["decoder_coarse"]  # convs.{2j,2j+1} run at 2^(j+3) px
    assert "generator.convs.4.conv.weight" in groups["decoder_middle"]  # 32 px
    assert "generator.convs.7.activate.bias" in groups["decoder_middle"]  # 64 px
    assert "generator.convs.8.conv.weight" in groups["decoder_fine"]  # 128 px
    assert (all(".to_rgb" in f".{n}" for n in groups["to_rgb"]) and
            "generator.to_rgb1.bias" in groups["to_rgb"])


def test_discriminator_parameter_groups_partition() -> None:
    with torch.device("meta"):
        d = GPENDiscriminator(512)
    groups = d.parameter_groups()
    assert list(groups) == [f"d_block_{r}" for r in (512, 256, 128, 64, 32, 16, 8)] + ["d_head"]
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in d.named_parameters())
    assert "convs.0.0.weight" in groups["d_block_512"] and "convs.1.conv1.0.weight" in groups["d_block_512"]
    assert "convs.7.skip.1.weight" in groups["d_block_8"]
    assert set(groups["d_head"]) == {n for n, _ in d.named_parameters() if n.startswith("final_")}


def test_encode_mapping_decode_compose_to_forward() -> None:
    g = _tiny_generator().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        image = g(x)
        z, features = g.encode(x)
        w = g.mapping(z)
        assert z.shape == (2, 16) and w.shape == (2, 16)
        assert [f.shape[-1] for f in features] == [4, 8, 16, 32]
        assert torch.equal(g.decode(w, features), image)
        w_rep = w.unsqueeze(1).repeat(1, g.n_latent, 1)
        assert torch.allclose(g.decode(w_rep, features), image, atol=1e-6)
        assert torch.equal(g(x), image)  # deterministic
        single = torch.cat([g(x[i: i + 1]) for i in range(2)])
        assert torch.allclose(single, image, atol=1e-5)  # batch folded into groups is per sample
        assert torch.allclose(g(x.contiguous(memory_format=torch.channels_last)), image, atol=1e-5)
    assert image.shape == x.shape and torch.isfinite(image).all()
    assert g.n_latent == 8


def test_noise_weights_connect_encoder_to_decoder() -> None:
    g = _tiny_generator().eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z, features = g.encode(x)
        w = g.mapping(z)
        a = g.decode(w, features)
        b = g.decode(w, [f * 2 for f in features])
    assert (a - b).abs().max() > 1e-3


def test_configs_round_trip() -> None:
    g = GPENGenerator(**TINY_G)
    assert isinstance(g.config, GeneratorConfig) and g.config.asdict()["narrow"] == TINY_G["narrow"]
    json.dumps(g.config.asdict())
    assert _key_lines(GPENGenerator.from_config(g.config)) == _key_lines(g)
    d = GPENDiscriminator(**TINY_D)
    assert isinstance(d.config, DiscriminatorConfig) and d.config.size == 32
    assert _key_lines(GPENDiscriminator.from_config(d.config)) == _key_lines(d)
    with pytest.raises(AttributeError):
        g.config.size = 64  # frozen


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="size must be a power of two"):
        GPENGenerator(100)
    with pytest.raises(ValueError, match="no channels"):
        GPENDiscriminator(64, narrow=1e-3)
    with pytest.raises(ValueError, match=r"expected input \(N, 3, 32, 32\)"):
        _tiny_generator()(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected input \(N, 3, 32, 32\)"):
        GPENDiscriminator(**TINY_D)(torch.zeros(1, 1, 32, 32))


def test_discriminator_features_and_batch_statistics() -> None:
    torch.manual_seed(0)
    d = GPENDiscriminator(**TINY_D).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        logits = d(x)
        again, features = d(x, return_features=True)
        single = d(x[:1])
    assert logits.shape == (3, 1) and torch.equal(logits, again)
    assert [tuple(f.shape[1:]) for f in features] == [(16, 32, 32), (16, 16, 16), (16, 8, 8), (16, 4, 4)]
    # minibatch stddev over the whole batch: a sample's logit depends on the rest of the batch
    assert (single[0] - logits[0]).abs() > 1e-6


def test_bf16_autocast_forward_close_to_fp32() -> None:
    g = _tiny_generator().eval()
    d = GPENDiscriminator(**TINY_D).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref_g, ref_d = g(x), d(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_g, out_d = g(x), d(x)
    assert out_g.dtype == torch.bfloat16 and torch.isfinite(out_g.float()).all()
    rel = (out_g.float() - ref_g).norm() / ref_g.norm()
    assert rel < 0.05, rel
    assert (out_d.float() - ref_d).abs().max() < 0.05 * (ref_d.abs().max() + 1)


def test_r1_double_backward_through_discriminator() -> None:
    torch.manual_seed(0)
    d = GPENDiscriminator(**TINY_D)
    real = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
    penalty = grad.pow(2).flatten(1).sum(1).mean()
    penalty.backward()
    grads = {n: p.grad for n, p in d.named_parameters()}
    # every parameter but the output bias (which cannot change d logits / d input) gets a finite gradient
    assert [n for n, g in grads.items() if g is None] == ["final_linear.1.bias"]
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert grads["convs.0.0.weight"].abs().sum() > 0


def test_path_length_gradient_through_generator() -> None:
    g = _tiny_generator()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z, features = g.encode(x)
    w = g.mapping(z).unsqueeze(1).repeat(1, g.n_latent, 1)
    image = g.decode(w, features)
    noise = torch.randn_like(image) / math.sqrt(32 * 32)
    (grad,) = torch.autograd.grad((image * noise).sum(), w, create_graph=True)
    path_lengths = grad.pow(2).sum(2).mean(1).sqrt()
    path_lengths.mean().backward()
    assert torch.isfinite(path_lengths).all() and (path_lengths > 0).all()
    grads = [p.grad for p in g.parameters() if p.grad is not None]
    assert len(grads) > 0 and all(torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("fuse", [True, False])
def test_layers_gradgradcheck_float64(fuse: bool) -> None:
    torch.manual_seed(0)
    style = torch.randn(2, 4, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    up = StyledConv(3, 2, 3, 4, upsample=True).double()
    plain = StyledConv(3, 2, 3, 4).double()
    rgb = ToRGB(3, 4).double()
    for m in (up, plain, rgb):
        m.conv.fuse_modulation = fuse
        m.requires_grad_(False)
    with torch.no_grad():
        up.noise.weight.fill_(0.7)
        up.activate.bias.uniform_(-1, 1)
    noise_up = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    skip = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    check = dict(fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda t: up(t, style, noise_up), (x,), **check)
    assert torch.autograd.gradgradcheck(lambda t: plain(t, style, x[:, :2] * 0 + 1), (x,), **check)
    assert torch.autograd.gradgradcheck(lambda t: rgb(t, style, skip), (x,), **check)
    down = ConvLayer(3, 2, 3, downsample=True).double().requires_grad_(False)
    block = ResBlock(3, 2).double().requires_grad_(False)
    assert torch.autograd.gradgradcheck(down, (x,), **check)
    assert torch.autograd.gradgradcheck(block, (x,), **check)


def test_benchmark_script_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--configs", "custom", "--size", "16",
           "--narrow", "0.03125", "--style-dim", "8", "--n-mlp", "1", "--devices", "cpu", "--quick",
           "--matmul-size", "256", "--threads", "1", "--no-isolate", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(out.read_text())
    assert [r["mode"] for r in records] == ["fwd", "fwdbwd", "d_fwdbwd"]
    for r in records:
        assert r["gflop"] > 0 and r["best_s"] > 0 and r["ratio"] > 0 and r["matmul_gflops"] > 0
    assert "ratio" in proc.stdout


def test_benchmark_named_case_prints_its_time_floor_and_ratio_last() -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--case", "gpen256-forward", "--repeats",
           "1", "--matmul-size", "256", "--threads", "1", "--no-isolate", "--precision", "fp32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    values = dict(item.split("=") for item in last.split())
    assert list(values) == ["time_s", "floor_s", "ratio"]
    assert float(values["ratio"]) == pytest.approx(float(values["time_s"]) / float(values["floor_s"]),
                                                   rel=0.01)
    fp16_cpu = subprocess.run([*cmd[:4], "--precision", "fp16"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, check=False)
    assert fp16_cpu.returncode != 0 and "CUDA only" in fp16_cpu.stderr
