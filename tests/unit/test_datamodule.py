"""Datamodules, datasets and face-safe augmentations, on synthetic crops (no face pipeline needed)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from gpen_fewshot.data import datamodule as datamodule_module
from gpen_fewshot.data.augment import NO_AUGMENT, AugmentConfig, augment_face
from gpen_fewshot.data.datamodule import (
    CropsDataModule,
    FacesFolderDataModule,
    FixedPairDataset,
    PersonDataModule,
    split_holdout,
)
from gpen_fewshot.data.degradations import get_preset, sample_rng
from gpen_fewshot.utils.image import image_to_tensor, write_image

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def _crop(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 0.5 * (xx + yy)], axis=2) + 0.2 * rng.standard_normal((size, size, 3))
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


@pytest.fixture()
def crops(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    paths = []
    for i in range(5):
        path = tmp_path / "crops" / f"photo_{i}.png"
        write_image(path, _crop(i, size=48 if i == 4 else SIZE))  # one crop of another size: resized
        paths.append(path)
    return paths[:3] + paths[4:], paths[3:4]


def _module(train: list[Path], val: list[Path], **kwargs) -> CropsDataModule:
    options = {
        "size": SIZE,
        "degradation": "moderate",
        "batch_size": 2,
        "seed": 3,
        "samples_per_epoch": 6,
        "val_degradations": ["mild", "severe"],
        "val_copies": 2,
    }
    options.update(kwargs)
    return CropsDataModule(train, val, **options)


def _batches(loader) -> list[dict]:
    return list(loader)


def test_batch_contract(crops) -> None:
    batch = next(iter(_module(*crops).train_dataloader()))
    assert set(batch) == {"lq", "gt", "path", "degradation"}
    for key in ("lq", "gt"):
        assert batch[key].shape == (2, 3, SIZE, SIZE) and batch[key].dtype == torch.float32
        assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
    assert isinstance(batch["path"], list) and all(isinstance(p, str) for p in batch["path"])
    assert not torch.equal(batch["lq"], batch["gt"])
    assert batch["degradation"] == ["moderate", "moderate"]


def test_workers_do_not_change_the_data_and_seeds_do(crops) -> None:
    serial = _batches(_module(*crops, num_workers=0).train_dataloader())
    parallel = _batches(_module(*crops, num_workers=2).train_dataloader())
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["path"] == b["path"]
    other_seed = _batches(_module(*crops, seed=4).train_dataloader())
    assert not torch.equal(serial[0]["lq"], other_seed[0]["lq"])
    # 6 samples of 4 photos: some photo appears twice in the epoch, with different degradations
    samples = [(path, lq) for batch in serial for path, lq in zip(batch["path"], batch["lq"], strict=True)]
    repeats = [(a, b) for i, a in enumerate(samples) for b in samples[i + 1:] if a[0] == b[0]]
    assert repeats and all(not torch.equal(a[1], b[1]) for a, b in repeats)


def test_every_pass_visits_each_crop_once_in_a_seeded_order(crops) -> None:
    """Crops at the end of a long list are sampled from the first steps (a plain k % n walked the list)."""
    paths = [str(p) for p in crops[0]] * 25  # 100 entries, each crop 25 times
    dataset = datamodule_module.TrainPairDataset(paths, SIZE, "moderate", seed=3)
    first_pass = [dataset.crop_index(k) for k in range(100)]
    assert sorted(first_pass) == list(range(100)) and first_pass != list(range(100))
    assert min(first_pass[:20]) < 50 <= max(first_pass[:20])  # both halves of the list early on
    second_pass = [dataset.crop_index(k) for k in range(100, 200)]
    assert sorted(second_pass) == list(range(100)) and second_pass != first_pass
    again = datamodule_module.TrainPairDataset(paths, SIZE, "moderate", seed=3)
    assert [again.crop_index(k) for k in (150, 3, 199, 0)] == [second_pass[50], first_pass[3], second_pass[99],
                                                              first_pass[0]]  # any key order, same crops
    other_seed = datamodule_module.TrainPairDataset(paths, SIZE, "moderate", seed=4)
    assert [other_seed.crop_index(k) for k in range(100)] != first_pass


def test_epochs_differ_through_the_sampler(crops) -> None:
    loader = _module(*crops).train_dataloader()
    epoch0 = _batches(loader)
    loader.sampler.set_epoch(1)
    epoch1 = _batches(loader)
    loader.sampler.set_epoch(0)
    assert not torch.equal(epoch0[0]["lq"], epoch1[0]["lq"])
    assert torch.equal(epoch0[0]["lq"], _batches(loader)[0]["lq"])


def test_validation_set_is_fixed(crops) -> None:
    module = _module(*crops)
    first = _batches(module.val_dataloader())
    second = _batches(module.val_dataloader())
    fresh = _batches(_module(*crops, seed=99, num_workers=2).val_dataloader())  # training seed is irrelevant
    assert sum(b["lq"].shape[0] for b in first) == 1 * 2 * 2  # photos x presets x copies
    for a, b, c in zip(first, second, fresh, strict=True):
        assert (
            torch.equal(a["lq"], b["lq"]) and torch.equal(a["lq"], c["lq"]) and torch.equal(a["gt"], c["gt"])
        )
    names = [n for b in first for n in b["degradation"]]
    assert names == ["mild", "mild", "severe", "severe"]
    assert all(Path(p).name == "photo_3.png" for b in first for p in b["path"])
    gt = first[0]["gt"][0]
    assert torch.equal(gt, first[-1]["gt"][-1])  # no augmentation on the validation ground truth
    assert not torch.equal(first[0]["lq"][0], first[0]["lq"][1])  # copies differ


def test_validation_falls_back_to_training_crops(crops) -> None:
    module = _module(crops[0], [])
    with pytest.warns(UserWarning, match="held-out"):
        module.setup("fit")
    assert len(module.val_set) == len(crops[0]) * 2 * 2


def test_bad_arguments(crops) -> None:
    with pytest.raises(ValueError, match="scale must be 1"):
        _module(*crops, degradation={"kind": "bsrgan", "scale": 2})
    with pytest.raises(ValueError, match="samples_per_epoch"):
        _module(*crops, samples_per_epoch=1)
    with pytest.raises(ValueError, match="noise_prob"):
        _module(*crops, degradation={"preset": "mild", "noise_prob": 2.0})


def test_degradation_from_hydra_like_mapping(crops) -> None:
    from omegaconf import OmegaConf

    spec = OmegaConf.create({"kind": "bsrgan", "sf": 2, "noise_level_range": [1, 3]})
    module = _module(*crops, degradation=spec, augment=OmegaConf.create({"scale_range": [1.0, 1.05]}))
    assert module.degradation.noise_level_range == (1, 3) and module.augment.scale_range == (1.0, 1.05)
    assert _module(*crops, degradation=get_preset("mild")).degradation == get_preset("mild")
    assert _module(*crops, degradation=get_preset("mild")).degradation_name == "mild"
    assert _module(*crops, degradation=spec).degradation_name == "bsrgan"  # not a preset: the kind


def test_lightning_sets_a_new_epoch(crops) -> None:
    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[torch.Tensor]] = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch["lq"].clone())
            return (self.weight * batch["lq"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(recorder, datamodule=_module(*crops))
    assert len(recorder.seen[0]) == len(recorder.seen[1]) == 3
    assert not torch.equal(recorder.seen[0][0], recorder.seen[1][0])


@dataclass
class _Record:
    crop: str | None
    sha256: str | None


@dataclass
class _Prepared:
    train_crops: list[Path]
    holdout_crops: list[Path]
    records: tuple = ()
    root: Path = Path(".")


def test_person_datamodule_calls_prepare_person(crops, monkeypatch, tmp_path) -> None:
    calls = []

    def prepare_person(person_dir, size, template, **options):
        calls.append((Path(person_dir), size, template, options))
        return _Prepared(*crops)

    monkeypatch.setattr(datamodule_module, "prepare_person", prepare_person)
    module = PersonDataModule(
        tmp_path / "alice",
        size=SIZE,
        template="ffhq",
        holdout=1,
        min_photos=2,
        batch_size=2,
        samples_per_epoch=4,
        val_degradations=["moderate"],
        val_copies=1,
    )
    module.prepare_data()
    module.setup("fit")
    assert calls[0] == (tmp_path / "alice", SIZE, "ffhq", {"min_photos": 2, "holdout": 1})
    assert len(module.val_set) == 1 and next(iter(module.train_dataloader()))["lq"].shape == (
        2,
        3,
        SIZE,
        SIZE,
    )


def test_faces_folder_datamodule_holds_out_deterministically(crops, monkeypatch, tmp_path) -> None:
    all_crops = crops[0] + crops[1]
    monkeypatch.setattr(datamodule_module, "prepare_faces_folder",
                        lambda faces_dir, size, template, **kw: list(all_crops))
    module = FacesFolderDataModule(tmp_path, size=SIZE, val_count=2, batch_size=2, samples_per_epoch=4)
    train, val = module.resolve_crops()
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(all_crops)
    assert (
        split_holdout(list(reversed(all_crops)), 2)[1] == sorted(val, key=lambda p: all_crops.index(p))[::-1]
    )
    with pytest.raises(ValueError, match="hold out"):
        split_holdout(all_crops, len(all_crops))


def test_train_only_folders_are_weighted_and_never_change_the_held_out_split(crops, monkeypatch, tmp_path):
    main_crops, extra_crops = list(crops[0] + crops[1][:1]), list(crops[1][1:])
    by_folder = {tmp_path / "main": main_crops, tmp_path / "crisp": extra_crops}
    monkeypatch.setattr(datamodule_module, "prepare_faces_folder",
                        lambda faces_dir, size, template, **kw: list(by_folder[Path(faces_dir)]))
    plain = FacesFolderDataModule(tmp_path / "main", size=SIZE, val_count=2, batch_size=2)
    module = FacesFolderDataModule(tmp_path / "main", size=SIZE, val_count=2, batch_size=2,
                                   train_only_dirs=[tmp_path / "crisp"], train_only_repeat=3)
    plain_train, plain_val = plain.resolve_crops()
    train, val = module.resolve_crops()
    assert val == plain_val and not set(val) & set(extra_crops)
    assert train == plain_train + extra_crops * 3
    with pytest.raises(ValueError, match="train_only_repeat"):
        FacesFolderDataModule(tmp_path, size=SIZE, train_only_dirs=[tmp_path], train_only_repeat=0)


@pytest.mark.parametrize("name,cls", [("person", PersonDataModule), ("faces_folder", FacesFolderDataModule)])
def test_data_yaml_lists_every_argument(name: str, cls: type) -> None:
    path = REPO / "configs" / "data" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["_target_"] == f"{cls.__module__}.{cls.__name__}"
    own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    base = set(inspect.signature(CropsDataModule.__init__).parameters) - {"self", "train_crops", "val_crops"}
    assert set(data) - {"_target_", "_convert_"} == own | base
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "  # " in line or line.rstrip().endswith(":"), f"{path}: no comment on {line!r}"
    assert AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["augment"].items()})


def _protocol_set(paths: list[Path], keys: list[str], levels: tuple[str, ...], copies: int, seed: int = 0):
    from gpen_fewshot.evaluation.protocol import EvalPhoto, ProtocolConfig, build_eval_set

    photos = [EvalPhoto(f"p/{p.stem}", "p", p, key) for p, key in zip(paths, keys, strict=True)]
    return build_eval_set("person", photos, SIZE, "gpen", ProtocolConfig(levels, copies, seed))


def test_validation_pairs_are_the_evaluation_protocols_inputs(crops) -> None:
    import hashlib

    train, val = crops[0][:3], crops[0][:2]  # two same-size held-out crops
    module = _module(train, val, val_seed=5)  # val_degradations [mild, severe], val_copies 2
    batches = _batches(module.val_dataloader())
    lq, gt = torch.cat([b["lq"] for b in batches]), torch.cat([b["gt"] for b in batches])
    keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in val]  # no manifest: the crop file's sha256
    expected = _protocol_set(val, keys, ("mild", "severe"), 2, seed=5)
    assert len(expected.lq) == lq.shape[0] == 8
    for i in range(8):  # same order, bit-identical uint8 inputs and ground truths
        assert (torch.equal(lq[i], image_to_tensor(expected.lq[i])) and
                torch.equal(gt[i], image_to_tensor(expected.gt[i])))


def test_person_validation_is_seeded_by_the_source_photos_sha256(crops, monkeypatch, tmp_path) -> None:
    root = crops[1][0].parent
    held = crops[1][0]
    records = (_Record(held.name, "ab" * 32), _Record(None, None))  # the manifest's source-photo sha256
    monkeypatch.setattr(datamodule_module, "prepare_person",
                        lambda person_dir, size, template, **options: _Prepared(crops[0], [held], records,
                                                                                root))
    module = PersonDataModule(tmp_path / "alice", size=SIZE, batch_size=2, samples_per_epoch=4,
                              val_degradations=["moderate"], val_copies=2)
    module.setup("fit")
    expected = _protocol_set([held], ["ab" * 32], ("moderate",), 2)
    for i in range(2):
        assert torch.equal(module.val_set[i]["lq"], image_to_tensor(expected.lq[i]))


def test_fixed_dataset_mapping_of_specs(crops) -> None:
    dataset = FixedPairDataset(crops[1], SIZE, {"light": {"preset": "mild"}, "clean": "none"}, copies=1)
    assert [dataset[i]["degradation"] for i in range(len(dataset))] == ["light", "clean"]
    assert torch.equal(dataset[1]["lq"], dataset[1]["gt"])


# --------------------------------------------------------------------------- augmentations


def test_augment_keeps_shape_range_and_is_deterministic() -> None:
    img = _crop(0, 40).astype(np.float32) / 255.0
    out = augment_face(img, sample_rng(1), AugmentConfig())
    assert out.shape == img.shape and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out, augment_face(img, sample_rng(1), AugmentConfig()))
    assert not np.array_equal(out, augment_face(img, sample_rng(2), AugmentConfig()))
    np.testing.assert_array_equal(augment_face(img, sample_rng(1), NO_AUGMENT), img)


def test_augment_flip_zoom_and_jitter_are_what_they_say() -> None:
    img = _crop(0, 40).astype(np.float32) / 255.0
    flip_only = AugmentConfig(
        hflip_prob=1.0, scale_range=(1.0, 1.0), max_shift=0.0, brightness=0.0, contrast=0.0
    )
    np.testing.assert_allclose(augment_face(img, sample_rng(0), flip_only), img[:, ::-1], atol=1e-6)
    zoom = AugmentConfig(hflip_prob=0.0, scale_range=(1.1, 1.1), max_shift=0.0, brightness=0.0, contrast=0.0)
    zoomed = augment_face(img, sample_rng(0), zoom)
    assert np.abs(zoomed - img).mean() > 0.01 and np.abs(zoomed[19:21, 19:21] - img[19:21, 19:21]).max() < 0.2
    flat = np.full((8, 8, 3), 0.5, np.float32)
    bright = AugmentConfig(
        hflip_prob=0.0, scale_range=(1.0, 1.0), max_shift=0.0, brightness=0.1, contrast=0.0
    )
    shifts = {round(float(augment_face(flat, sample_rng(i), bright).mean() - 0.5), 4) for i in range(20)}
    assert len(shifts) > 10 and max(abs(s) for s in shifts) <= 0.1
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.1, 0.9))


def test_detail_changes_soften_or_sharpen_and_leave_the_stream_of_other_configs_alone() -> None:
    rng = np.random.default_rng(3)
    noise = rng.random((64, 64, 3)).astype(np.float32)  # white noise: all detail, so softening shows
    # soft, mid-grey: room to sharpen without clipping
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.0) * 0.5 + 0.25
    plain = AugmentConfig(hflip_prob=0.0, scale_range=(1.0, 1.0), max_shift=0.0, brightness=0.0, contrast=0.0)
    soft = AugmentConfig(**{**plain.__dict__, "soften_prob": 1.0, "soften_range": (2.0, 2.0)})
    sharp = AugmentConfig(**{**plain.__dict__, "sharpen_prob": 1.0, "sharpen_amount": (1.0, 1.0),
                             "sharpen_sigma": (1.0, 1.0)})
    detail = lambda x: float(np.abs(np.diff(x, axis=1)).mean())  # noqa: E731
    softened, sharpened = augment_face(noise, sample_rng(0), soft), augment_face(smooth, sample_rng(0), sharp)
    assert softened.shape == noise.shape and softened.dtype == sharpened.dtype == np.float32
    assert detail(softened) < 0.5 * detail(noise)  # high frequencies gone
    assert detail(sharpened) > 1.3 * detail(smooth)  # edges steeper
    for before, after in ((noise, softened), (smooth, sharpened)):
        assert abs(float(after.mean()) - float(before.mean())) < 0.01  # colour kept
    np.testing.assert_array_equal(augment_face(noise, sample_rng(0), plain), noise)  # off: untouched
    # both off: no extra draws, so the degradation that follows sees the same random stream as before
    a, b = sample_rng(5), sample_rng(5)
    augment_face(noise, a, AugmentConfig())
    augment_face(noise, b, AugmentConfig(soften_prob=0.0, sharpen_prob=0.0))
    assert a.random() == b.random()
    with pytest.raises(ValueError, match="soften_range"):
        AugmentConfig(soften_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="sum <= 1"):
        AugmentConfig(soften_prob=0.6, sharpen_prob=0.6)
