"""Lightning datamodules that turn a few aligned face crops into endless (degraded, clean) training pairs.

Training data is "infinite": every step draws a fresh augmentation and degradation of one of the crops, so
five photos give unlimited pairs; an epoch is ``samples_per_epoch`` samples. Randomness is per sample: sample
``i`` of epoch ``e`` uses a generator seeded by ``(seed, e * samples_per_epoch + i)`` (the key comes from
:class:`EpochKeySampler`, whose ``set_epoch`` Lightning calls every epoch), so runs reproduce exactly and do
not depend on the number of workers, while workers and epochs all get different samples.

Validation is a fixed set built from held-out crops: ``val_copies`` degradations of each crop at each preset
in ``val_degradations``, made exactly like the inputs of ``evaluate.py``
(``gpen_fewshot.evaluation.protocol``: draw k of a photo at a level is seeded by ``(val_seed, sha256 of the
source photo, level, k)`` and the low-quality input is quantised to uint8), so ``val/psnr`` during training is
measured on the same inputs as the evaluation with the same seed, levels and copies (the defaults agree).
Identical on every call and every run.

Batches are dicts ``{"lq": (B, 3, S, S), "gt": (B, 3, S, S)`` float32 RGB in [-1, 1], ``"path": list[str],
"degradation": list[str]}`` (the last one: preset name, for per-preset validation metrics).

Why one file over 400 lines: the two LightningDataModules (one person, a faces folder) share their datasets,
seeding and validation-set construction; each half alone would import the other.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from gpen_fewshot.data.augment import NO_AUGMENT, AugmentConfig, augment_face
from gpen_fewshot.data.degradations import (
    PRESETS,
    Degradation,
    DegradationConfig,
    build_degradation,
    resolve_config,
    sample_rng,
)
from gpen_fewshot.data.draws import degrade as protocol_degrade
from gpen_fewshot.data.draws import sample_rng as protocol_rng
from gpen_fewshot.data.person import prepare_faces_folder, prepare_person
from gpen_fewshot.utils.hashing import sha256_file
from gpen_fewshot.utils.image import image_to_tensor, read_image, to_float

DegradationSpec = str | Mapping[str, Any] | DegradationConfig
_TRAIN_STREAM = 0
_ORDER_STREAM = 1


def _name_key(text: str) -> int:
    """A stable 32-bit integer of a string (file or preset name), for seeding."""
    return zlib.crc32(text.encode("utf-8"))


def _degradation_name(spec: DegradationSpec) -> str:
    """The preset name of a spec (also for a mapping/config equal to a preset), else the model's kind."""
    if isinstance(spec, str):
        return spec
    config = resolve_config(spec)
    return next((name for name, preset in PRESETS.items() if preset == config), config.kind)


def _build_same_size(spec: DegradationSpec) -> Degradation:
    degradation = build_degradation(spec)
    if degradation.scale != 1:
        raise ValueError(
            f"the datamodules need lq and gt of the same size: degradation scale must be 1, "
            f"got {degradation.scale} ({_degradation_name(spec)})"
        )
    return degradation


def _resolve_augment(augment: AugmentConfig | Mapping[str, Any] | bool | None) -> AugmentConfig:
    if augment is None or augment is True:
        return AugmentConfig()
    if augment is False:
        return NO_AUGMENT
    if isinstance(augment, AugmentConfig):
        return augment
    values = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in dict(augment).items()
    }
    return AugmentConfig(**values)


