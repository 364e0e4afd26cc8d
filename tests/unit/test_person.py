"""Person preparation: one decision per photo, crops, manifest, contact sheet, cache, holdout, CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gpen_fewshot.data import person as person_module
from gpen_fewshot.data.person import (
    NotEnoughPhotosError,
    PhotoRecord,
    prepare_faces_folder,
    prepare_person,
)
from gpen_fewshot.data.photo_vetting import Photo, choose_faces
from gpen_fewshot.faces.detection import Face
from gpen_fewshot.persons import resolve_person_dir, validate_person_name
from gpen_fewshot.utils.image import read_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
SIZE = 256


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread: None) -> None:
    """Detection on a shared 2-core machine is ~10x faster on one thread."""


def _fixture(name: str) -> np.ndarray:
    return read_image(FIXTURES / f"{name}.jpg")


def _jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _exif_rotated_jpeg(image: np.ndarray) -> bytes:
    """Pixels stored rotated 90 degrees clockwise with EXIF orientation 8, so viewers show ``image``
    upright."""
    stored = np.ascontiguousarray(np.rot90(image, k=-1))
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=92, exif=exif)
    return buf.getvalue()


def _two_faces_other_larger() -> np.ndarray:
    """The Obama/Biden fixture with Biden (left half) enlarged 1.4x, so the largest face is the wrong one."""
    pair = _fixture("obama_biden")
    left = cv2.resize(pair[:, :230], None, fx=1.4, fy=1.4, interpolation=cv2.INTER_CUBIC)
    right = pair[:, 230:]
    canvas = np.full((left.shape[0], left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[:, : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas


def build_bad_folder(folder: Path) -> Path:
    """A person folder exercising every decision; returns it. Expected outcomes are in EXPECTED."""
    folder.mkdir(parents=True)
    base, second = _fixture("obama_000"), _fixture("obama_001")
    (folder / "000.jpg").write_bytes((FIXTURES / "obama_000.jpg").read_bytes())
    (folder / "000_copy.jpg").write_bytes((FIXTURES / "obama_000.jpg").read_bytes())
    letterbox = cv2.copyMakeBorder(cv2.resize(base, (288, 288), interpolation=cv2.INTER_AREA), 0, 0, 40, 40,
                                   cv2.BORDER_CONSTANT, value=0)
    (folder / "000_letterboxed.jpg").write_bytes(_jpeg(letterbox, quality=75))
    rgba = np.dstack([second, np.full(second.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "001_rgba.png")
    (folder / "002_exif_rotated.jpg").write_bytes(_exif_rotated_jpeg(_fixture("obama_002")))
    sixteen = (cv2.cvtColor(_fixture("obama_003"), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "003_16bit.png"), sixteen)
    (folder / "004_blurred.jpg").write_bytes(_jpeg(cv2.GaussianBlur(second, (0, 0), 3.0)))
    tiny = np.full((400, 400, 3), 90, np.uint8)
    tiny[150:230, 150:230] = cv2.resize(base, (80, 80), interpolation=cv2.INTER_AREA)
    (folder / "005_tiny_face.jpg").write_bytes(_jpeg(tiny))
    (folder / "006_two_people.jpg").write_bytes(_jpeg(_two_faces_other_larger()))
    gradient = np.tile(np.linspace(40, 220, 300, dtype=np.uint8)[None, :, None], (300, 1, 3))
    (folder / "007_no_face.png").write_bytes(cv2.imencode(".png", gradient)[1].tobytes())
    (folder / "008_corrupt.jpg").write_bytes((FIXTURES / "obama_001.jpg").read_bytes()[:3000])
    (folder / "009_empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("photos from the 2012 trip\n")
    (folder / "text_named.jpg").write_text("this is not a picture")
    (folder / ".hidden.jpg").write_bytes((FIXTURES / "obama_002.jpg").read_bytes())
    return folder


EXPECTED = {
    "000.jpg": "used", "000_copy.jpg": "duplicate", "000_letterboxed.jpg": "duplicate",
    "001_rgba.png": "used", "002_exif_rotated.jpg": "used", "003_16bit.png": "used",
    "004_blurred.jpg": "blurred", "005_tiny_face.jpg": "too_small", "006_two_people.jpg": "used",
    "007_no_face.png": "no_face", "008_corrupt.jpg": "unreadable", "009_empty.jpg": "unreadable",
    "notes.txt": "unreadable", "text_named.jpg": "unreadable",
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bad_folder(tmp_path_factory.mktemp("persons") / "obama_bad")


@pytest.fixture(scope="module")
def prepared(bad_folder: Path) -> person_module.PreparedPerson:
    import torch

    torch.set_num_threads(1)
    return prepare_person(bad_folder, size=SIZE)


def _by_file(prep: person_module.PreparedPerson) -> dict[str, PhotoRecord]:
    return {r.file: r for r in prep.records}


def test_every_file_gets_exactly_the_expected_decision(prepared: person_module.PreparedPerson) -> None:
    records = _by_file(prepared)
    assert {name: r.decision for name, r in records.items()} == EXPECTED  # .hidden.jpg is ignored
    assert all(r.reason for r in prepared.records)


def test_rejection_reasons_are_specific(prepared: person_module.PreparedPerson) -> None:
    r = _by_file(prepared)
    assert "byte-identical copy of 000.jpg" in r["000_copy.jpg"].reason
    assert "same picture as 000.jpg" in r["000_letterboxed.jpg"].reason
    assert r["004_blurred.jpg"].reason.startswith("blurred: sharpness")
    assert r["004_blurred.jpg"].measures["sharpness"] < 30 <= r["001_rgba.png"].measures["sharpness"]
    assert ("face too small" in r["005_tiny_face.jpg"].reason and
            r["005_tiny_face.jpg"].measures["face_scale"] < 0.5)
    assert "no face found" in r["007_no_face.png"].reason
    assert "008_corrupt.jpg" not in r["008_corrupt.jpg"].reason  # the table names the file already
    assert "empty" in r["009_empty.jpg"].reason
    for name in ("notes.txt", "text_named.jpg", "008_corrupt.jpg"):
        assert "not a readable image" in r[name].reason and "BytesIO" not in r[name].reason


def test_group_photo_picks_the_person_by_identity(prepared: person_module.PreparedPerson) -> None:
    record = _by_file(prepared)["006_two_people.jpg"]
    assert record.faces_found == 2
    assert "2 faces: picked the 2nd largest by identity" in record.reason, record.reason
    # Obama is the right-hand (smaller) face of the composed image.
    assert record.face["box"][0] > 300 and len(record.other_boxes) == 1 and record.other_boxes[0][0] < 100
    assert record.measures["identity_distance"] < 0.6


def test_exif_and_sixteen_bit_photos_are_read_upright(prepared: person_module.PreparedPerson) -> None:
    r = _by_file(prepared)
    assert (r["002_exif_rotated.jpg"].width, r["002_exif_rotated.jpg"].height) == (320, 320)
    lm = np.asarray(r["002_exif_rotated.jpg"].face["landmarks"])
    assert lm[0, 0] < lm[1, 0] and lm[1, 1] < lm[3, 1]  # eyes side by side above the mouth: upright
    assert r["003_16bit.png"].decision == "used"


def test_outputs_crops_manifest_sheet_and_holdout(prepared: person_module.PreparedPerson) -> None:
    used = [r for r in prepared.records if r.decision == "used"]
    assert len(used) == 5 and len(prepared.holdout_crops) == 1 and len(prepared.train_crops) == 4
    assert not set(prepared.holdout_crops) & set(prepared.train_crops)
    held = [r for r in used if r.split == "holdout"]
    assert held[0].sha256 == min(r.sha256 for r in used)  # lowest hash is held out: deterministic
    for path in prepared.train_crops + prepared.holdout_crops:
        crop = read_image(path)
        assert crop.shape == (SIZE, SIZE, 3)
    manifest = json.loads(prepared.manifest_path.read_text())
    assert manifest["settings"]["size"] == SIZE and manifest["settings"]["template"] == "gpen"
    assert {p["file"] for p in manifest["photos"]} == set(EXPECTED)
    first = next(p for p in manifest["photos"] if p["file"] == "000.jpg")
    assert {"sha256", "decision", "reason", "split", "crop", "face"} <= set(first)
    sheet = read_image(prepared.contact_sheet)
    assert sheet.shape[0] > 4 * 250 and sheet.shape[1] > 1000
    assert prepared.root == prepared.manifest_path.parent and prepared.root.parent.name == ".prepared"


def test_crop_is_aligned_to_the_template(prepared: person_module.PreparedPerson, bad_folder: Path) -> None:
    """The written crop is exactly the aligned face from the manifest's landmarks, and re-detecting the face
    in it puts the eyes at the template's (within this small detector's noise, ~10% of the eye distance)."""
    from gpen_fewshot.faces.alignment import align_face, template_eye_distance, template_points
    from gpen_fewshot.faces.detection import FaceDetector

    record = _by_file(prepared)["002_exif_rotated.jpg"]
    crop = read_image(prepared.root / record.crop)
    expected = align_face(read_image(bad_folder / record.file), np.asarray(record.face["landmarks"]), SIZE)
    assert np.abs(crop.astype(int) - expected.crop).max() <= 1  # landmarks are stored rounded to 0.01 px
    face = FaceDetector("mobilenet0.25").detect(crop)[0]
    assert np.abs(face.landmarks[:2] - template_points("gpen", SIZE)[:2]).max() < 8.0
    assert face.eye_distance == pytest.approx(template_eye_distance("gpen", SIZE), rel=0.1)


def test_decisions_do_not_depend_on_the_crop_size(bad_folder: Path, prepared: person_module.PreparedPerson,
                                                  tmp_path: Path) -> None:
    """Sharpness, duplicates and identity are measured on the photo at a fixed scale; only 'too_small' is
    relative to the crop size (a 32-px test model used to get every photo rejected as blurred)."""
    tiny = _by_file(prepare_person(bad_folder, size=32, cache_dir=tmp_path / "cache"))
    large = _by_file(prepared)
    for name, record in large.items():
        if name == "005_tiny_face.jpg":  # 80-px face: too small for 256-px crops, big enough for 32-px ones
            assert record.decision == "too_small" and tiny[name].decision != "too_small"
            continue
        assert tiny[name].decision == record.decision, name
        assert tiny[name].measures.get("sharpness") == record.measures.get("sharpness"), name
    assert tiny["004_blurred.jpg"].reason.startswith("blurred: sharpness")


def test_rerun_without_changes_does_no_work(bad_folder: Path, prepared: person_module.PreparedPerson,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    files = [prepared.manifest_path, prepared.contact_sheet, *prepared.train_crops, *prepared.holdout_crops]
    mtimes = [p.stat().st_mtime_ns for p in files]

    def no_detector(*args, **kwargs):
        raise AssertionError("the cached preparation was redone")

    monkeypatch.setattr(person_module, "FaceDetector", no_detector)
    again = prepare_person(bad_folder, size=SIZE)
    assert again.from_cache and again.records == prepared.records
    assert [p.stat().st_mtime_ns for p in files] == mtimes


def test_changed_folder_or_settings_redo_the_work(bad_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "obama"
    folder.mkdir()
    for name in ("000.jpg", "001_rgba.png", "002_exif_rotated.jpg", "003_16bit.png", "007_no_face.png"):
        shutil.copy(bad_folder / name, folder / name)
    first = prepare_person(folder, size=SIZE, holdout=0, use_identity=False)
    assert not first.holdout_crops and len(first.train_crops) == 4
    (folder / "001_rgba.png").unlink()
    second = prepare_person(folder, size=SIZE, holdout=0, use_identity=False)
    assert not second.from_cache and len(second.train_crops) == 3
    assert sorted((second.root / "train").glob("*.png")) == sorted(second.train_crops)  # stale crop removed
    third = prepare_person(folder, size=SIZE, holdout=1, use_identity=False)
    assert not third.from_cache and len(third.holdout_crops) == 1 and len(third.train_crops) == 2


def test_read_only_folder_is_never_written(bad_folder: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared data sets are r-x (even for root, who passes os.access): outputs go to the user cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "readonly"
    folder.mkdir()
    for name in ("000.jpg", "001_rgba.png", "003_16bit.png"):
        shutil.copy(bad_folder / name, folder / name)
    folder.chmod(0o555)
    try:
        prep = prepare_person(folder, size=SIZE, use_identity=False)
    finally:
        folder.chmod(0o755)
    assert not (folder / ".prepared").exists()
    assert prep.root.is_relative_to(tmp_path / "home" / ".cache" / "gpen_fewshot" / "prepared")
    assert len(prep.train_crops) == 3


def test_not_enough_photos_lists_every_reason(bad_folder: Path,
                                              prepared: person_module.PreparedPerson) -> None:
    with pytest.raises(NotEnoughPhotosError) as info:
        prepare_person(bad_folder, size=SIZE, min_photos=6)  # min_photos is not part of the cache key
    message = str(info.value)
    assert "only 5 usable photo(s) of 14, need at least 6" in message
    for name in EXPECTED:
        assert f"  {name}: " in message
    assert len(info.value.records) == 14 and (info.value.root / "contact_sheet.png").is_file()
    with pytest.raises(NotEnoughPhotosError, match="cannot hold out 5 of 5"):
        person_module._check_enough(prepared.records, 3, 5, "obama_bad", prepared.root)


def test_holdout_rules() -> None:
    count = person_module._holdout_count
    assert [count(None, n) for n in (2, 3, 4, 8)] == [0, 0, 1, 1]
    assert count(2, 8) == 2 and count(0.25, 8) == 2 and count(0.1, 4) == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            count(bad, 5)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "celeba_7201", "j.doe-x"])
def test_valid_person_names(name: str) -> None:
    assert validate_person_name(name) == name


@pytest.mark.parametrize("name",
                         ["", ".hidden", "../etc", "a/b", "/abs", "a..b", "x y", "a\\b", "-x", "é" * 3])
def test_unsafe_person_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid person name"):
        validate_person_name(name)


def test_person_name_resolves_under_the_persons_root(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    assert resolve_person_dir("alice", root=tmp_path) == tmp_path / "alice"
    assert resolve_person_dir(tmp_path / "alice") == tmp_path / "alice"
    with pytest.raises(FileNotFoundError, match="bob"):
        resolve_person_dir("bob", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_person_dir("../alice", root=tmp_path / "sub")
    with pytest.raises(ValueError, match="invalid person name"):
        resolve_person_dir(".hidden", root=tmp_path)


def test_choose_faces_by_identity_or_largest() -> None:
    """Unit test of the pick with hand-made embeddings (no dlib)."""
    me, other = np.zeros(128), np.full(128, 0.1)  # distance 1.13
    face = Face(box=np.array([0, 0, 10, 10.0]), score=1.0, landmarks=np.zeros((5, 2)))

    def photo(name: str, embeddings: list[np.ndarray]) -> Photo:
        return Photo(path=Path(name), faces=[face] * len(embeddings), embeddings=list(embeddings))

    group, solo1, solo2 = photo("g", [other, me + 0.01]), photo("a", [me]), photo("b", [me + 0.02])
    choose_faces([group, solo1, solo2])
    assert group.chosen == 1 and "by identity" in group.notes[0]
    strangers = photo("s", [other + 0.5, other + 0.6])
    choose_faces([strangers, photo("c", [me])])
    assert strangers.chosen == 0 and "picked the largest" in strangers.notes[0]


def test_cli_reports_every_file_without_traceback(bad_folder: Path, capsys: pytest.CaptureFixture) -> None:
    from gpen_fewshot.cli.prepare_person import main

    assert main([str(bad_folder), "--size", str(SIZE), "--quiet"]) == 0
    out = capsys.readouterr().out
    for name, decision in EXPECTED.items():
        assert any(line.startswith(name) and decision in line for line in out.splitlines()), name
    assert "contact sheet:" in out and "Traceback" not in out

    assert main([str(bad_folder), "--size", str(SIZE), "--min-photos", "9", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().startswith("error: person 'obama_bad': only 5 usable")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert main(["../not-a-folder", "--quiet"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["bad name", "--quiet"]) == 2
    assert "invalid person name" in capsys.readouterr().err
    assert main([str(bad_folder), "--size", "0", "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == "error: crop size must be an integer >= 32, got 0"


def test_prepare_faces_folder_largest_face_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("obama_000", "obama_biden"):
        shutil.copy(FIXTURES / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"nope")
    crops = prepare_faces_folder(folder, size=128, cache_dir=tmp_path / "cache", progress=False)
    assert [c.name.split("_")[1] for c in crops] == ["000", "biden"]
    assert all(read_image(c).shape == (128, 128, 3) for c in crops)
    manifest = json.loads((tmp_path / "cache" / "128_gpen" / "manifest.json").read_text())
    assert manifest["used"] == 2 and manifest["skipped"] == {"unreadable": 1}
    pair = next(p for p in manifest["photos"] if p["file"] == "obama_biden.jpg")
    assert pair["faces_found"] == 2  # the largest was taken

    import gpen_fewshot.data.faces_folder as faces_folder

    monkeypatch.setattr(faces_folder, "FaceDetector", lambda *a, **k: pytest.fail("cache not used"))
    assert prepare_faces_folder(folder, size=128, cache_dir=tmp_path / "cache", progress=False) == crops


def test_prepare_faces_folder_keeps_crops_of_a_remounted_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """New mtimes with the same bytes (a re-mounted shared folder) reuse the cache; new bytes do not."""
    import gpen_fewshot.data.faces_folder as faces_folder

    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("obama_000", "obama_001"):
        shutil.copy(FIXTURES / f"{name}.jpg", folder / f"{name}.jpg")
    cache = tmp_path / "cache"
    crops = prepare_faces_folder(folder, size=96, cache_dir=cache, progress=False)
    for path in folder.iterdir():
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    real_detector = faces_folder.FaceDetector
    monkeypatch.setattr(faces_folder, "FaceDetector", lambda *a, **k: pytest.fail("cache not used"))
    assert prepare_faces_folder(folder, size=96, cache_dir=cache, progress=False) == crops
    manifest = json.loads((cache / "96_gpen" / "manifest.json").read_text())
    assert all(p["stat"][1] == 1_000_000_000 for p in manifest["photos"])  # refreshed, not re-detected

    (folder / "obama_001.jpg").write_bytes((FIXTURES / "obama_002.jpg").read_bytes())
    calls = []
    monkeypatch.setattr(faces_folder, "FaceDetector",
                        lambda *a, **k: calls.append(1) or real_detector(*a, **k))
    again = prepare_faces_folder(folder, size=96, cache_dir=cache, progress=False)
    assert calls and again[0] == crops[0] and again[1] != crops[1] and not crops[1].exists()
