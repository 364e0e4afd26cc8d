"""Aligned crops of the largest face of every photo in a (large) folder, for pretraining a face prior.

Unlike ``prepare_person`` this is built for thousands of photos of different people: failures are skipped
(and counted in the manifest), identities are not compared, and the cache is incremental: a photo is
processed again only when its bytes change (size + mtime first, then the recorded sha256), so adding photos
costs only the new ones and a copied or re-mounted folder keeps its crops.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from gpen_fewshot.faces.alignment import align_face, template_eye_distance
from gpen_fewshot.faces.detection import FaceDetector, resolve_model
from gpen_fewshot.faces.quality import sharpness
from gpen_fewshot.utils.atomic import atomic_write_json
from gpen_fewshot.utils.hashing import sha256_file
from gpen_fewshot.utils.image import ImageReadError, list_images, read_image, write_image

FOLDER_VERSION = 1
SAVE_EVERY = 200  # photos between manifest checkpoints (an interrupted run keeps its progress)


@dataclass(frozen=True)
class FolderSettings:
    """Settings that change the crops (part of the cache key)."""

    size: int
    template: str
    detector: str
    conf_threshold: float
    min_face_scale: float
    min_sharpness: float


def prepare_faces_folder(
    faces_dir: str | os.PathLike,
    size: int = 256,
    template: str = "gpen",
    cache_dir: str | os.PathLike | None = None,
    *,
    detector: str = "auto",
    conf_threshold: float = 0.8,
    min_face_scale: float = 0.5,
    min_sharpness: float = 0.0,
    num_workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Detect, align and cache the largest face of every image in ``faces_dir``.

    Args:
        faces_dir: folder of photos (not recursive).
        size: crop side in pixels.
        template: "gpen" or "ffhq".
        cache_dir: root of the outputs, which go to ``<cache_dir>/<size>_<template>/``; None =
            ``<faces_dir>/.prepared`` (or the user cache when the folder is read-only).
        detector: "auto", "resnet50" or "mobilenet0.25".
        conf_threshold: detector score threshold.
        min_face_scale: skip faces whose eye distance is below this fraction of the template's.
        min_sharpness: skip crops whose inner-face Laplacian variance is below this (0 = keep all).
        num_workers: worker processes (0 = in this process); each loads its own detector. Workers are
            spawned, so the calling script needs the usual ``if __name__ == "__main__":`` guard.
        progress: show a tqdm progress bar.

    Returns:
        Paths of the uint8 RGB PNG crops, sorted by source file name. Skipped photos (unreadable, no face,
        too small, blurred) are listed with their reason in the folder's manifest.json.
    """
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise FileNotFoundError(f"{faces_dir}: not a folder of photos")
    settings = FolderSettings(int(size), template, resolve_model(detector), float(conf_threshold),
                              float(min_face_scale), float(min_sharpness))
    root = (Path(cache_dir if cache_dir is not None else default_prepared_root(faces_dir))
            / f"{size}_{template}")
    manifest_path = root / "manifest.json"
    entries = _load_entries(manifest_path, settings)
    files = list_images(faces_dir)
    todo, refreshed = [], False
    for path in files:
        entry = _revalidate(entries.get(path.name), path, root)
        if entry is None:
            todo.append(path)
        elif entry is not entries[path.name]:
            entries[path.name], refreshed = entry, True
    names = {p.name for p in files}
    _remove_stale_crops(root, entries, keep=names - {p.name for p in todo})
    entries = {k: v for k, v in entries.items() if k in names}
    for done, entry in enumerate(_process_all(todo, root, settings, num_workers, progress), start=1):
        entries[entry["file"]] = entry
        if done % SAVE_EVERY == 0:
            _save(manifest_path, settings, entries)
    if todo or refreshed or not manifest_path.is_file():
        _save(manifest_path, settings, entries)
    return [root / entries[p.name]["crop"] for p in files if entries.get(p.name, {}).get("crop")]


def default_prepared_root(folder: Path, name: str | None = None) -> Path:
    """``<folder>/.prepared``, or ``~/.cache/gpen_fewshot/prepared/<name>-<hash of path>`` for a read-only
    folder.

    Read-only means no write permission bit at all or no write access: root passes ``os.access`` on any
    folder, but a folder marked r-x (shared data sets) must not be written into even then.
    """
    mode = folder.stat().st_mode
    if os.access(folder, os.W_OK) and mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return folder / ".prepared"
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "gpen_fewshot" / "prepared" / f"{name or folder.resolve().name}-{digest}"


def _remove_stale_crops(root: Path, entries: dict[str, dict], keep: set[str]) -> None:
    """Delete crop files not owned by a still-valid entry (changed/removed photos, changed settings)."""
    wanted = {entries[k]["crop"] for k in keep if entries.get(k, {}).get("crop")}
    crops = root / "crops"
    for path in crops.glob("*.png") if crops.is_dir() else ():
        if f"crops/{path.name}" not in wanted:
            path.unlink(missing_ok=True)