class _CropLoader:
    """Reads crops as uint8 RGB (size, size, 3), resizing other sizes; cached per process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._cache:
            image = read_image(path)
            if image.shape[:2] != (self.size, self.size):
                shrink = image.shape[0] * image.shape[1] > self.size * self.size
                image = cv2.resize(
                    image, (self.size, self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
                )
            self._cache[path] = image
        return self._cache[path]


def _pair_sample(gt_lq: tuple[np.ndarray, np.ndarray], path: str, name: str) -> dict[str, Any]:
    """A sample dict from (gt, lq) images (float [0, 1] or uint8)."""
    gt, lq = gt_lq
    return {"lq": image_to_tensor(lq), "gt": image_to_tensor(gt), "path": path, "degradation": name}


class TrainPairDataset(Dataset):
    """Endless random pairs: key ``k`` gives one crop of a shuffled pass, augmented and degraded (rng from k).

    Keys ``p * len(paths) .. (p + 1) * len(paths) - 1`` visit every crop once, in an order drawn from
    ``(seed, p)`` alone, so every crop has its list share in any window of a pass or more and a resumed run
    (same keys) sees the same crops. (A plain ``k % len(paths)`` walked the list in order: with short runs,
    crops appended at the end of a long list, e.g. ``train_only_dirs``, were never sampled.)

    Args:
        paths: aligned face crops (any image format).
        size: side of the returned images (crops of another size are resized).
        degradation: preset name, mapping or config; its scale must be 1.
        augment: augmentation parameters (see :mod:`gpen_fewshot.data.augment`).
        seed: base seed.
        length: nominal length (samples per epoch); keys beyond it are valid (see :class:`EpochKeySampler`).
        name: the ``"degradation"`` entry of the samples; None = the preset name or the config's kind.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int,
        degradation: DegradationSpec,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        length: int = 1000,
        name: str | None = None,
    ) -> None:
        if not paths:
            raise ValueError("TrainPairDataset needs at least one crop")
        self.paths = [str(p) for p in paths]
        self.degradation = _build_same_size(degradation)
        self.name = name or _degradation_name(degradation)
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed, self.length = int(seed), int(length)
        self._load = _CropLoader(size)
        self._order: tuple[int, np.ndarray] | None = None  # (pass, permutation) of the last pass asked for

    def __len__(self) -> int:
        return self.length

    def crop_index(self, key: int) -> int:
        """The index into ``paths`` of sample ``key`` (a permutation per pass of ``len(paths)`` keys)."""
        pass_index, position = divmod(int(key), len(self.paths))
        if self._order is None or self._order[0] != pass_index:
            order = sample_rng(self.seed, _ORDER_STREAM, pass_index).permutation(len(self.paths))
            self._order = (pass_index, order)
        return int(self._order[1][position])

    def __getitem__(self, key: int) -> dict[str, Any]:
        path = self.paths[self.crop_index(key)]
        rng = sample_rng(self.seed, _TRAIN_STREAM, key)
        clean = augment_face(to_float(self._load(path)), rng, self.augment)
        return _pair_sample(self.degradation.pair(clean, rng), path, self.name)


