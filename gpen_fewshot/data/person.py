"""Prepare one person's photos for few-shot training: aligned crops, a manifest, a contact sheet.

``prepare_person(person_dir)`` gives every photo one decision (see ``photo_vetting``), writes the aligned
crops of the usable ones under ``<cache_dir>/<size>_<template>/{train,holdout}/``, a ``manifest.json`` and a
``contact_sheet.png``. The default ``cache_dir`` is ``<person_dir>/.prepared`` (or, when the person's folder
is read-only, ``~/.cache/gpen_fewshot/prepared/<name>-<hash of its path>``). A rerun with the same files
(by sha256) and settings reads the manifest and writes nothing.

Holdout: ``holdout=None`` holds out 1 photo when at least 4 are usable (so at least 3 remain for training),
else none; an int is a count, a float in (0, 1) a fraction (at least 1). The held-out photos are the usable
ones with the lowest sha256: deterministic and independent of file names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpen_fewshot.data.contact_sheet import person_contact_sheet
from gpen_fewshot.data.faces_folder import default_prepared_root, prepare_faces_folder
from gpen_fewshot.data.photo_vetting import (
    Photo,
    PhotoRecord,
    VettingSettings,
    annotate_identity,
    choose_faces,
    embed_candidates,
    load_photo,
    mark_near_duplicates,
    measure_and_filter,
    sha256_bytes,
    to_record,
)
from gpen_fewshot.faces.alignment import TEMPLATES
from gpen_fewshot.faces.detection import FaceDetector, resolve_model
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD, IdentityEmbedder
from gpen_fewshot.persons import validate_person_name
from gpen_fewshot.utils.atomic import atomic_write_json
from gpen_fewshot.utils.image import write_image

__all__ = [
    "NotEnoughPhotosError",
    "PhotoRecord",
    "PreparedPerson",
    "prepare_faces_folder",
    "prepare_person",
]

PREPARE_VERSION = 3  # bump when decisions or crops would change for the same inputs and settings
# (3: photos over photo_vetting.MAX_PHOTO_PIXELS are downscaled before detection)


class NotEnoughPhotosError(ValueError):
    """Fewer usable photos than required; the message lists every photo's decision and reason.

    Attributes:
        records: the PhotoRecord of every photo.
        root: the prepared folder (its manifest.json and contact_sheet.png are written before raising).
    """

    def __init__(self, summary: str, records: Sequence[PhotoRecord] = (), root: Path | None = None) -> None:
        lines = [f"  {r.file}: {r.decision} - {r.reason}" for r in records] or ["  (the folder has no files)"]
        super().__init__(f"{summary}. Per photo:\n" + "\n".join(lines))
        self.summary = summary
        self.records = tuple(records)
        self.root = root


@dataclass(frozen=True)
class PreparedPerson:
    """Result of :func:`prepare_person` (crops are uint8 RGB PNGs of side ``size``)."""

    name: str
    root: Path
    manifest_path: Path
    contact_sheet: Path
    train_crops: list[Path]
    holdout_crops: list[Path]
    records: tuple[PhotoRecord, ...]
    from_cache: bool


def _list_photos(person_dir: Path) -> list[Path]:
    """Every visible regular file (non-images are reported as unreadable rather than silently skipped)."""
    return sorted(p for p in person_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def _check_settings(size: int, template: str, holdout: int | float | None, min_photos: int) -> None:
    """Fail before any work on settings that cannot work."""

    if not isinstance(size, int) or size < 32:
        raise ValueError(f"crop size must be an integer >= 32, got {size!r}")
    if template not in TEMPLATES:
        raise ValueError(f"unknown face template {template!r}; choose one of {sorted(TEMPLATES)}")
    if min_photos < 1:
        raise ValueError(f"min_photos must be >= 1, got {min_photos}")
    _holdout_count(holdout, 0)


def _holdout_count(holdout: int | float | None, usable: int) -> int:
    if holdout is None:
        return 1 if usable >= 4 else 0
    if isinstance(holdout, bool) or holdout < 0:
        raise ValueError(f"holdout must be a count >= 0 or a fraction in (0, 1), got {holdout!r}")
    if isinstance(holdout, float) and not float(holdout).is_integer():
        if holdout >= 1:
            raise ValueError(f"holdout fraction must be < 1, got {holdout}")
        return max(1, round(holdout * usable))
    return int(holdout)


def prepare_person(
    person_dir: str | os.PathLike,
    size: int = 256,
    template: str = "gpen",
    cache_dir: str | os.PathLike | None = None,
    holdout: int | float | None = None,
    min_photos: int = 3,
    *,
    detector: str = "auto",
    conf_threshold: float = 0.8,
    min_face_scale: float = VettingSettings.min_face_scale,
    min_sharpness: float = VettingSettings.min_sharpness,
    duplicate_threshold: float = VettingSettings.duplicate_threshold,
    use_identity: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> PreparedPerson:
    """Detect, align and vet one person's photos; write crops, manifest.json and contact_sheet.png.

    Args:
        person_dir: folder of the person's photos (its name must pass :func:`validate_person_name`).
        size: crop side in pixels (256, 512, 1024).
        template: alignment template, "gpen" (released GPEN models) or "ffhq".
        cache_dir: root of the prepared outputs, which go to ``<cache_dir>/<size>_<template>/``;
            None = ``<person_dir>/.prepared`` (or the user cache when the folder is read-only).
        holdout: photos held out for validation: None (1 when >= 4 usable), a count or a fraction.
        min_photos: fewest usable photos (train + holdout) accepted.
        detector: "auto", "resnet50" or "mobilenet0.25".
        conf_threshold: face detector score threshold.
        min_face_scale: reject faces whose eye distance is below this fraction of the template's.
        min_sharpness: reject faces whose Laplacian variance (quality.sharpness) is below this.
        duplicate_threshold: aligned faces whose registered detail correlates at least this much with a
            larger copy are duplicates (quality.same_picture_score).
        use_identity: compare identity embeddings to pick the person in group photos.
        progress: called as ``progress(index, total, file_name)`` before each photo is processed.

    Returns:
        PreparedPerson (``from_cache`` tells whether the manifest was reused untouched).

    Raises:
        FileNotFoundError: ``person_dir`` is not a folder.
        ValueError: invalid person name or settings.
        NotEnoughPhotosError: fewer than ``min_photos`` usable photos, or a holdout leaving none to train on.
    """
    person_dir = Path(person_dir)
    if not person_dir.is_dir():
        raise FileNotFoundError(f"{person_dir}: not a folder of photos")
    name = validate_person_name(person_dir.resolve().name)
    _check_settings(size, template, holdout, min_photos)
    settings = VettingSettings(size=int(size), template=template, min_face_scale=float(min_face_scale),
                               min_sharpness=float(min_sharpness),
                               duplicate_threshold=float(duplicate_threshold),
                               use_identity=bool(use_identity))
    model = resolve_model(detector)
    root = (Path(cache_dir if cache_dir is not None else default_prepared_root(person_dir, name))
            / f"{size}_{template}")
    files = _list_photos(person_dir)
    key = _cache_key(settings, model, conf_threshold, holdout, files)
    cached = _load_cached(root, key, name)
    if cached is not None:
        _check_enough(cached.records, min_photos, holdout, name, root)
        return cached
    det = FaceDetector(model, conf_threshold=conf_threshold)
    photos = _vet(files, det, settings, progress)
    records = _write_outputs(root, name, person_dir, photos, holdout, min_photos, settings, key)
    result = _result(name, root, records, from_cache=False)
    _check_enough(records, min_photos, holdout, name, root)
    return result


def _file_sha(path: Path) -> str | None:
    try:
        return sha256_bytes(path.read_bytes())
    except OSError:
        return None


def _cache_key(settings: VettingSettings, model: str, conf: float, holdout: object,
               files: list[Path]) -> dict:
    return {
        "version": PREPARE_VERSION,
        "settings": {**dataclasses.asdict(settings), "detector": model, "conf_threshold": float(conf),
                     "holdout": holdout},
        "files": [[p.name, _file_sha(p)] for p in files],
    }


def _vet(files: list[Path], det: FaceDetector, settings: VettingSettings,
         progress: Callable[[int, int, str], None] | None) -> list[Photo]:
    seen: dict[str, str] = {}
    photos = []
    for index, path in enumerate(files):
        if progress is not None:
            progress(index, len(files), path.name)
        photos.append(load_photo(path, det, settings, seen))
    threshold = _same_person_threshold()
    embed, note = _identity_embed(settings.use_identity and any(p.active for p in photos), settings.template)
    if embed is not None:
        embed_candidates(photos, embed)
    choose_faces(photos, threshold)
    if note:
        for photo in photos:
            if len(photo.faces) > 1:
                photo.notes.append(note)
    measure_and_filter(photos, settings)
    mark_near_duplicates(photos, settings.duplicate_threshold)
    annotate_identity(photos, threshold)
    return photos


def _same_person_threshold() -> float:
    return float(SAME_PERSON_THRESHOLD)


def _identity_embed(wanted: bool, template: str) -> tuple[Callable | None, str]:
    """The identity embedder's ``embed`` (None when off or unavailable, with a note saying why)."""
    if not wanted:
        return None, ""
    try:
        return IdentityEmbedder(template=template).load().embed, ""
    except Exception as err:  # missing dlib/models must not stop preparation; the notes say so
        return None, f"identity embedder unavailable ({type(err).__name__}: {err})"


