"""Person export: round trip, delta size, strength ends bit-exact, strict loading, atomic writes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.export import (
    CARD_FILE,
    CONFIG_FILE,
    PERSON_FILE,
    WEIGHTS_FILE,
    ExportError,
    default_export_dir,
    discover_persons,
    export_generator,
    export_person,
    file_sha256,
    load_person,
)

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}
TUNED_GROUPS = ("decoder_fine", "to_rgb", "noise")


def _tiny(seed: int) -> GPENGenerator:
    torch.manual_seed(seed)
    return GPENGenerator(**TINY).eval()


@pytest.fixture()
def pair(tmp_path):
    """(base file, base generator, tuned generator, trainable names): tuned = base + changes in 3 groups."""
    base = _tiny(0)
    with torch.no_grad():
        for name, param in base.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(0.3)  # non-zero so the encoder path matters, as in released weights
    base_file = tmp_path / "base.pth"
    torch.save(base.state_dict(), base_file)  # the released (bare state dict) format
    tuned = _tiny(0)
    tuned.load_state_dict(base.state_dict())
    groups = tuned.parameter_groups()
    trainable = [n for g in TUNED_GROUPS for n in groups[g]]
    rng = torch.Generator().manual_seed(1)
    with torch.no_grad():
        params = dict(tuned.named_parameters())
        for name in trainable:
            params[name].add_(0.05 * torch.randn(params[name].shape, generator=rng))
    return base_file, base, tuned, trainable


def _export(tuned, base_file, out_dir, trainable, **kwargs):
    embedding = np.linspace(-0.2, 0.2, 128)
    return export_person(tuned, base_file, out_dir, "alice", trainable, "gpen", {"psnr": 24.5, "lpips": 0.2},
                         "cfg123", 5, embedding, **kwargs)


def _x(seed: int = 3) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_round_trip_equals_the_tuned_generator(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "alice" / "weights", trainable)
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, PERSON_FILE,
                                                            CARD_FILE])
    weights = load_person(out)
    with torch.inference_mode():
        np.testing.assert_array_equal(weights.build_generator().forward(_x()).numpy(), tuned(_x()).numpy())
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["generator"]["size"] == 32 and config["template"] == "gpen" and config["mode"] == "delta"
    assert config["base"]["sha256"] == file_sha256(base_file)
    person = json.loads((out / PERSON_FILE).read_text())
    assert person["name"] == "alice" and person["n_photos"] == 5 and person["config_hash"] == "cfg123"
    assert len(person["reference_embedding"]) == 128 and person["metrics"]["psnr"] == 24.5
    assert person["base_sha256"] == file_sha256(base_file) and person["base_model"] == "base"
    assert weights.metadata.embedding.shape == (128,) and weights.name == "alice"


def test_delta_stores_only_trainable_tensors_and_is_much_smaller(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    delta = _export(tuned, base_file, tmp_path / "delta", trainable)
    full = _export(tuned, base_file, tmp_path / "full", trainable, mode="full")
    assert set(load_file(str(delta / WEIGHTS_FILE))) == set(trainable)
    assert len(load_file(str(full / WEIGHTS_FILE))) == len(tuned.state_dict())
    assert (delta / WEIGHTS_FILE).stat().st_size < 0.5 * (full / WEIGHTS_FILE).stat().st_size


def test_strength_zero_is_the_base_bit_for_bit_and_one_is_tuned(pair, tmp_path):
    base_file, base, tuned, trainable = pair
    weights = load_person(_export(tuned, base_file, tmp_path / "w", trainable))
    zero, half = weights.state_dict_at(0.0), weights.state_dict_at(0.5)
    for key, value in base.state_dict().items():
        assert torch.equal(zero[key], value), key
    name = trainable[0]
    expected = base.state_dict()[name] + 0.5 * (tuned.state_dict()[name] - base.state_dict()[name])
    assert torch.allclose(half[name], expected, atol=1e-6)
    assert not torch.equal(half[name], base.state_dict()[name])
    with torch.inference_mode():
        np.testing.assert_array_equal(weights.build_generator(0.0)(_x()).numpy(), base(_x()).numpy())
        np.testing.assert_array_equal(weights.build_generator(1.0)(_x()).numpy(), tuned(_x()).numpy())
        assert not torch.equal(weights.build_generator(0.5)(_x()), tuned(_x()))
    with pytest.raises(ValueError, match="strength"):
        weights.state_dict_at(1.5)


def test_base_hash_mismatch_is_a_clear_error(pair, tmp_path):
    base_file, base, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable)
    expected = file_sha256(base_file)
    state = base.state_dict()
    state["final_linear.0.bias"] = state["final_linear.0.bias"] + 1.0
    torch.save(state, base_file)
    with pytest.raises(ExportError) as info:
        load_person(out)
    message = str(info.value)
    assert "sha256" in message and expected in message and file_sha256(base_file) in message


def test_missing_base_is_a_clear_error(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable)
    base_file.unlink()
    with pytest.raises(ExportError, match="not found"):
        load_person(out)


def test_unknown_or_misshapen_stored_keys_are_rejected(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable)
    tensors = load_file(str(out / WEIGHTS_FILE))
    save_file({**tensors, "bogus.weight": torch.zeros(3)}, str(out / WEIGHTS_FILE))
    with pytest.raises(ExportError, match=r"unexpected 1 key\(s\)"):
        load_person(out)
    name = trainable[0]
    save_file({**tensors, name: torch.zeros(7, 7)}, str(out / WEIGHTS_FILE))
    with pytest.raises(ExportError, match="shape"):
        load_person(out)


def test_full_export_is_self_contained_but_needs_the_base_below_strength_one(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable, mode="full")
    base_file.unlink()
    weights = load_person(out)
    with torch.inference_mode():
        np.testing.assert_array_equal(weights.build_generator()(_x()).numpy(), tuned(_x()).numpy())
    with pytest.raises(ExportError):
        weights.state_dict_at(0.5)


def test_fp16_storage_halves_the_file_and_stays_close(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    fp32 = _export(tuned, base_file, tmp_path / "a", trainable)
    fp16 = _export(tuned, base_file, tmp_path / "b", trainable, dtype="fp16")
    ratio = (fp16 / WEIGHTS_FILE).stat().st_size / (fp32 / WEIGHTS_FILE).stat().st_size
    assert 0.45 < ratio < 0.6
    weights = load_person(fp16)
    assert all(v.dtype == torch.float32 for v in weights.state_dict.values())
    with torch.inference_mode():
        diff = (weights.build_generator()(_x()) - tuned(_x())).abs().max().item()
    assert 0 < diff < 0.05


def test_changed_tensor_outside_trainable_set_is_stored_anyway(pair, tmp_path, caplog):
    base_file, _, tuned, trainable = pair
    with torch.no_grad():
        tuned.final_linear[0].bias.add_(0.1)
    with caplog.at_level(logging.WARNING):
        out = _export(tuned, base_file, tmp_path / "w", trainable)
    assert "final_linear.0.bias" in load_file(str(out / WEIGHTS_FILE))
    assert "differ from the base" in caplog.text
    with torch.inference_mode():
        np.testing.assert_array_equal(load_person(out).build_generator()(_x()).numpy(), tuned(_x()).numpy())


def test_failed_export_leaves_the_previous_one_untouched(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable)
    before = (out / WEIGHTS_FILE).read_bytes()
    with pytest.raises(ExportError):
        _export(tuned, base_file, out, trainable, dtype="int8")
    with pytest.raises(ExportError):
        _export(tuned, None, out, trainable)  # delta without a base
    assert (out / WEIGHTS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pth", "w"]  # no temporary directories left
    _export(tuned, base_file, out, trainable, mode="full")  # overwriting works
    assert json.loads((out / CONFIG_FILE).read_text())["mode"] == "full"


def test_bad_arguments_are_rejected(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    with pytest.raises(ValueError):
        export_person(tuned, base_file, tmp_path / "x", "../evil", trainable, "gpen", {}, None, 3, None)
    with pytest.raises(ExportError, match="not generator tensors"):
        _export(tuned, base_file, tmp_path / "x", ["nope.weight"])
    with pytest.raises(ExportError, match="template"):
        export_person(tuned, base_file, tmp_path / "x", "alice", trainable, "square", {}, None, 3, None)
    with pytest.raises(ExportError, match="128"):
        export_person(tuned, base_file, tmp_path / "x", "alice", trainable, "gpen", {}, None, 3, [0.0] * 5)
    other = GPENGenerator(**{**TINY, "narrow": 0.25})
    with pytest.raises(ExportError, match="does not match its base"):
        _export(other, base_file, tmp_path / "x", [])


def test_lookup_by_name_and_discovery(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    root = tmp_path / "persons"
    out = _export(tuned, base_file, default_export_dir("alice", root), trainable)
    assert out == root / "alice" / "weights"
    assert load_person("alice", root).path == out
    assert load_person(root / "alice").path == out  # a person folder holding weights/
    (root / "photos_only").mkdir()
    assert discover_persons(root) == [out]
    with pytest.raises(ExportError, match="bob"):
        load_person("bob", root)
    with pytest.raises(ExportError, match="config.json"):
        load_person(root / "photos_only")


def test_model_export_without_person_and_directory_as_base(pair, tmp_path):
    base_file, base, tuned, trainable = pair
    prior = export_generator(base, tmp_path / "prior", template="gpen")
    assert not (prior / PERSON_FILE).exists()
    loaded = load_person(prior)
    assert loaded.metadata is None and loaded.mode == "full"
    out = _export(tuned, prior, tmp_path / "w", trainable)  # an export directory as the base
    weights = load_person(out)
    assert weights.base.name == "prior"
    with torch.inference_mode():
        np.testing.assert_array_equal(weights.build_generator()(_x()).numpy(), tuned(_x()).numpy())
        np.testing.assert_array_equal(weights.build_generator(0.0)(_x()).numpy(), base(_x()).numpy())


def test_newer_format_version_is_refused(pair, tmp_path):
    base_file, _, tuned, trainable = pair
    out = _export(tuned, base_file, tmp_path / "w", trainable)
    config = json.loads((out / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ExportError, match="newer"):
        load_person(out)