class FixedPairDataset(Dataset):
    """Fixed validation pairs: ``copies`` degradations of each crop per named degradation; no augmentation.

    Item ``i`` is (crop, degradation, copy) in row-major order (the order of the evaluation protocol). Each
    is made by the protocol's own functions: rng ``protocol.sample_rng(seed, key, name, copy)`` where
    ``key`` is the sha256 of the crop's source photo, then ``protocol.degrade`` (uint8 in, uint8 out), so a
    preset's pairs are bit-identical to ``evaluate.py``'s inputs for the same photo, seed and preset name.

    Args:
        paths: aligned crops.
        size: side of the returned images (crops of another size are resized first).
        degradations: preset names, or a name -> spec mapping (the name seeds the draws).
        copies: draws per crop and degradation.
        seed: base seed (the evaluation protocol's ``seed``).
        keys: per crop, the sha256 of its source photo (as in the person's manifest); None (or a None
            entry) = the sha256 of the crop file itself.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int,
        degradations: Sequence[str] | Mapping[str, Any],
        copies: int = 1,
        seed: int = 0,
        keys: Sequence[str | None] | None = None,
    ) -> None:
        if not paths or not degradations or copies < 1:
            raise ValueError("FixedPairDataset needs crops, at least one degradation and copies >= 1")
        if keys is not None and len(keys) != len(paths):
            raise ValueError(f"FixedPairDataset got {len(keys)} keys for {len(paths)} crops")
        self.paths = [str(p) for p in paths]
        self.keys = [key or sha256_file(path) for key, path in zip(keys or [None] * len(paths), self.paths,
                                                                   strict=True)]
        specs = degradations if isinstance(degradations, Mapping) else {name: name for name in degradations}
        self.names = list(specs)
        self.degradations = [_build_same_size(specs[name]) for name in self.names]
        self.copies, self.seed = int(copies), int(seed)
        self._load = _CropLoader(size)

    def __len__(self) -> int:
        return len(self.paths) * len(self.names) * self.copies

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} validation samples")
        path_idx, rest = divmod(index, len(self.names) * self.copies)
        deg_idx, copy = divmod(rest, self.copies)
        path, name = self.paths[path_idx], self.names[deg_idx]
        rng = protocol_rng(self.seed, self.keys[path_idx], name, copy)
        return _pair_sample(protocol_degrade(self._load(path), self.degradations[deg_idx], rng), path, name)


class EpochKeySampler(Sampler[int]):
    """Yields the sample keys ``epoch * length + i`` for ``i < length``; Lightning calls ``set_epoch``."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch = int(length), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.length
        return iter(range(start, start + self.length))

    def __len__(self) -> int:
        return self.length