def _assign_splits(photos: Sequence[Photo], holdout: int | float | None, min_photos: int) -> dict[int, str]:
    """id(photo) -> "train"/"holdout" for used photos (empty when there are too few to train on)."""
    used = sorted((p for p in photos if p.active), key=lambda p: p.sha256)
    count = _holdout_count(holdout, len(used))
    if len(used) < min_photos or count >= len(used):
        return {}
    return {id(p): ("holdout" if i < count else "train") for i, p in enumerate(used)}


def _write_outputs(root: Path, name: str, person_dir: Path, photos: list[Photo], holdout: int | float | None,
                   min_photos: int, settings: VettingSettings, key: dict) -> tuple[PhotoRecord, ...]:
    """Crops (stale ones removed), contact sheet, then the manifest last (it marks the folder complete)."""
    splits = _assign_splits(photos, holdout, min_photos)
    records, wanted = [], set()
    for photo in photos:
        split = splits.get(id(photo))
        crop_rel = None
        if split is not None:
            crop_rel = f"{split}/{photo.path.stem}_{photo.sha256[:8]}.png"
            write_image(root / crop_rel, photo.crop.crop)
            wanted.add(crop_rel)
        records.append(to_record(photo, split, crop_rel))
    for sub in ("train", "holdout"):
        for stale in (root / sub).glob("*.png") if (root / sub).is_dir() else ():
            if f"{sub}/{stale.name}" not in wanted:
                stale.unlink()
    write_image(root / "contact_sheet.png",
                person_contact_sheet(photos, records, name, settings.size, settings.template))
    atomic_write_json(root / "manifest.json", {
        "cache_key": key, "settings": key["settings"], "person_dir": str(person_dir),
        "photos": [r.to_dict() for r in records],
    })
    return tuple(records)


