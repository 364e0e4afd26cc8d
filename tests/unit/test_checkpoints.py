"""Checkpoint reading in every supported format, config inference, and clear errors for bad files."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpen_fewshot import weights
from gpen_fewshot.archs import DiscriminatorConfig, GeneratorConfig, GPENDiscriminator, GPENGenerator
from gpen_fewshot.archs.checkpoints import (
    CheckpointError,
    extract_state_dict,
    infer_discriminator_config,
    infer_generator_config,
    load_discriminator,
    load_generator,
    read_state_dict,
)
from gpen_fewshot.archs.shapes import discriminator_shapes, generator_shapes

KEYS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "gpen_parity"
TINY_G = {"size": 64, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}
TINY_D = {"size": 64, "channel_multiplier": 1, "narrow": 0.125}
RELEASED_G = {
    "GPEN-BFR-256": GeneratorConfig(256, 512, 8, 1, 0.5),
    "GPEN-BFR-512": GeneratorConfig(512, 512, 8, 2, 1.0),
    "GPEN-BFR-1024": GeneratorConfig(1024, 512, 8, 2, 1.0),
    "GPEN-BFR-2048": GeneratorConfig(2048, 512, 8, 2, 1.0),
}
RELEASED_D = {
    "GPEN-BFR-512-D": DiscriminatorConfig(512, 2, 1.0),
    "GPEN-BFR-256-D_cm1_n1": DiscriminatorConfig(256, 1, 1.0),
    "GPEN-BFR-256-D_cm2_n1": DiscriminatorConfig(256, 2, 1.0),
}


def _random_generator(seed: int, **overrides) -> GPENGenerator:
    torch.manual_seed(seed)
    model = GPENGenerator(**{**TINY_G, **overrides})
    with torch.no_grad():  # non-zero noise weights and biases so that every tensor matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def _random_discriminator(seed: int) -> GPENDiscriminator:
    torch.manual_seed(seed)
    return GPENDiscriminator(**TINY_D)


def _assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def _meta_state_dict(keys_file: Path) -> dict[str, torch.Tensor]:
    """Shapes from a keys listing as meta tensors: no memory for the 71 M parameters."""
    state = {}
    for line in keys_file.read_text().splitlines():
        name, shape = line.split(" ", 1)
        state[name] = torch.empty(ast.literal_eval(shape), device="meta")
    return state


@pytest.fixture(scope="module")
def models():
    return {"g": _random_generator(1), "g_ema": _random_generator(2), "d": _random_discriminator(3)}


# ---------------------------------------------------------------------------------------------- formats
def _save_bare(path, m):
    torch.save(m["g_ema"].state_dict(), path)


def _save_legacy(path, m):  # released files may be in the pre-1.6 (non-zip) torch.save format
    torch.save(m["g_ema"].state_dict(), path, _use_new_zipfile_serialization=False)


def _save_trainer(path, m):
    optim = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},  # Adam's layout
             "param_groups": [{"lr": 0.0016, "betas": (0.0, 0.99), "eps": 1e-8, "params": [0, 1]}]}
    torch.save({"g": m["g"].state_dict(), "d": m["d"].state_dict(), "g_ema": m["g_ema"].state_dict(),
                "g_optim": optim, "d_optim": optim}, path)


def _save_ddp(path, m):
    torch.save({f"module.{k}": v for k, v in m["g_ema"].state_dict().items()}, path)


def _save_lightning(path, m):
    state = {}
    for prefix, model in (("generator.", m["g"]), ("generator_ema.", m["g_ema"]), ("discriminator.", m["d"])):
        state.update({prefix + k: v for k, v in model.state_dict().items()})
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.6", "epoch": 3, "global_step": 10,
                "optimizer_states": [], "hyper_parameters": {"lr": 0.002, "generator": m["g_ema"].config}},
               path)


def _save_safetensors(path, m):
    save_file({k: v.contiguous() for k, v in m["g_ema"].state_dict().items()}, path)


def _save_export_dir(path, m):
    path.mkdir()
    _save_safetensors(path / "model.safetensors", m)
    (path / "config.json").write_text(json.dumps({"generator": m["g_ema"].config.asdict(), "format": 1}))


FORMATS = {"bare.pth": _save_bare, "legacy.pth": _save_legacy, "trainer.pt": _save_trainer,
           "ddp.pth": _save_ddp, "lightning.ckpt": _save_lightning, "model.safetensors": _save_safetensors,
           "export": _save_export_dir}


@pytest.mark.parametrize("filename", list(FORMATS))
def test_generator_loads_strictly_from_every_format(filename, models, tmp_path):
    path = tmp_path / filename
    FORMATS[filename](path, models)
    loaded = load_generator(path)
    assert not loaded.training
    assert loaded.config == models["g_ema"].config
    _assert_same_weights(loaded, models["g_ema"])  # g_ema preferred over g where both exist


@pytest.mark.parametrize("filename", ["trainer.pt", "lightning.ckpt"])
def test_discriminator_taken_from_training_checkpoints(filename, models, tmp_path):
    path = tmp_path / filename
    FORMATS[filename](path, models)
    loaded = load_discriminator(path)
    assert loaded.config == GPENDiscriminator(**TINY_D).config
    _assert_same_weights(loaded, models["d"])


def test_bare_discriminator_and_output(models, tmp_path):
    torch.save(models["d"].state_dict(), tmp_path / "D.pth")
    loaded = load_discriminator(tmp_path / "D.pth")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), models["d"].eval()(x))


def test_extract_prefers_g_ema_and_strips_wrappers(models):
    g, g_ema = models["g"].state_dict(), models["g_ema"].state_dict()
    nested = {"_orig_mod." + k: v for k, v in g_ema.items()}
    assert extract_state_dict({"g": g, "g_ema": nested}).keys() == g_ema.keys()
    assert (extract_state_dict({"params_ema": g_ema, "params": g})["ecd0.0.0.weight"] is
            g_ema["ecd0.0.0.weight"])
    with pytest.raises(CheckpointError, match=r"no discriminator state dict found \(top-level keys: 'g'"):
        extract_state_dict({"g": g}, kind="discriminator")
    with pytest.raises(CheckpointError, match="holds a list"):
        extract_state_dict([1, 2])


# --------------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("name", list(RELEASED_G))
def test_released_generator_configs_inferred(name):
    state = _meta_state_dict(KEYS_DIR / f"keys_{name}.txt")
    config = infer_generator_config(state)
    assert config == RELEASED_G[name]
    expected = generator_shapes(config.size, 512, 8, config.channel_multiplier, config.narrow)
    assert list(expected.items()) == [(k, tuple(v.shape)) for k, v in state.items()]  # keys, shapes, order


@pytest.mark.parametrize("name", list(RELEASED_D))
def test_released_discriminator_configs_inferred(name):
    state = _meta_state_dict(KEYS_DIR / f"keys_{name}.txt")
    config = infer_discriminator_config(state)
    assert config == RELEASED_D[name]
    expected = discriminator_shapes(config.size, config.channel_multiplier, config.narrow)
    assert list(expected.items()) == [(k, tuple(v.shape)) for k, v in state.items()]


@pytest.mark.parametrize("config", [
    TINY_G,
    {"size": 128, "style_dim": 64, "n_mlp": 3, "channel_multiplier": 2, "narrow": 0.0625},
    {"size": 64, "style_dim": 16, "n_mlp": 1, "channel_multiplier": 3, "narrow": 0.0625, "isconcat": False},
    {"size": 32, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 2, "narrow": 0.0625},
])
def test_tiny_generator_configs_round_trip(config):
    model = GPENGenerator(**config)
    state = model.state_dict()
    assert infer_generator_config(state) == model.config
    assert generator_shapes(**config) == {k: tuple(v.shape) for k, v in state.items()}


def test_unusual_values_are_recovered_simply():
    """narrow 0.3 gives 153 channels at 4 px; 0.3 (not 153/512) and cm 0.5 must come back."""
    state = {k: torch.empty(s, device="meta") for k, s in generator_shapes(128, 16, 1, 0.5, 0.3).items()}
    config = infer_generator_config(state)
    assert (config.channel_multiplier, config.narrow) == (0.5, 0.3)
    state = {k: torch.empty(s, device="meta") for k, s in discriminator_shapes(128, 4, 0.0625).items()}
    assert infer_discriminator_config(state) == DiscriminatorConfig(128, 4, 0.0625)


def test_inconsistent_shapes_name_the_tensor():
    state = _meta_state_dict(KEYS_DIR / "keys_GPEN-BFR-512.txt")
    state["generator.convs.5.conv.weight"] = torch.empty(1, 512, 512, 3, 3, device="meta")
    with pytest.raises(CheckpointError,
                       match=r"closest: channel_multiplier 2, narrow 1: 1 tensor\(s\) with the "
                       r"wrong shape \(first: generator.convs.5.conv.weight has shape \(1, 512, 512, 3, 3\), "
                       r"expected \(1, 512, 1024, 3, 3\)\)"):
        infer_generator_config(state)
    del state["generator.convs.5.conv.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\) \(first: generator.convs.5.conv.weight\)"):
        infer_generator_config(state)


# --------------------------------------------------------------------------------------------- bad files
@pytest.fixture()
def good_file(models, tmp_path) -> Path:
    path = tmp_path / "good.pth"
    _save_bare(path, models)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p, good: p.write_bytes(b"\x80\x02" + np.random.default_rng(0).bytes(5000)),
     "file is truncated or not a PyTorch/safetensors file"),
    (lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
     "file is truncated or not a PyTorch/safetensors file"),
    (lambda p, good: p.write_text("size: 512\nnarrow: 1\n"),
     "file is truncated or not a PyTorch/safetensors"),
    (lambda p, good: p.write_bytes(b""), "file is empty"),
    # struct.error
    (lambda p, good: p.write_bytes(b"junk"), "file is truncated or not a PyTorch/safetensors"),
])
def test_unreadable_files(make, message, good_file, tmp_path):
    bad = tmp_path / "bad.pth"
    make(bad, good_file)
    with pytest.raises(CheckpointError) as info:
        load_generator(bad)
    assert str(info.value).startswith(f"{bad}: {message}")
    assert "\n" not in str(info.value)


def test_truncated_safetensors(models, tmp_path):
    path = tmp_path / "m.safetensors"
    _save_safetensors(path, models)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError,
                       match=f"^{path}: file is truncated or not a PyTorch/safetensors file"):
        load_generator(path)


class _Arbitrary:
    pass


def test_pickled_objects_are_refused(models, tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"g_ema": models["g_ema"].state_dict(), "args": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match=r"holds a pickled Python object \(.*_Arbitrary\); refusing"):
        load_generator(path)


def test_other_config_is_a_clear_mismatch(good_file):
    other = GeneratorConfig(**{**TINY_G, "narrow": 0.25})
    with pytest.raises(CheckpointError) as info:
        load_generator(good_file, config=other)
    message = str(info.value)
    assert message.startswith(f"{good_file}: does not fit GPENGenerator(size=64, style_dim=32, n_mlp=2, "
                              "channel_multiplier=1, narrow=0.25)")
    assert "tensor(s) with the wrong shape (first: generator.input.input has shape (1, 64, 4, 4), expected " \
           "(1, 128, 4, 4))" in message


def test_export_config_must_match_weights(models, tmp_path):
    _save_export_dir(tmp_path / "export", models)
    config = {**models["g_ema"].config.asdict(), "style_dim": 64}
    (tmp_path / "export" / "config.json").write_text(json.dumps({"generator": config}))
    with pytest.raises(CheckpointError, match="does not fit GPENGenerator.*style_dim=64.*wrong shape"):
        load_generator(tmp_path / "export")
    (tmp_path / "export" / "config.json").write_text(json.dumps({"generator": config, "mode": "delta"}))
    with pytest.raises(CheckpointError, match=r"is a delta export .*gpen_fewshot.export.load_generator"):
        load_generator(tmp_path / "export")
    (tmp_path / "export" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'export'}: directory has no model.safetensors"):
        load_generator(tmp_path / "export")


def test_person_and_model_exports_load_in_every_mode(models, tmp_path):
    """gpen_fewshot.export.load_generator: the project's exports, and every other format through archs."""
    from gpen_fewshot.export import (
        export_generator,
        export_person,
        load_generator,  # noqa: F811  (the export-aware loader, not archs')
    )

    base, tuned = models["g"], models["g_ema"]
    base_file = tmp_path / "base.pth"
    torch.save(base.state_dict(), base_file)
    names = [n for n, _ in tuned.named_parameters()]
    exports = {
        "delta": export_person(tuned, base_file, tmp_path / "delta", "alice", names, "gpen", {}, None, 3,
                               None),
        "full": export_person(tuned, None, tmp_path / "full", "alice", names, "gpen", {}, None, 3, None,
                              mode="full"),
        "model": export_generator(tuned, tmp_path / "model"),
    }
    for kind, folder in exports.items():
        loaded = load_generator(folder)
        assert loaded.config == tuned.config and not loaded.training, kind
        _assert_same_weights(loaded, tuned)
        assert all(p.requires_grad for p in loaded.parameters())  # a fresh module, as from any other format
    half = load_generator(export_generator(tuned, tmp_path / "fp16", dtype="fp16"))
    for name, value in tuned.state_dict().items():
        torch.testing.assert_close(half.state_dict()[name], value, rtol=2e-3, atol=1e-4)
    # the delta export's base is gone: the export's message, as CheckpointError
    base_file.write_bytes(b"changed")
    with pytest.raises(CheckpointError, match="base checkpoint mismatch"):
        load_generator(exports["delta"])
    with pytest.raises(CheckpointError, match="expected"):
        load_generator(exports["full"], config=dataclasses.replace(tuned.config, style_dim=64))


