"""Offline face identity embeddings: dlib's 128-d ResNet face descriptor.

The models ship in the ``face-recognition-models`` PyPI package (CC0): the 5-point shape predictor and
``dlib_face_recognition_resnet_model_v1`` (99.38% on LFW). dlib itself comes from ``dlib-bin``. The package is
located with ``importlib.util.find_spec`` and never imported: its ``__init__`` needs ``pkg_resources``, which
current setuptools no longer provides.

How an aligned crop is embedded: dlib's 5-point shape predictor is run inside a FIXED box at the place where
dlib's own (HOG) face detector puts its box on crops of the given template, then
``compute_face_descriptor`` does dlib's own chip alignment (150 px, padding 0.25). Measured on 144 photos of
12 CelebA identities (``tests/fixtures/identity/README.md``): the crop embeddings are within 0.07 (mean) of
dlib's native full-photo pipeline and verify exactly as well (95.2% of same-person pairs < 0.6, 99.7% of
different-person pairs >= 0.6). Giving the whole crop as the box instead is useless (57% balanced
accuracy) because the shape predictor expects a detector-sized box.

Conventions: ``distance`` (euclidean) is the primary score; dlib calls two faces the same person when it
is below ``SAME_PERSON_THRESHOLD`` = 0.6. ``similarity`` is the same number rescaled so that the threshold
sits at 0.5: ``1 - distance / (2 * SAME_PERSON_THRESHOLD)`` (1 = identical; > 0.5 = same person; it can go
slightly below 0 for very different faces, since dlib distances reach about 1.3).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_DIM = 128
SAME_PERSON_THRESHOLD = 0.6
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_MIN_SIDE = 16
_INSTALL_HINT = (
    "pip install dlib-bin face-recognition-models (never `pip install face-recognition`: it builds dlib)"
)

# Face box (x1, y1, x2, y2) as fractions of the crop's width/height where dlib's HOG detector finds the face
# on aligned crops. "gpen": median over 144 GPEN-template crops at 256 px (box 65,93-189,217).
# "ffhq": the gpen box mapped by the similarity transform between the two templates. Checked on crops made
# by FaceDetector + align_face: mean distance to dlib's full-photo embedding 0.073 (gpen), 0.068 (ffhq).
FACE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "gpen": (0.2539, 0.3633, 0.7383, 0.8477),
    "ffhq": (0.2264, 0.3421, 0.7668, 0.8826),
}


class IdentityModelsMissingError(ImportError):
    """dlib or the ``face-recognition-models`` files are not installed; the message says what to install."""


class NoFaceFoundError(ValueError):
    """``IdentityEmbedder.embed_image`` found no face in a photo and no box was given."""


def find_models_dir() -> Path:
    """Folder holding dlib's model files from the ``face-recognition-models`` package (without importing it).

    Raises:
        IdentityModelsMissingError: the package or one of the two model files is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise IdentityModelsMissingError(
            f"identity embeddings need the face-recognition-models package: {_INSTALL_HINT}"
        )
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        folder = Path(root) / "models"
        if all((folder / name).is_file() for name in (SHAPE_PREDICTOR_FILE, DESCRIPTOR_FILE)):
            return folder
    raise IdentityModelsMissingError(
        f"face-recognition-models is installed at {roots} but {SHAPE_PREDICTOR_FILE} / {DESCRIPTOR_FILE} are "
        f"missing from its models/ folder; reinstall it: {_INSTALL_HINT}"
    )


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as err:
        raise IdentityModelsMissingError(f"identity embeddings need dlib: {_INSTALL_HINT} ({err})") from err
    return dlib


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint8 RGB (H, W, 3) image and return it C-contiguous (dlib needs that)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be a uint8 RGB (H, W, 3) array, got {desc}")
    if min(image.shape[:2]) < _MIN_SIDE:
        raise ValueError(f"{what} is too small for a face embedding: {image.shape[1]}x{image.shape[0]} "
                         f"(need at least {_MIN_SIDE} px a side)")
    return np.ascontiguousarray(image)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two (128,) embeddings; < ``SAME_PERSON_THRESHOLD`` means the same person."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise euclidean distances, broadcasting: (N, 128) vs (N, 128) or (128,) -> float64 (N,)."""
    diff = np.atleast_2d(np.asarray(a, np.float64)) - np.asarray(b, np.float64)
    return np.linalg.norm(diff, axis=-1)


def similarity_from_distance(dist: float | np.ndarray) -> float | np.ndarray:
    """``1 - distance / (2 * SAME_PERSON_THRESHOLD)``: 1 identical, 0.5 at the threshold (see module doc)."""
    return 1.0 - np.asarray(dist, dtype=np.float64) / (2.0 * SAME_PERSON_THRESHOLD)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two (128,) embeddings, ``1 - distance / 1.2`` (0.5 at the same-person threshold)."""
    return float(similarity_from_distance(distance(a, b)))


def is_same_person(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> bool:
    """dlib's verification rule: distance below ``threshold``."""
    return distance(a, b) < threshold