def _stat_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _revalidate(entry: dict | None, path: Path, root: Path) -> dict | None:
    """The photo's cached entry if it still holds, else None (the photo must be processed again).

    Size + mtime decide quickly; when they changed but the bytes did not (a copied or re-mounted folder:
    shared data sets get new mtimes on every mount), the sha256 recorded with the entry keeps the crop.
    Returns a new dict when the stored stat or checksum had to be refreshed, ``entry`` itself otherwise.
    """
    if entry is None or not (entry.get("crop") is None or (root / entry["crop"]).is_file()):
        return None
    stat = _stat_key(path)
    if entry.get("stat") == stat:
        return entry if entry.get("sha256") else {**entry, "sha256": sha256_file(path)}
    if entry.get("sha256") and entry["sha256"] == sha256_file(path):
        return {**entry, "stat": stat}
    return None


def _load_entries(manifest_path: Path, settings: FolderSettings) -> dict[str, dict]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if manifest.get("version") != FOLDER_VERSION or manifest.get("settings") != asdict(settings):
        return {}
    return {e["file"]: e for e in manifest.get("photos", []) if isinstance(e, dict) and "file" in e}


def _save(manifest_path: Path, settings: FolderSettings, entries: dict[str, dict]) -> None:
    photos = [entries[k] for k in sorted(entries)]
    skipped: dict[str, int] = {}
    for entry in photos:
        if entry.get("crop") is None:
            skipped[entry["decision"]] = skipped.get(entry["decision"], 0) + 1
    atomic_write_json(manifest_path, {"version": FOLDER_VERSION, "settings": asdict(settings),
                                      "used": len(photos) - sum(skipped.values()), "skipped": skipped,
                                      "photos": photos})


def _process_all(files: list[Path], root: Path, settings: FolderSettings, num_workers: int,
                 progress: bool) -> Iterator[dict]:
    if not files:
        return
    from tqdm import tqdm

    bar = tqdm(total=len(files), desc="aligning faces", unit="photo", disable=not progress or not files)
    try:
        if num_workers <= 0 or len(files) < 2:
            det = FaceDetector(settings.detector, conf_threshold=settings.conf_threshold)
            for path in files:
                yield _process_one(path, root, settings, det)
                bar.update()
            return
        # Build one detector here first: a worker whose initializer raises (missing weights) is restarted
        # by Pool forever, so errors must surface in this process.
        FaceDetector(settings.detector, conf_threshold=settings.conf_threshold)
        # spawn, not fork: forking a process that already runs torch's thread pools can deadlock.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(num_workers, initializer=_worker_init, initargs=(settings,)) as pool:
            for entry in pool.imap_unordered(_worker_run, [(p, root) for p in files], chunksize=4):
                yield entry
                bar.update()
    finally:
        bar.close()


_WORKER: dict[str, object] = {}


def _worker_init(settings: FolderSettings) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core is the parallelism
    _WORKER["settings"] = settings
    _WORKER["detector"] = FaceDetector(settings.detector, conf_threshold=settings.conf_threshold)


def _worker_run(args: tuple[Path, Path]) -> dict:
    path, root = args
    return _process_one(path, root, _WORKER["settings"], _WORKER["detector"])


def _process_one(path: Path, root: Path, settings: FolderSettings, det: FaceDetector) -> dict:
    """Largest face of one photo -> crop file; returns its manifest entry (crop None when skipped)."""
    entry: dict = {"file": path.name, "stat": _stat_key(path), "sha256": sha256_file(path), "crop": None}
    try:
        image = read_image(path)
    except ImageReadError as err:
        return {**entry, "decision": "unreadable", "reason": str(err)}
    faces = det.detect(image)
    if not faces:
        return {**entry, "decision": "no_face", "reason": "no face found"}
    face = faces[0]
    scale = face.eye_distance / template_eye_distance(settings.template, settings.size)
    entry.update(faces_found=len(faces), face=face.to_dict(), face_scale=round(scale, 3))
    if scale < settings.min_face_scale:
        return {**entry, "decision": "too_small",
                "reason": f"face scale {scale:.2f} < {settings.min_face_scale}"}
    aligned = align_face(image, face.landmarks, settings.size, settings.template)
    sharp = sharpness(aligned.crop, settings.template)
    entry["sharpness"] = round(sharp, 1)
    if sharp < settings.min_sharpness:
        return {**entry, "decision": "blurred",
                "reason": f"sharpness {sharp:.0f} < {settings.min_sharpness:g}"}
    crop_rel = f"crops/{path.stem}_{entry['sha256'][:8]}.png"
    write_image(root / crop_rel, aligned.crop)
    return {**entry, "decision": "used", "reason": "ok", "crop": crop_rel}