class CropsDataModule(pl.LightningDataModule):
    """Training and validation pairs from explicit lists of aligned crops (the base of the other datamodules).

    Args:
        train_crops: crops for training (uint8 images on disk, any format; resized to ``size`` if needed).
        val_crops: held-out crops for validation; empty -> validation uses the training crops (warned).
        size: side of the images in a batch.
        degradation: training degradation: preset name, mapping with ``kind`` (e.g. from Hydra) or config.
        batch_size: training batch size (the last incomplete batch of an epoch is dropped).
        num_workers: DataLoader worker processes (0 = in the main process).
        seed: base seed of the training samples.
        samples_per_epoch: training samples per epoch (must be >= ``batch_size``).
        val_degradations: preset names (or a name -> spec mapping) used to build the validation set.
        val_copies: degradations per held-out crop and preset.
        val_seed: seed of the validation set (kept apart from ``seed`` so runs with different seeds compare).
        val_batch_size: validation batch size; None = ``batch_size``.
        augment: augmentation parameters (AugmentConfig, mapping, None = defaults, False = none).
        pin_memory: DataLoader ``pin_memory`` (useful on GPU).
    """

    # Whether the crops are one person's photos, with a ``prepared`` PreparedPerson: a training run on such
    # data exports and registers a person (gpen_fewshot.training.run); other data exports a plain model.
    holds_one_person: ClassVar[bool] = False

    def __init__(
        self,
        train_crops: Sequence[str | Path] = (),
        val_crops: Sequence[str | Path] = (),
        size: int = 256,
        degradation: DegradationSpec = "moderate",
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        samples_per_epoch: int = 1000,
        val_degradations: Sequence[str] | Mapping[str, Any] = ("moderate",),
        val_copies: int = 2,
        val_seed: int = 0,
        val_batch_size: int | None = None,
        augment: AugmentConfig | Mapping[str, Any] | bool | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if samples_per_epoch < batch_size:
            raise ValueError(f"samples_per_epoch ({samples_per_epoch}) must be >= batch_size ({batch_size})")
        self.train_crops = [Path(p) for p in train_crops]
        self.val_crops = [Path(p) for p in val_crops]
        self.size, self.batch_size, self.num_workers = int(size), int(batch_size), int(num_workers)
        self.seed, self.samples_per_epoch = int(seed), int(samples_per_epoch)
        self.degradation = resolve_config(degradation)
        self.degradation_name = _degradation_name(degradation)
        self.val_degradations = (
            val_degradations if isinstance(val_degradations, Mapping) else list(val_degradations)
        )
        self.val_copies, self.val_seed = int(val_copies), int(val_seed)
        self.val_batch_size = int(val_batch_size) if val_batch_size else self.batch_size
        self.augment = _resolve_augment(augment)
        self.pin_memory = pin_memory
        _build_same_size(self.degradation)  # fail at construction, not in a worker
        self.train_set: TrainPairDataset | None = None
        self.val_set: FixedPairDataset | None = None

    def resolve_crops(self) -> tuple[list[Path], list[Path]]:
        """(train crops, validation crops); subclasses prepare them from photos."""
        return self.train_crops, self.val_crops

    def source_keys(self, crops: Sequence[Path]) -> list[str | None] | None:
        """Per crop, the sha256 of its source photo (validation seeds); None = unknown (the crop's own)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (idempotent)."""
        if self.train_set is not None:
            return
        train, val = self.resolve_crops()
        if not train:
            raise ValueError(f"{type(self).__name__}: no training crops")
        if not val:
            rank_zero_warn("no held-out crops: validation uses the training crops")
            val = train
        self.train_set = TrainPairDataset(
            train,
            self.size,
            self.degradation,
            self.augment,
            self.seed,
            self.samples_per_epoch,
            name=self.degradation_name,
        )
        self.val_set = FixedPairDataset(val, self.size, self.val_degradations, self.val_copies, self.val_seed,
                                        keys=self.source_keys(val))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(
            self.train_set, self.batch_size, sampler=EpochKeySampler(self.samples_per_epoch), drop_last=True
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, self.val_batch_size, sampler=None, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool
    ) -> DataLoader:
        # No worker_init_fn: randomness is per sample (module docstring), torch already runs one thread per
        # worker, and cv2.setNumThreads in a forked worker can deadlock on the parent's OpenCV thread pool.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )


class PersonDataModule(CropsDataModule):
    """Few-shot data for one person: aligned crops of their photos (``prepare_person``), some held out.

    Args:
        person_dir: folder with the person's photos.
        size: crop side (256 or 512 for the released GPEN models).
        template: alignment template, ``"gpen"`` or ``"ffhq"``.
        holdout: passed to ``prepare_person``: photos held out for validation (count or fraction); None = its
            default (1 when >= 4 usable photos).
        min_photos: passed to ``prepare_person``.
        cache_dir: passed to ``prepare_person`` (where prepared crops are cached); None = its default.
        **kwargs: the :class:`CropsDataModule` arguments (degradation, batch_size, num_workers, seed, ...).
    """

    holds_one_person: ClassVar[bool] = True

    def __init__(
        self,
        person_dir: str | Path,
        size: int = 256,
        template: str = "gpen",
        holdout: int | float | None = None,
        min_photos: int = 3,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(size=size, **kwargs)
        self.person_dir, self.template = Path(person_dir), template
        self.holdout, self.min_photos, self.cache_dir = holdout, min_photos, cache_dir
        self._prepared: Any = None

    def prepare_data(self) -> None:
        """Detect, align and cache the crops once (rank 0); ``setup`` then reads the cache."""
        self._prepared = self._prepare()

    @property
    def prepared(self) -> Any:
        """The ``PreparedPerson`` (crops, manifest records), prepared or read from the cache on first use."""
        if self._prepared is None:
            self._prepared = self._prepare()
        return self._prepared

    def resolve_crops(self) -> tuple[list[Path], list[Path]]:
        self._prepared = self._prepare()  # again: another process (DDP rank) or a changed folder
        return list(self._prepared.train_crops), list(self._prepared.holdout_crops)

    def source_keys(self, crops: Sequence[Path]) -> list[str | None]:
        """The manifest's sha256 of each crop's source photo: the key ``evaluate.py`` seeds the photo with."""
        prepared = self.prepared
        by_crop = {str(prepared.root / r.crop): r.sha256 for r in prepared.records if r.crop}
        return [by_crop.get(str(crop)) for crop in crops]

    def _prepare(self) -> Any:

        options: dict[str, Any] = {"min_photos": self.min_photos}
        if self.holdout is not None:
            options["holdout"] = self.holdout
        if self.cache_dir is not None:
            options["cache_dir"] = self.cache_dir
        return prepare_person(self.person_dir, size=self.size, template=self.template, **options)


class FacesFolderDataModule(CropsDataModule):
    """Many-face data for pretraining a prior: the largest face of every photo in one or more folders.

    ``val_count`` crops are held out: those whose file names hash lowest, so the split is stable when photos
    are added and independent of the seeds.

    Args:
        faces_dir: folder of photos, or a list of folders (each prepared and cached on its own).
        size: crop side.
        template: alignment template.
        val_count: number of crops held out for validation.
        cache_dir: passed to ``prepare_faces_folder``; None = its default. With several folders, each one
            is cached in ``<cache_dir>/<folder name>``.
        train_only_dirs: folders whose crops are trained on and never held out (e.g. a few hundred crisp
            photos that teach a prior that fine detail is content), so adding them leaves the held-out
            split of ``faces_dir`` unchanged.
        train_only_repeat: how many times each train-only crop is listed: its sampling weight against
            the ``faces_dir`` crops (the training draws are uniform over the list).
        **kwargs: the :class:`CropsDataModule` arguments.
    """

    def __init__(
        self,
        faces_dir: str | Path | Sequence[str | Path],
        size: int = 256,
        template: str = "gpen",
        val_count: int = 16,
        cache_dir: str | Path | None = None,
        train_only_dirs: Sequence[str | Path] = (),
        train_only_repeat: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(size=size, **kwargs)
        several = isinstance(faces_dir, (list, tuple))
        self.faces_dirs = [Path(d) for d in faces_dir] if several else [Path(faces_dir)]
        self.train_only_dirs = [Path(d) for d in train_only_dirs]
        if train_only_repeat < 1:
            raise ValueError(f"train_only_repeat must be >= 1, got {train_only_repeat}")
        self.train_only_repeat = train_only_repeat
        # one folder keeps its historical cache layout; any more (train-only ones too) get a subfolder each
        self._cache_per_folder = several or bool(self.train_only_dirs)
        self.template, self.val_count, self.cache_dir = (
            template,
            val_count,
            cache_dir,
        )

    def prepare_data(self) -> None:
        self._prepare(self.faces_dirs + self.train_only_dirs)

    def resolve_crops(self) -> tuple[list[Path], list[Path]]:
        train, val = split_holdout(self._prepare(self.faces_dirs), self.val_count)
        extra = self._prepare(self.train_only_dirs)
        return train + extra * self.train_only_repeat, val

    def _prepare(self, folders: Sequence[Path]) -> list[Path]:
        crops: list[Path] = []
        for folder in folders:
            options = {}
            if self.cache_dir is not None:
                root = Path(self.cache_dir)
                options["cache_dir"] = root / folder.name if self._cache_per_folder else root
            crops += prepare_faces_folder(folder, size=self.size, template=self.template, **options)
        return crops


def split_holdout(crops: Sequence[Path], val_count: int) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, val) split: the ``val_count`` crops whose names hash lowest are held out.

    Raises:
        ValueError: fewer than ``val_count + 1`` crops.
    """
    if val_count < 0 or len(crops) <= val_count:
        raise ValueError(
            f"cannot hold out {val_count} of {len(crops)} crops (at least one must remain for training)"
        )
    ranked = sorted(crops, key=lambda p: (_name_key(Path(p).name), str(p)))
    held = set(map(str, ranked[:val_count]))
    return [Path(p) for p in crops if str(p) not in held], [Path(p) for p in crops if str(p) in held]