def mean_embedding(embeddings: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """A person's reference embedding: the mean of their photos' embeddings, (N, 128) -> float32 (128,)."""
    stack = np.asarray(embeddings, dtype=np.float64)
    if stack.ndim != 2 or stack.shape[1] != EMBEDDING_DIM or len(stack) == 0:
        raise ValueError(f"mean_embedding expects (N>=1, {EMBEDDING_DIM}) embeddings, got {stack.shape}")
    return stack.mean(axis=0).astype(np.float32)


class IdentityEmbedder:
    """dlib 128-d face descriptor for aligned face crops and for faces in full photos.

    Models load on first use. One lock serialises loading and inference (a dlib network object is not
    re-entrant), so an instance can be shared by threads; pickling drops the loaded models, so it can be sent
    to DataLoader worker processes, which reload them lazily. About 75 ms per face on one CPU core.

    Args:
        template: alignment template of the crops given to ``embed`` ("gpen" or "ffhq"); selects the face box.
        face_box: explicit (x1, y1, x2, y2) face box as fractions of the crop size, overriding ``template``.
        num_jitters: dlib's test-time augmentation (re-embeds N randomly jittered copies and averages;
            N times slower). 0 = deterministic.
        models_dir: folder with the two dlib model files (default: the face-recognition-models package).
    """

    SAME_PERSON_THRESHOLD = SAME_PERSON_THRESHOLD

    def __init__(
        self,
        template: str = "gpen",
        face_box: tuple[float, float, float, float] | None = None,
        num_jitters: int = 0,
        models_dir: str | Path | None = None,
    ) -> None:
        if face_box is None:
            if template not in FACE_BOXES:
                raise ValueError(f"unknown template {template!r}; known: {', '.join(FACE_BOXES)}")
            face_box = FACE_BOXES[template]
        x1, y1, x2, y2 = (float(v) for v in face_box)
        if not 0.0 <= x1 < x2 <= 1.0 or not 0.0 <= y1 < y2 <= 1.0:
            raise ValueError(
                f"face_box must be fractions with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, got {face_box}"
            )
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        self.face_box = (x1, y1, x2, y2)
        self.num_jitters = int(num_jitters)
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self._lock = threading.Lock()
        self._models: tuple[Any, Any, Any] | None = None  # (dlib, shape predictor, descriptor net)
        self._detector: Any = None

    # -- pickling (DataLoader workers): models are reloaded lazily in the new process
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _models=None, _detector=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def load(self) -> IdentityEmbedder:
        """Load the models now (otherwise done on first use); returns self."""
        with self._lock:
            self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> tuple[Any, Any, Any]:
        """Call with the lock held."""
        if self._models is None:
            dlib = _import_dlib()
            folder = self.models_dir or find_models_dir()
            for name in (SHAPE_PREDICTOR_FILE, DESCRIPTOR_FILE):
                if not (folder / name).is_file():
                    raise IdentityModelsMissingError(
                        f"{folder / name}: dlib model file not found ({_INSTALL_HINT})"
                    )
            predictor = dlib.shape_predictor(str(folder / SHAPE_PREDICTOR_FILE))
            net = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
            self._models = (dlib, predictor, net)
        return self._models

    def _describe(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Descriptor of the face in ``box`` (pixel x1, y1, x2, y2) of a checked image."""
        with self._lock:
            dlib, predictor, net = self._ensure_loaded()
            shape = predictor(image, dlib.rectangle(*box))
            vec = net.compute_face_descriptor(image, shape, self.num_jitters)
        return np.asarray(vec, dtype=np.float32)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The fixed face box in pixels (x1, y1, x2, y2) used for an aligned crop of this size."""
        x1, y1, x2, y2 = self.face_box
        # dlib rectangles are inclusive, like the detector boxes the fractions were measured from
        return (round(x1 * width), round(y1 * height), min(round(x2 * width), width - 1),
                min(round(y2 * height), height - 1))

    def embed(self, face: np.ndarray) -> np.ndarray:
        """Embed an aligned face crop.

        Args:
            face: uint8 RGB (H, W, 3) crop aligned to this embedder's template, any size (>= 16 px; dlib
                resamples to a 150 px chip, so 128-512 px crops give near-identical embeddings).

        Returns:
            float32 (128,) descriptor (norm about 1.5).
        """
        face = _check_image(face, "face crop")
        return self._describe(face, self.crop_box(*face.shape[:2]))

    def embed_many(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Embed aligned crops (each as in ``embed``); returns float32 (N, 128) ((0, 128) for no faces)."""
        if len(faces) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([self.embed(face) for face in faces])

    def embed_image(
        self, image: np.ndarray, box: Sequence[float] | None = None, upsample: int = 1
    ) -> np.ndarray:
        """Embed a face in an unaligned photo.

        Args:
            image: uint8 RGB (H, W, 3) photo.
            box: face box (x1, y1, x2, y2) in pixels, e.g. ``Face.box`` from ``FaceDetector`` (boxes 0.85-1.3x
                the size of dlib's own move the embedding by about 0.05). None: use dlib's HOG frontal face
                detector and take the largest face.
            upsample: HOG detector upsampling passes (1 finds faces down to about 40 px); ignored with a box.

        Returns:
            float32 (128,) descriptor.

        Raises:
            NoFaceFoundError: no box given and the detector found no face.
        """
        image = _check_image(image, "image")
        if box is None:
            box = self._detect_largest(image, upsample)
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"face box must have x2 > x1 and y2 > y1, got {tuple(box)}")
        return self._describe(image, (x1, y1, x2, y2))

    def _detect_largest(self, image: np.ndarray, upsample: int) -> tuple[int, int, int, int]:
        with self._lock:
            dlib = self._ensure_loaded()[0]
            if self._detector is None:
                self._detector = dlib.get_frontal_face_detector()
            rects = list(self._detector(image, int(upsample)))
        if not rects:
            raise NoFaceFoundError(f"no face found in the {image.shape[1]}x{image.shape[0]} image (dlib HOG "
                                   f"detector, upsample {upsample}); pass a face box")
        best = max(rects, key=lambda r: r.width() * r.height())
        return (best.left(), best.top(), best.right(), best.bottom())

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance of two embeddings (see module ``distance``)."""
        return distance(a, b)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """``1 - distance / 1.2`` (see module ``similarity``)."""
        return similarity(a, b)
