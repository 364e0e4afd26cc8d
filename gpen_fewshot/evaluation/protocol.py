"""The evaluation protocol: which photos, aligned how, degraded how. Every model sees identical inputs.

- **Person set**: the person's held-out photos (``PreparedPerson.holdout_crops``, never trained on), aligned
  exactly as for training (same size and template as the evaluated model: crops are prepared per size).
- **Others set** (specificity): photos of other people, aligned the same way. A personalised model must not
  pull them towards the person: their restorations are compared with *their own* ground truth.
- **Degradations**: the named presets (``mild`` / ``moderate`` / ``severe``), ``copies`` (K) draws per photo
  and level. The random generator of draw k is seeded by ``(seed, sha256 of the source photo, level, k)``:
  inputs do not depend on file names, on the order of photos, on the model or on the run, and the same photo
  gets the same degradation draw at 256 and at 512 px. Low-quality inputs are quantised to uint8 like a real
  photo (and so can be cached as PNG losslessly).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpen_fewshot.data.degradations import Degradation, build_degradation, get_preset
from gpen_fewshot.data.draws import ProtocolError, degrade, sample_rng
from gpen_fewshot.data.faces_folder import prepare_faces_folder
from gpen_fewshot.data.person import prepare_person
from gpen_fewshot.utils.hashing import sha256_file
from gpen_fewshot.utils.image import list_images, read_image, write_image

PERSON_SET = "person"
OTHERS_SET = "others"


@dataclass(frozen=True)
class ProtocolConfig:
    """Fixed degradation protocol.

    Attributes:
        levels: degradation preset names, in report order.
        copies: degradation draws (K) per photo and level.
        seed: base seed of every draw.
    """

    levels: tuple[str, ...] = ("mild", "moderate", "severe")
    copies: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct preset names, got {list(self.levels)}")
        for level in self.levels:
            try:
                get_preset(level)
            except KeyError as err:  # its message lists the known presets
                raise ProtocolError(f"protocol.levels: {err.args[0]}") from None
        if self.copies < 1:
            raise ValueError(f"copies must be >= 1, got {self.copies}")


@dataclass(frozen=True)
class EvalPhoto:
    """One aligned ground-truth crop.

    Attributes:
        photo_id: unique id within its set (``<group>/<crop stem>``).
        group: whose face it is (the person's name, or the other person's folder name).
        crop_path: the aligned uint8 RGB crop on disk (may be temporary; the pixels are read at build time).
        key: sha256 of the source photo's bytes: the seed key of its degradations.
    """

    photo_id: str
    group: str
    crop_path: Path
    key: str


@dataclass(frozen=True)
class EvalSample:
    """One degraded input: photo ``photo_id`` at ``level``, draw ``copy``."""

    photo_id: str
    group: str
    level: str
    copy: int


@dataclass
class EvalSet:
    """Inputs of one set at one crop size: samples in (photo, level, copy) order.

    Attributes:
        name: ``"person"`` or ``"others"``.
        size: crop side in pixels.
        template: alignment template of the crops.
        samples: one entry per degraded input.
        lq: uint8 RGB (size, size, 3) degraded inputs, aligned with ``samples``.
        gt: uint8 RGB (size, size, 3) ground truths, aligned with ``samples`` (shared arrays per photo).
    """

    name: str
    size: int
    template: str
    samples: list[EvalSample]
    lq: list[np.ndarray]
    gt: list[np.ndarray]
    photo_ids: list[str] = field(default_factory=list)

    def indices(self, level: str) -> list[int]:
        """Sample indices at ``level`` (in photo, copy order)."""
        return [i for i, s in enumerate(self.samples) if s.level == level]


def _same_size_degradation(level: str) -> Degradation:
    degradation = build_degradation(get_preset(level))
    if degradation.scale != 1:
        raise ProtocolError(f"degradation preset {level!r} has scale {degradation.scale}; the evaluation "
                            "needs inputs of the model's size (scale 1)")
    return degradation


def read_crop(path: Path, size: int) -> np.ndarray:
    """An aligned crop, uint8 RGB (size, size, 3); ProtocolError when it has another size."""
    crop = read_image(path)
    if crop.shape[:2] != (size, size):
        raise ProtocolError(f"{path}: crop is {crop.shape[1]}x{crop.shape[0]}, expected {size}x{size}")
    return crop


def build_eval_set(name: str, photos: Sequence[EvalPhoto], size: int, template: str,
                   protocol: ProtocolConfig) -> EvalSet:
    """Degrade every photo at every level, ``protocol.copies`` times (deterministic, see module docstring).

    Args:
        name: set name (``"person"`` / ``"others"``).
        photos: the ground-truth crops (uint8 RGB PNGs of side ``size``).
        size: crop side in pixels.
        template: alignment template the crops were made with.
        protocol: levels, copies and seed.

    Raises:
        ProtocolError: no photos, or a crop of the wrong size.
    """
    if not photos:
        raise ProtocolError(f"the {name} evaluation set has no photos")
    degradations = {level: _same_size_degradation(level) for level in protocol.levels}
    samples, lq_images, gt_images = [], [], []
    for photo in photos:
        clean = read_crop(photo.crop_path, size)
        for level in protocol.levels:
            for copy in range(protocol.copies):
                rng = sample_rng(protocol.seed, photo.key, level, copy)
                gt, lq = degrade(clean, degradations[level], rng)
                samples.append(EvalSample(photo.photo_id, photo.group, level, copy))
                lq_images.append(lq)
                gt_images.append(gt)
    return EvalSet(name, size, template, samples, lq_images, gt_images, [p.photo_id for p in photos])


def save_inputs(eval_set: EvalSet, folder: str | os.PathLike) -> Path:
    """Write the inputs and ground truths as PNGs:
    ``<folder>/<set>_<size>/<level>/<photo_id>_k<copy>_{lq,gt}.png``.

    Returns:
        The set's folder.
    """
    root = Path(folder) / f"{eval_set.name}_{eval_set.size}"
    for sample, lq, gt in zip(eval_set.samples, eval_set.lq, eval_set.gt, strict=True):
        stem = root / sample.level / f"{sample.photo_id}_k{sample.copy}"
        write_image(stem.parent / f"{stem.name}_lq.png", lq)
        write_image(stem.parent / f"{stem.name}_gt.png", gt)
    return root


# ------------------------------------------------------------------------------------------- the person
@dataclass(frozen=True)
class PersonPhotos:
    """The person's prepared photos at one size: held-out photos (evaluated) and training crops
    (reference)."""

    name: str
    holdout: list[EvalPhoto]
    train_crops: list[Path]


def person_photos(person_dir: str | os.PathLike, size: int, template: str, holdout: int | float | None = None,
                  min_photos: int = 3, cache_dir: str | os.PathLike | None = None) -> PersonPhotos:
    """Prepare (or read the cached) aligned crops of the person, exactly as training does.

    Args:
        person_dir: the person's photo folder.
        size: crop side (the evaluated model's size).
        template: alignment template (the model's).
        holdout, min_photos, cache_dir: as given to training (``prepare_person``); they decide which photos
            are held out, so they must match the training run's.

    Raises:
        ProtocolError: no photo is held out (all were trained on).
    """

    options: dict = {"min_photos": int(min_photos)}
    if holdout is not None:
        options["holdout"] = holdout
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    prepared = prepare_person(person_dir, size=int(size), template=template, **options)
    records = [r for r in prepared.records if r.split == "holdout" and r.crop]
    if not records:
        used = sum(r.split is not None for r in prepared.records)
        raise ProtocolError(
            f"person {prepared.name!r} ({person_dir}): no held-out photo to evaluate on ({used} usable "
            f"photo(s), holdout={holdout!r}; one photo is held out by default only when at least 4 are "
            "usable). Add photos, or train and evaluate with data.holdout=1 / holdout=1")
    photos = [EvalPhoto(f"{prepared.name}/{Path(r.crop).stem}", prepared.name, prepared.root / r.crop,
                        r.sha256 or sha256_file(prepared.root / r.crop)) for r in records]
    return PersonPhotos(prepared.name, photos, list(prepared.train_crops))


# --------------------------------------------------------------------------------------- other people
def find_other_groups(paths: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = (),
                      max_persons: int | None = None) -> list[tuple[str, list[Path]]]:
    """Groups of other people's photos: ``(name, photo files)``.

    A folder holding images is one group (a person folder, or a folder of faces of anyone). A folder holding
    only sub-folders (a persons directory) gives one group per sub-folder with images, the first
    ``max_persons`` in sorted order. Folders in ``exclude`` (the evaluated person) are skipped.

    Raises:
        ProtocolError: a path is not a folder, or holds neither images nor folders of images.
    """
    excluded = {Path(p).resolve() for p in exclude}
    groups: list[tuple[str, list[Path]]] = []
    for entry in paths:
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise ProtocolError(f"others: {folder} is not a folder (give person folders or a folder of them)")
        images = list_images(folder)
        if images:
            if folder.resolve() not in excluded:
                groups.append((folder.name, images))
            continue
        subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")
                and d.resolve() not in excluded and list_images(d)]
        if not subs:
            raise ProtocolError(f"others: {folder} holds no images and no folders of images")
        groups.extend((d.name, list_images(d)) for d in subs[:max_persons])
    names: dict[str, int] = {}
    unique = []
    for name, files in groups:  # two folders with the same name stay apart
        names[name] = names.get(name, 0) + 1
        unique.append((name if names[name] == 1 else f"{name}~{names[name]}", files))
    return unique


def other_photos(groups: Sequence[tuple[str, Sequence[Path]]], size: int, template: str, work_dir: Path,
                 max_photos: int | None = None) -> list[EvalPhoto]:
    """Align the largest face of the first ``max_photos`` photos (sorted names) of every group.

    The chosen photos are copied into ``work_dir`` and prepared there (``prepare_faces_folder``), so shared
    read-only folders are never written to and large folders are not processed whole.
    """

    photos: list[EvalPhoto] = []
    for name, files in groups:
        chosen = sorted(files, key=lambda p: p.name)[:max_photos]
        folder = work_dir / "photos" / name
        folder.mkdir(parents=True, exist_ok=True)
        keys = {}
        for path in chosen:
            shutil.copy2(path, folder / path.name)
            keys[path.stem] = sha256_file(path)
        crops = prepare_faces_folder(folder, size=size, template=template,
                                     cache_dir=work_dir / "prepared" / name, progress=False)
        for crop in crops:
            source_stem = crop.stem.rsplit("_", 1)[0]  # crops are named <source stem>_<digest>.png
            photos.append(EvalPhoto(f"{name}/{crop.stem}", name, crop,
                                    keys.get(source_stem) or sha256_file(crop)))
    if not photos:
        raise ProtocolError(f"others: no face found in the photos of {[name for name, _ in groups]}")
    return photos


def build_others_set(groups: Sequence[tuple[str, Sequence[Path]]], size: int, template: str,
                     protocol: ProtocolConfig, max_photos: int | None = None) -> EvalSet:
    """The specificity set at one size (prepared in a temporary folder, read into memory)."""
    with tempfile.TemporaryDirectory(prefix="gpen_eval_others_") as tmp:
        photos = other_photos(groups, size, template, Path(tmp), max_photos)
        return build_eval_set(OTHERS_SET, photos, size, template, protocol)