def test_wrong_kind_is_named(models, tmp_path):
    torch.save(models["d"].state_dict(), tmp_path / "D.pth")
    with pytest.raises(CheckpointError,
                       match=f"^{tmp_path / 'D.pth'}: this is a GPEN discriminator state dict, "
                       "not a generator$"):
        load_generator(tmp_path / "D.pth")
    torch.save(models["g"].state_dict(), tmp_path / "G.pth")
    with pytest.raises(CheckpointError, match="this is a GPEN generator state dict, not a discriminator"):
        load_discriminator(tmp_path / "G.pth")
    torch.save({"body.stage1.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"not a GPEN generator state dict \(keys start with: body"):
        load_generator(tmp_path / "other.pth")


def test_strict_false_allows_extra_keys_not_wrong_shapes(models, tmp_path):
    state = dict(models["g_ema"].state_dict(), **{"generator.noises.noise_0": torch.zeros(1)})
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\) \(first: generator.noises.noise_0\)"):
        load_generator(tmp_path / "extra.pth")
    _assert_same_weights(load_generator(tmp_path / "extra.pth", strict=False), models["g_ema"])


# ------------------------------------------------------------------------------------------ registry names
def test_registry_name_is_fetched_and_loaded(models, tmp_path, monkeypatch, good_file):
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path / "weights"))
    spec = dataclasses.replace(weights.REGISTRY["GPEN-BFR-256"], url=good_file.as_uri())
    monkeypatch.setitem(weights.REGISTRY, "GPEN-BFR-256", spec)
    loaded = load_generator("GPEN-BFR-256")  # downloaded from the local file:// URL
    _assert_same_weights(loaded, models["g_ema"])
    assert (tmp_path / "weights" / "GPEN-BFR-256.pth").is_file()
    assert read_state_dict("GPEN-BFR-256").keys() == models["g_ema"].state_dict().keys()


def test_registry_name_of_other_kind_and_unknown_paths(tmp_path):
    with pytest.raises(CheckpointError,
                       match="'RetinaFace-R50' holds detector weights, not a GPEN generator"):
        load_generator("RetinaFace-R50")
    with pytest.raises(FileNotFoundError, match="not a registered weights name"):
        load_generator(tmp_path / "nothing.pth")