def _result(name: str, root: Path, records: Sequence[PhotoRecord], from_cache: bool) -> PreparedPerson:
    return PreparedPerson(
        name=name, root=root, manifest_path=root / "manifest.json", contact_sheet=root / "contact_sheet.png",
        train_crops=[root / r.crop for r in records if r.split == "train"],
        holdout_crops=[root / r.crop for r in records if r.split == "holdout"],
        records=tuple(records), from_cache=from_cache,
    )


def _load_cached(root: Path, key: dict, name: str) -> PreparedPerson | None:
    """The prepared folder if its manifest matches ``key`` and every crop is on disk, else None."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("cache_key") != json.loads(json.dumps(key)):  # compare in JSON form (tuples -> lists)
            return None
        records = tuple(PhotoRecord.from_dict(r) for r in manifest["photos"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (root / "contact_sheet.png").is_file() or any(r.crop and not (root / r.crop).is_file()
                                                         for r in records):
        return None
    return _result(name, root, records, from_cache=True)


def _check_enough(records: Sequence[PhotoRecord], min_photos: int, holdout: int | float | None, name: str,
                  root: Path) -> None:
    used = [r for r in records if r.decision == "used"]
    count = _holdout_count(holdout, len(used))
    if len(used) >= min_photos and count < len(used):
        return
    if len(used) < min_photos:
        problem = f"only {len(used)} usable photo(s) of {len(records)}, need at least {min_photos}"
    else:
        problem = f"cannot hold out {count} of {len(used)} usable photos (none would be left for training)"
    raise NotEnoughPhotosError(f"person {name!r}: {problem}", records, root)
