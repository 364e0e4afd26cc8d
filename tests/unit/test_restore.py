"""Restorer and gpen-restore CLI: paste region, strength ends, identity guard, routing, bad inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gpen_fewshot import weights
from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli.restore import main
from gpen_fewshot.export import export_generator, export_person, load_person
from gpen_fewshot.faces.alignment import align_face
from gpen_fewshot.faces.detection import FaceDetector
from gpen_fewshot.faces.paste import face_mask
from gpen_fewshot.restore import FaceModel, GuardedRunner, NoFaceError, RestoreOptions, Restorer, route_faces
from gpen_fewshot.utils.image import read_image, write_image

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
GROUP = DEMO / "group" / "obama_and_biden.jpg"
TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}
NO_GUARD = RestoreOptions(guard_threshold=None)


class CachedDetector:
    """The real detector, run once per distinct image (these tests are about what happens after detection)."""

    def __init__(self) -> None:
        self.detector = FaceDetector(model="mobilenet0.25")
        self.cache: dict[str, list] = {}

    def detect(self, image: np.ndarray) -> list:
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if key not in self.cache:
            self.cache[key] = self.detector.detect(image)
        return self.cache[key]


@pytest.fixture(scope="module")
def detector():
    return CachedDetector()


@pytest.fixture(scope="module")
def photo():
    """The demo group photo at half size (3 faces: Biden, Obama, a girl)."""
    image = read_image(GROUP)
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _brighten(amount: float):
    return lambda x: (x + amount).clamp(-1, 1)


class MeanEmbedder:
    """Stand-in identity embedder: the crop's mean brightness (distance = brightness change x sqrt(128))."""

    def embed(self, crop: np.ndarray) -> np.ndarray:
        return np.full(128, crop.mean() / 255.0)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def _generators(tmp_path: Path) -> tuple[Path, GPENGenerator, GPENGenerator, list[str]]:
    torch.manual_seed(0)
    base = GPENGenerator(**TINY).eval()
    tuned = GPENGenerator(**TINY).eval()
    tuned.load_state_dict(base.state_dict())
    trainable = tuned.parameter_groups()["decoder_fine"] + tuned.parameter_groups()["to_rgb"]
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if name in trainable:
                param.add_(0.2)
    base_file = tmp_path / "base.pth"
    torch.save(base.state_dict(), base_file)
    return base_file, base, tuned, trainable


def _face_support(image: np.ndarray, detector, size: int) -> np.ndarray:
    """Pixels the paste-back can touch: the warped masks of every detected face, dilated by 3 px."""
    support = np.zeros(image.shape[:2], np.uint8)
    for face in detector.detect(image):
        aligned = align_face(image, face.landmarks, size, "gpen")
        warped = cv2.warpAffine(np.ascontiguousarray(face_mask(size)), aligned.inverse_affine,
                                (image.shape[1], image.shape[0]))
        support |= (warped > 0).astype(np.uint8)
    return cv2.dilate(support, np.ones((7, 7), np.uint8)) > 0


