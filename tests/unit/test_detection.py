"""RetinaFace detection: bundled MobileNet weights, coordinates, the image pyramid, weight loading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gpen_fewshot.faces import detection
from gpen_fewshot.faces.detection import MODELS, Face, FaceDetector, load_state_dict, resolve_model
from gpen_fewshot.utils.image import read_image

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "faces"
SOLVAY = REPO / "data" / "demo" / "group" / "Solvay_conference_1927.png"


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread: None) -> None:
    """Detection on a shared 2-core machine is ~10x faster on one thread."""


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("mobilenet0.25")


def test_bundled_weights_load_strictly_with_weights_only() -> None:
    from gpen_fewshot.weights import weight_path

    path = weight_path("retinaface-mobilenet0.25", download=False)
    state = load_state_dict(path)  # legacy (non-zip) pickle, read with weights_only=True
    assert len(state) == 300 and all(isinstance(v, torch.Tensor) for v in state.values())


def test_one_face_with_plausible_landmarks(detector: FaceDetector) -> None:
    faces = detector.detect(read_image(FIXTURES / "obama_000.jpg"))
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)
    assert face.box[0] < lx and rx < face.box[2] and face.box[1] < ly and max(mly, mry) < face.box[3]
    # Recorded on this fixture (eyes ~56 px apart by construction); the detector is deterministic.
    expected = [[129.6, 108.9], [186.3, 108.7], [159.3, 141.2], [127.4, 164.2], [189.0, 163.9]]
    np.testing.assert_allclose(face.landmarks, expected, atol=2.0)


def test_solvay_group_photo_finds_everyone(detector: FaceDetector) -> None:
    """29 people, small grayscale faces, RGBA file (read_image composites it)."""
    faces = detector.detect(read_image(SOLVAY))
    assert 28 <= len(faces) <= 30
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(12 < f.eye_distance < 35 for f in faces)


def test_large_image_is_detected_downscaled_and_mapped_back(detector: FaceDetector) -> None:
    """max_side 400 on a 960 px image = detection on the INTER_AREA 400 px copy, mapped back exactly."""
    image = read_image(FIXTURES / "obama_000.jpg")
    big = cv2.resize(image, (960, 960), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(big, (400, 400), interpolation=cv2.INTER_AREA)
    got = FaceDetector("mobilenet0.25", max_side=400).detect(big)
    ref = detector.detect(small)
    assert len(got) == len(ref) == 1
    factor = 960 / 400  # pixel-centre convention: x_big = (x_small + 0.5) * factor - 0.5
    np.testing.assert_allclose(got[0].landmarks, (ref[0].landmarks + 0.5) * factor - 0.5, atol=1e-4)
    np.testing.assert_allclose(got[0].box, (ref[0].box + 0.5) * factor - 0.5, atol=1e-4)


def test_landmarks_agree_across_scales(detector: FaceDetector) -> None:
    """The same photo at 1x and 3x: landmarks agree within this small model's noise (~10% of the eye
    distance)."""
    image = read_image(FIXTURES / "obama_000.jpg")
    big = cv2.resize(image, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)
    ref = detector.detect(image)[0]
    faces = detector.detect(big)
    assert len(faces) == 1
    np.testing.assert_allclose((faces[0].landmarks + 0.5) / 3.0 - 0.5, ref.landmarks, atol=6.0)
    assert faces[0].eye_distance / 3.0 == pytest.approx(ref.eye_distance, rel=0.05)


def test_close_up_face_larger_than_the_anchors(detector: FaceDetector) -> None:
    """A face filling a 1200 px frame: single-scale MobileNet returns partial boxes; the pyramid does not."""
    image = read_image(FIXTURES / "obama_000.jpg")[60:220, 80:240]
    big = cv2.resize(image, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big)
    assert len(faces) == 1
    assert 350 < faces[0].eye_distance < 480  # ~56 px x 7.5


def test_group_fixture_two_faces_largest_first(detector: FaceDetector) -> None:
    faces = detector.detect(read_image(FIXTURES / "obama_biden.jpg"))
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area


def test_no_face_in_a_gradient(detector: FaceDetector) -> None:
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    assert detector.detect(gradient) == []


def test_face_dict_round_trip() -> None:
    face = Face(box=np.array([1.0, 2.0, 30.0, 40.0]), score=0.9, landmarks=np.arange(10.0).reshape(5, 2))
    again = Face.from_dict(face.to_dict())
    np.testing.assert_allclose(again.box, face.box)
    np.testing.assert_allclose(again.landmarks, face.landmarks)
    assert again.score == pytest.approx(0.9) and again.area == pytest.approx(29 * 38)


def test_module_prefix_is_stripped_and_bad_files_are_named(tmp_path: Path, detector: FaceDetector) -> None:
    state = load_state_dict(detector.weights)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed)
    image = read_image(FIXTURES / "obama_001.jpg")
    other = FaceDetector("mobilenet0.25", weights=prefixed)
    np.testing.assert_allclose(other.detect(image)[0].landmarks, detector.detect(image)[0].landmarks)

    missing = tmp_path / "missing_key.pth"
    torch.save({k: v for k, v in list(state.items())[1:]}, missing)
    with pytest.raises(ValueError, match="missing_key.pth"):
        FaceDetector("mobilenet0.25", weights=missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        FaceDetector("mobilenet0.25", weights=garbage)


def test_resnet50_file_of_the_released_format_loads(tmp_path: Path) -> None:
    """RetinaFace-R50 cannot be downloaded here: a random file of the same format (module. prefix) must
    load."""
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name="resnet50", half=False)
    path = tmp_path / "RetinaFace-R50.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    det = FaceDetector("resnet50", weights=path)
    faces = det.detect(np.zeros((64, 64, 3), np.uint8))  # random weights: only the plumbing is checked
    assert isinstance(faces, list) and all(isinstance(f, Face) for f in faces)
    assert det._net.cfg["min_sizes"] == [list(s) for s in MODELS["resnet50"].min_sizes]


def test_auto_picks_resnet50_only_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpen_fewshot.weights as weights

    monkeypatch.setattr(weights, "is_available", lambda name: name == "RetinaFace-R50")
    assert resolve_model("auto") == "resnet50"
    monkeypatch.setattr(weights, "is_available", lambda name: False)
    assert resolve_model("auto") == "mobilenet0.25"
    with pytest.raises(ValueError, match="unknown detector"):
        resolve_model("yolo")


def test_rejects_non_uint8_rgb(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((32, 32, 3), np.float32))
    assert detection.COARSEST_SIDE > 0
