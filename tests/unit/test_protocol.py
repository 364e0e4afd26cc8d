"""Evaluation protocol: deterministic degraded inputs, held-out photos only, other people's folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.evaluation.protocol import (
    EvalPhoto,
    ProtocolConfig,
    ProtocolError,
    build_eval_set,
    find_other_groups,
    person_photos,
    sample_rng,
    save_inputs,
)
from gpen_fewshot.utils.image import read_image, write_image

SIZE = 32


def _face(seed: int, size: int = SIZE) -> np.ndarray:
    """A smooth random uint8 RGB image (stands in for an aligned crop)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    big = np.kron(small, np.ones((size // 8, size // 8, 1), np.float32))
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def _photos(folder: Path, count: int, group: str = "alice") -> list[EvalPhoto]:
    photos = []
    for i in range(count):
        path = folder / f"{group}_{i}.png"
        write_image(path, _face(i))
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        photos.append(EvalPhoto(f"{group}/{path.stem}", group, path, key))
    return photos


PROTOCOL = ProtocolConfig(levels=("mild", "severe"), copies=2, seed=3)


def test_sample_rng_depends_only_on_its_keys() -> None:
    draw = sample_rng(0, "abc", "mild", 1).random(4)
    assert np.array_equal(draw, sample_rng(0, "abc", "mild", 1).random(4))
    for other in (sample_rng(1, "abc", "mild", 1), sample_rng(0, "abd", "mild", 1),
                  sample_rng(0, "abc", "severe", 1), sample_rng(0, "abc", "mild", 0)):
        assert not np.array_equal(draw, other.random(4))


def test_eval_set_is_identical_on_rebuild_and_independent_of_order_and_names(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 2)
    first = build_eval_set("person", photos, SIZE, "gpen", PROTOCOL)
    second = build_eval_set("person", photos, SIZE, "gpen", PROTOCOL)
    assert len(first.lq) == 2 * 2 * 2 and len(first.indices("mild")) == 4
    assert all(np.array_equal(a, b) for a, b in zip(first.lq, second.lq, strict=True))
    assert all(lq.dtype == np.uint8 and lq.shape == (SIZE, SIZE, 3) for lq in first.lq)
    # the draws really degrade, and differ between copies and levels
    assert not np.array_equal(first.lq[0], first.gt[0])
    assert not np.array_equal(first.lq[0], first.lq[1]) and not np.array_equal(first.lq[0], first.lq[2])
    # reversed order, renamed file: the same photo gets the same inputs (seeded by its content hash)
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(photos[1].crop_path.read_bytes())
    moved = [EvalPhoto("x/renamed", "x", renamed, photos[1].key), photos[0]]
    third = build_eval_set("person", moved, SIZE, "gpen", PROTOCOL)
    assert np.array_equal(third.lq[0], first.lq[4]) and np.array_equal(third.lq[4], first.lq[0])
    other_seed = build_eval_set("person", photos, SIZE, "gpen", ProtocolConfig(("mild", "severe"), 2, seed=4))
    assert not np.array_equal(other_seed.lq[0], first.lq[0])


def test_metric_table_is_identical_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two evaluations of the same model on rebuilt inputs give the same numbers."""
    from gpen_fewshot.archs import GPENGenerator
    from gpen_fewshot.evaluation.models import ModelSpec
    from gpen_fewshot.evaluation.runner import EvalOptions, MetricSelection, run_evaluation

    _fake_person(tmp_path, monkeypatch, holdout=2)
    torch.manual_seed(0)
    checkpoint = tmp_path / "g.pth"
    torch.save(GPENGenerator(SIZE, style_dim=16, n_mlp=1, channel_multiplier=1, narrow=0.125).state_dict(),
               checkpoint)
    spec = ModelSpec("m", "base", str(checkpoint), "checkpoint", "gpen")
    options = EvalOptions(tmp_path / "alice", PROTOCOL, device="cpu", metrics=MetricSelection(
        lpips=False, fid=False, niqe=False, identity=False))
    a = run_evaluation([spec], options, progress=False)
    b = run_evaluation([spec], options, progress=False)
    assert a.results == b.results
    assert set(a.results["person"]) == {"input", "m"}
    assert a.results["person"]["m"]["mild"]["psnr"] > 0
    assert a.results["person"]["input"]["mild"]["psnr"] > a.results["person"]["input"]["severe"]["psnr"]


def test_save_inputs_round_trip(tmp_path: Path) -> None:
    eval_set = build_eval_set("person", _photos(tmp_path, 1), SIZE, "gpen", PROTOCOL)
    root = save_inputs(eval_set, tmp_path / "inputs")
    saved = sorted(root.rglob("*_lq.png"))
    assert len(saved) == len(eval_set.lq)
    sample = eval_set.samples[3]
    path = root / sample.level / f"{sample.photo_id}_k{sample.copy}_lq.png"
    assert np.array_equal(read_image(path), eval_set.lq[3])


def test_bad_protocol_settings() -> None:
    with pytest.raises(ProtocolError, match="unknown degradation preset 'awful'"):
        ProtocolConfig(levels=("mild", "awful"))
    with pytest.raises(ValueError, match="copies"):
        ProtocolConfig(copies=0)
    with pytest.raises(ProtocolError, match="no photos"):
        build_eval_set("person", [], SIZE, "gpen", PROTOCOL)


def _fake_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holdout: int) -> Path:
    """A prepared person (4 synthetic crops, ``holdout`` held out) without running face detection."""
    from gpen_fewshot.data import person as person_module
    from gpen_fewshot.evaluation import protocol as protocol_module

    person_dir = tmp_path / "alice"
    root = person_dir / ".prepared" / f"{SIZE}_gpen"
    records = []
    for i in range(4):
        split = "holdout" if i < holdout else "train"
        crop = f"{split}/{i:03d}_abcd{i}.png"
        write_image(root / crop, _face(10 + i))
        records.append(person_module.PhotoRecord(f"{i:03d}.jpg", f"{i:064x}", "used", "ok", split, crop))

    def prepare(person_dir_arg: Path, size: int = 256, template: str = "gpen", **kwargs: object) -> object:
        assert size == SIZE and template == "gpen"
        return person_module.PreparedPerson(
            "alice", root, root / "manifest.json", root / "contact_sheet.png",
            [root / r.crop for r in records if r.split == "train"],
            [root / r.crop for r in records if r.split == "holdout"], tuple(records), True)

    monkeypatch.setattr(person_module, "prepare_person", prepare)
    monkeypatch.setattr(protocol_module, "prepare_person", prepare)  # its own binding of the name
    return person_dir


def test_person_photos_are_the_held_out_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    person_dir = _fake_person(tmp_path, monkeypatch, holdout=1)
    prepared = person_photos(person_dir, SIZE, "gpen")
    assert [p.photo_id for p in prepared.holdout] == ["alice/000_abcd0"]
    assert prepared.holdout[0].key == f"{0:064x}"  # the source photo's sha256 seeds its degradations
    assert len(prepared.train_crops) == 3 and all("train" in str(p) for p in prepared.train_crops)


def test_person_without_held_out_photos_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    person_dir = _fake_person(tmp_path, monkeypatch, holdout=0)
    with pytest.raises(ProtocolError, match="no held-out photo"):
        person_photos(person_dir, SIZE, "gpen")


def test_other_groups_from_person_folders_and_folders_of_them(tmp_path: Path) -> None:
    persons = tmp_path / "persons"
    for name in ("alice", "bob", "carol", "dave"):
        write_image(persons / name / "0.jpg", _face(1))
    groups = find_other_groups([persons], exclude=[persons / "alice"], max_persons=2)
    assert [name for name, _ in groups] == ["bob", "carol"]
    explicit = find_other_groups([persons / "dave", persons / "bob"])
    assert ([name for name, _ in explicit] == ["dave", "bob"] and
            explicit[0][1] == [persons / "dave" / "0.jpg"])
    with pytest.raises(ProtocolError, match="is not a folder"):
        find_other_groups([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProtocolError, match="holds no images"):
        find_other_groups([tmp_path / "empty"])