def test_restore_changes_only_the_face_regions(photo, detector):
    restorer = Restorer(FaceModel(_brighten(0.4), 128), detector=detector, options=NO_GUARD, device="cpu")
    result = restorer.restore(photo)
    assert result.image.shape == photo.shape and len(result.faces) == 3
    support = _face_support(photo, detector, 128)
    assert 0.01 < support.mean() < 0.5
    np.testing.assert_array_equal(result.image[~support], photo[~support])
    for record in result.faces:
        x1, y1, x2, y2 = (int(v) for v in record.box)
        centre = (slice((y1 + y2) // 2 - 3, (y1 + y2) // 2 + 3),
                  slice((x1 + x2) // 2 - 3, (x1 + x2) // 2 + 3))
        assert result.image[centre].astype(float).mean() > photo[centre].astype(float).mean() + 10
        assert record.model == "base" and record.decision == "restored"


def test_strength_zero_is_the_base_bit_for_bit_and_one_is_tuned(tmp_path, photo, detector):
    base_file, base, tuned, trainable = _generators(tmp_path)
    person = load_person(export_person(tuned, base_file, tmp_path / "alice", "alice", trainable, "gpen", {},
                                       None, 4, None))

    def run(base_model, persons=(), strength=1.0, force=None):
        options = RestoreOptions(strength=strength, guard_threshold=None)
        restorer = Restorer(FaceModel(base_model, 32), persons, force_person=force, options=options,
                            detector=detector, device="cpu")
        return restorer.restore(photo).image

    reference = run(base)
    np.testing.assert_array_equal(run(base, [person], 0.0, "alice"), reference)
    np.testing.assert_array_equal(run(base, [person], 1.0, "alice"), run(tuned))
    assert not np.array_equal(run(base, [person], 1.0, "alice"), reference)


def test_identity_guard_falls_back_to_the_base_then_to_the_input(photo, detector):
    options = RestoreOptions(guard_threshold=1.0)  # MeanEmbedder: a +0.9 brightening drifts by >> 1
    person = FaceModel(_brighten(0.9), 64, name="alice")
    restorer = Restorer(FaceModel(lambda x: x, 64), [person], force_person="alice", options=options,
                        detector=detector, embedder=MeanEmbedder(), device="cpu")
    result = restorer.restore(photo)
    for record in result.faces:
        assert [g.model for g in record.guard] == ["alice", "base"]
        assert [g.passed for g in record.guard] == [False, True]
        assert record.model == "base" and record.strength_used == 0.0 and "rejected" in record.summary()
    dropping = Restorer(FaceModel(_brighten(0.9), 64), options=options, detector=detector,
                        embedder=MeanEmbedder(), device="cpu")
    result = dropping.restore(photo)
    assert all(r.decision == "kept input" for r in result.faces)
    np.testing.assert_array_equal(result.image, photo)


def test_guard_ladder_halves_the_strength_down_to_the_base(tmp_path):
    base_file, _, tuned, trainable = _generators(tmp_path)
    from gpen_fewshot.restore import PersonModel

    person = PersonModel(load_person(export_person(tuned, base_file, tmp_path / "p", "p", trainable, "gpen",
                                                   {}, None, 3, None)))
    base = FaceModel(lambda x: x, 32)
    runner = GuardedRunner(base, None, torch.device("cpu"), 4, "fp32", 0.6, 0.125)
    assert [s for _, s in runner.ladder(person, 1.0)] == [1.0, 0.5, 0.25, 0.125, 0.0]
    assert [s for _, s in runner.ladder(person, 0.6)] == [0.6, 0.3, 0.15, 0.0]
    assert runner.ladder(base, 1.0) == [(base, 0.0)]
    # a person trained from random weights (full export, no base): no strengths to try, then the base model
    scratch = PersonModel(load_person(export_person(tuned, None, tmp_path / "s", "s", trainable, "gpen", {},
                                                    None, 3, None, mode="full")))
    assert not scratch.supports_strength and person.supports_strength
    assert runner.ladder(scratch, 1.0) == [(scratch, 1.0), (base, 0.0)]


def test_route_faces_assigns_each_person_at_most_once():
    a, b = np.zeros(128), np.ones(128) * 0.1
    faces = [a + 0.01, a + 0.02, b, None, np.full(128, 5.0)]
    routes = route_faces(faces, {"alice": a, "bob": b}, threshold=0.6)
    assert [r.person for r in routes] == ["alice", None, "bob", None, None]
    assert "closer face" in routes[1].reason and "no identity embedding" in routes[3].reason
    assert "no person within" in routes[4].reason
    assert routes[0].distance == pytest.approx(0.01 * np.sqrt(128))


def test_routing_on_a_real_group_photo(photo, detector):
    from gpen_fewshot.faces.identity import IdentityEmbedder

    embedder = IdentityEmbedder(template="gpen")
    crops = []
    for path in sorted((DEMO / "person_obama").glob("*.jpg")):
        image = read_image(path)
        factor = 512 / max(image.shape[:2])  # faces stay > 100 px; detection is 4x cheaper
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        face = detector.detect(image)[0]
        crops.append(align_face(image, face.landmarks, 256, "gpen").crop)
    reference = np.mean([embedder.embed(c) for c in crops], axis=0)
    obama = FaceModel(_brighten(0.5), 64, name="obama", reference_embedding=reference)
    other = FaceModel(_brighten(-0.5), 64, name="stranger", reference_embedding=-reference)
    restorer = Restorer(FaceModel(lambda x: x, 64), [obama, other], options=NO_GUARD, detector=detector,
                        embedder=embedder, device="cpu")
    result = restorer.restore(photo)
    chosen = [r for r in result.faces if r.person == "obama"]
    assert len(chosen) == 1 and all(r.person in (None, "obama") for r in result.faces)
    x1, _, x2, _ = chosen[0].box
    assert (x1 + x2) / 2 > photo.shape[1] * 0.5  # Obama stands right of Biden in this photo
    assert chosen[0].distance < 0.6 and chosen[0].model == "obama"
    others = [r for r in result.faces if r.person is None]
    assert len(others) == 2 and all(r.candidates["obama"] >= 0.6 and r.model == "base" for r in others)
    assert all(r.candidates["stranger"] > 1.0 for r in result.faces)


def test_aligned_input_and_sidecar(tmp_path, photo, detector):
    face = detector.detect(photo)[0]
    crop = align_face(photo, face.landmarks, 96, "gpen").crop
    write_image(tmp_path / "crop.png", crop)
    options = RestoreOptions(aligned=True, guard_threshold=None, scale=2)
    restorer = Restorer(FaceModel(_brighten(0.2), 64), options=options, device="cpu")
    result = restorer.restore_file(tmp_path / "crop.png", tmp_path / "out" / "crop.png", save_faces=True)
    assert result.image.shape == (192, 192, 3)
    sidecar = json.loads((tmp_path / "out" / "crop.png.json").read_text())
    assert sidecar["faces"][0]["model"] == "base" and sidecar["scale"] == 2
    assert sidecar["background_upscaler"].startswith("OpenCV Lanczos")
    assert len(list((tmp_path / "out" / "crop_faces").glob("*.png"))) == 1


def test_no_face_raises(detector):
    restorer = Restorer(FaceModel(lambda x: x, 32), detector=detector, options=NO_GUARD, device="cpu")
    with pytest.raises(NoFaceError):
        restorer.restore(np.full((120, 160, 3), 128, np.uint8))


def test_cli_bad_inputs_one_line_each_and_the_batch_goes_on(tmp_path, photo, capsys):
    base_file, base, tuned, trainable = _generators(tmp_path)
    base_dir = export_generator(base, tmp_path / "base_export")
    good = export_person(tuned, base_file, tmp_path / "persons" / "alice" / "weights", "alice", trainable,
                         "gpen", {}, None, 3, np.zeros(128))
    assert good.is_dir()
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a_group.jpg", photo)
    (inputs / "b_broken.jpg").write_bytes(b"this is not a jpeg")
    write_image(inputs / "c_empty.png", np.full((100, 100, 3), 90, np.uint8))
    out = tmp_path / "out"
    code = main(["-i", str(inputs), "-o", str(out), "--base", str(base_dir), "--no-guard",
                 "--person", "alice", "--person", "nobody", "--persons-dir", str(tmp_path / "persons"),
                 "--match-threshold", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert sum("b_broken.jpg" in line for line in err) == 1
    assert sum("c_empty.png" in line and "no face" in line for line in err) == 1
    assert sum("nobody" in line for line in err) == 1
    assert (out / "a_group.jpg").is_file() and not (out / "b_broken.jpg").exists()
    sidecar = json.loads((out / "a_group.jpg.json").read_text())
    assert len(sidecar["faces"]) == 3 and sidecar["persons"] == ["alice"]


def test_cli_reports_a_base_hash_mismatch_in_one_line(tmp_path, capsys):
    base_file, base, tuned, trainable = _generators(tmp_path)
    person = export_person(tuned, base_file, tmp_path / "alice", "alice", trainable, "gpen", {}, None, 3,
                           None)
    state = base.state_dict()
    state["final_linear.0.bias"] += 1
    torch.save(state, base_file)
    code = main(["-i", str(GROUP), "-o", str(tmp_path / "o.png"), "--weights", str(person), "--no-guard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "sha256" in err[0]


def test_cli_without_arguments_restores_the_demo_photo_into_the_cwd(tmp_path, monkeypatch, capsys):
    _, base, _, _ = _generators(tmp_path)
    monkeypatch.setenv("GPEN_FEWSHOT_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    spec = weights.REGISTRY["gpen-compact-256"]  # the bundled prior missing (a broken install)
    monkeypatch.setitem(weights.REGISTRY, spec.name,
                        dataclasses.replace(spec, filename="missing.safetensors"))
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "GPEN-BFR-512.pth" in err and str(tmp_path / "no_weights") in err
    export_generator(base, tmp_path / "no_weights" / "gpen-compact-256")  # the compact prior's place
    assert main(["--no-guard", "-q"]) == 0
    assert (tmp_path / "output_Solvay_conference_1927.png").is_file()
    sidecar = json.loads((tmp_path / "output_Solvay_conference_1927.png.json").read_text())
    assert len(sidecar["faces"]) >= 20


def test_from_pretrained_uses_the_persons_base_and_weights(tmp_path, photo, detector):
    base_file, base, tuned, trainable = _generators(tmp_path)
    export = export_person(tuned, base_file, tmp_path / "alice", "alice", trainable, "gpen", {}, None, 3,
                           None)
    forced = Restorer.from_pretrained(export, route=False, detector=detector, options=NO_GUARD, device="cpu")
    routed = Restorer.from_pretrained(export, detector=detector, options=NO_GUARD, device="cpu")
    expected = Restorer(FaceModel(tuned, 32), detector=detector, options=NO_GUARD, device="cpu")
    np.testing.assert_array_equal(forced.restore(photo).image, expected.restore(photo).image)
    # no reference embedding stored: routing sends every face to alice's base
    result = routed.restore(photo)
    base_only = Restorer(FaceModel(base, 32), detector=detector, options=NO_GUARD, device="cpu")
    np.testing.assert_array_equal(result.image, base_only.restore(photo).image)
    assert {r.route_reason for r in result.faces} == {"no registered person has a reference embedding"}


def test_min_face_size_and_only_center_face_skip_faces(photo, detector):
    identity = FaceModel(lambda x: x, 32)
    options = RestoreOptions(guard_threshold=None, min_face_size=80)
    result = Restorer(identity, detector=detector, options=options, device="cpu").restore(photo)
    skipped = [r for r in result.faces if r.decision == "skipped"]
    assert len(skipped) == 1 and "min-face-size" in skipped[0].note  # the girl's face is ~70 px here
    options = RestoreOptions(guard_threshold=None, only_center_face=True)
    result = Restorer(identity, detector=detector, options=options, device="cpu").restore(photo)
    kept = [r for r in result.faces if r.decision != "skipped"]
    assert len(kept) == 1 and kept[0].box[0] < photo.shape[1] / 2 < kept[0].box[2] + 100
    with pytest.raises(NoFaceError, match="none kept"):
        Restorer(identity, detector=detector, options=RestoreOptions(min_face_size=1000),
                 device="cpu").restore(photo)


def test_cli_person_without_base_uses_the_persons_recorded_base(tmp_path, monkeypatch, capsys):
    """No --base and no default base on the machine: --person still works, with the base it was tuned from."""
    base_file, base, tuned, trainable = _generators(tmp_path)
    export = export_person(tuned, base_file, tmp_path / "alice", "alice", trainable, "gpen", {}, None, 3,
                           None)
    monkeypatch.setenv("GPEN_FEWSHOT_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    out = tmp_path / "o.png"
    code = main(["-i", str(GROUP), "-o", str(out), "--person", str(export), "--no-guard", "-q"])
    assert code == 0, capsys.readouterr().err
    expected = tmp_path / "expected.png"
    assert main(["-i", str(GROUP), "-o", str(expected), "--base", str(base_file), "--person", str(export),
                 "--no-guard", "-q"]) == 0
    np.testing.assert_array_equal(read_image(out), read_image(expected))
