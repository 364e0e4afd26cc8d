"""Face detection with facexlib's RetinaFace (ResNet-50 when its weights are present, MobileNet-0.25
otherwise).

facexlib's ``detect_faces`` wants a BGR image; the only RGB -> BGR conversion happens in
:meth:`FaceDetector.detect`. Returned coordinates are pixel-index coordinates of the image passed in.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from gpen_fewshot import weights as registry  # module access: tests stand in for the registry
from gpen_fewshot.utils.image import rgb_to_bgr


@dataclass(frozen=True)
class DetectorSpec:
    """How to build and run one RetinaFace weights file with facexlib's network code.

    Attributes:
        network_name: facexlib ``RetinaFace(network_name=...)``.
        weights_name: name in the weights registry (gpen_fewshot.weights).
        min_sizes: anchor sizes per pyramid level the weights were trained with.
        relu: the weights were trained with plain ReLU where facexlib's network has LeakyReLU(0.1).
        reliable_box: largest face box side (pixels of the image the network sees) the weights localise
            reliably; larger faces are taken from a coarser pass of the image pyramid.
    """

    network_name: str
    weights_name: str
    min_sizes: tuple[tuple[int, int], ...]
    relu: bool
    reliable_box: int


MODELS: dict[str, DetectorSpec] = {
    # Pytorch_Retinaface's ResNet-50 (GPEN's RetinaFace-R50): facexlib's own configuration; trained on
    # 840 px crops with anchors up to 512 px.
    "resnet50": DetectorSpec("resnet50", "RetinaFace-R50", ((16, 32), (64, 128), (256, 512)), False, 400),
    # The bundled file comes from biubug6/Face-Detector-1MB-with-landmark, whose MobileNet-0.25 has the same
    # parameter names as facexlib's but uses ReLU everywhere and smaller anchors (its data/config.py), and is
    # trained on 300 px crops: with facexlib's defaults it returns shifted, oversized boxes; faces larger
    # than ~200 px come back as several high-scoring partial boxes (measured on the demo photos).
    "mobilenet0.25": DetectorSpec(
        "mobile0.25", "retinaface-mobilenet0.25", ((10, 20), (32, 64), (128, 256)), True, 160
    ),
}
NMS_THRESHOLD = 0.4  # RetinaFace's and GPEN's value
# The image pyramid stops at the first pass whose longer side is at most this (large faces fit the anchors).
COARSEST_SIDE = 400
# Detections smaller than this (pixels of their pass) are too coarse to improve a finer pass's landmarks.
MIN_AVERAGED_BOX = 32


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: float (4,) x1, y1, x2, y2 in the original image's pixel coords.
        score: detector confidence in [0, 1].
        landmarks: float (5, 2) left eye, right eye, nose, left mouth corner, right mouth corner
            ("left" = image left), original image pixel coords.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye landmarks in pixels (the face's scale, robust to box looseness)."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def to_dict(self) -> dict:
        """JSON-friendly dict (lists of floats rounded to 0.01 px)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Face:
        """Inverse of :meth:`to_dict`."""
        return cls(
            box=np.asarray(data["box"], dtype=np.float64),
            score=float(data["score"]),
            landmarks=np.asarray(data["landmarks"], dtype=np.float64).reshape(5, 2),
        )


def resolve_model(model: str) -> str:
    """"auto" -> "resnet50" if its weights file is available locally, else "mobilenet0.25" (bundled)."""
    if model == "auto":
        return "resnet50" if registry.is_available(MODELS["resnet50"].weights_name) else "mobilenet0.25"
    if model not in MODELS:
        raise ValueError(f"unknown detector model {model!r}; choose 'auto' or one of {sorted(MODELS)}")
    return model


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a RetinaFace weights file and strip a DataParallel ``module.`` prefix.

    ``weights_only=True`` reads both the zip format and the legacy pickle of the released files (they are
    plain dicts of tensors), so no code from a weights file is ever executed.

    Raises:
        ValueError: the file is not a state dict (message names the file).
    """
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for bad files
        raise ValueError(f"{path}: not a readable RetinaFace weights file ({err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a RetinaFace state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@functools.lru_cache(maxsize=4)
def _load_network(model: str, weights: str) -> torch.nn.Module:
    """Build facexlib's RetinaFace for ``model`` and load ``weights`` strictly (cached: ~0.1-1 s to build)."""
    from facexlib.detection.retinaface import RetinaFace

    spec = MODELS[model]
    net = RetinaFace(network_name=spec.network_name, half=False)
    state = load_state_dict(weights)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights}: does not match RetinaFace({spec.network_name!r}): {err}") from err
    if spec.relu:
        for module in net.modules():
            if isinstance(module, torch.nn.LeakyReLU):
                module.negative_slope = 0.0
    # facexlib reads the anchors from the instance's cfg; give this instance its own copy.
    net.cfg = {**net.cfg, "min_sizes": [list(sizes) for sizes in spec.min_sizes]}
    return net.eval()


class FaceDetector:
    """RetinaFace face detector returning boxes, scores and five landmarks.

    Detection runs on an image pyramid: the image (downscaled so its longer side is at most ``max_side``),
    then halvings down to a longer side of COARSEST_SIDE. Each pass keeps the faces whose boxes are small
    enough for the weights to localise reliably; the coarsest pass keeps all; overlapping detections are
    merged preferring the finest pass (best landmark precision).

    Args:
        model: "auto" (ResNet-50 when "RetinaFace-R50" is available locally, else MobileNet-0.25),
            "resnet50" or "mobilenet0.25".
        conf_threshold: minimum face score.
        max_side: longer side of the finest pass; larger images are downscaled for detection and the
            results mapped back to the original's coordinates.
        weights: explicit weights file, overriding the weights registry (tests, custom files).
    """

    def __init__(
        self,
        model: str = "auto",
        conf_threshold: float = 0.8,
        max_side: int = 1500,
        weights: str | os.PathLike | None = None,
    ) -> None:
        if not 0.0 < conf_threshold < 1.0:
            raise ValueError(f"conf_threshold must be in (0, 1), got {conf_threshold}")
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.model = resolve_model(model)
        self.conf_threshold = float(conf_threshold)
        self.max_side = int(max_side)
        if weights is None:
            weights = registry.weight_path(MODELS[self.model].weights_name, download=False)
        self.weights = Path(weights)
        self._net = _load_network(self.model, str(self.weights))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Find the faces in an image.

        Args:
            image: uint8 (H, W, 3) RGB.

        Returns:
            Faces sorted by box area, largest first (empty list when none).
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
        bgr = rgb_to_bgr(image)  # facexlib's detect_faces expects OpenCV channel order
        passes: list[list[tuple[Face, float]]] = []
        long_side = max(image.shape[:2])
        side = min(long_side, self.max_side)
        while True:
            coarsest = side <= COARSEST_SIDE
            factor = side / long_side
            found = [(f, _box_side(f) * factor) for f in self._detect_at(bgr, factor)]
            if not coarsest:
                found = [(f, px) for f, px in found if px <= MODELS[self.model].reliable_box]
            passes.append(found)
            if coarsest:
                break
            side = max(side // 2, 16)
        faces = _merge_passes([item for found in passes for item in found])
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def _detect_at(self, bgr: np.ndarray, factor: float) -> list[Face]:
        """One network pass on ``bgr`` resized by ``factor``; faces in the original image's coords."""
        small, fx, fy = _resize(bgr, factor)
        with torch.inference_mode():
            raw = self._net.detect_faces(small, conf_threshold=self.conf_threshold,
                                         nms_threshold=NMS_THRESHOLD)
        return [_to_face(row, fx, fy) for row in np.asarray(raw, dtype=np.float64).reshape(-1, 15)]


def _resize(image: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """Shrink by ``factor`` (INTER_AREA; no-op for >= 1); returns the image and the exact x/y factors."""
    if factor >= 1.0:
        return image, 1.0, 1.0
    height, width = image.shape[:2]
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, new_w / width, new_h / height


def _box_side(face: Face) -> float:
    return float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _merge_passes(candidates: list[tuple[Face, float]]) -> list[Face]:
    """Group detections of the same face across pyramid passes and average them.

    ``candidates`` are (face, box side in the pass's pixels), finest pass first and by score within a
    pass. A detection overlapping (IoU > NMS_THRESHOLD) an earlier group's first member joins that group.
    The merged face has the group's best score and the mean box and landmarks of the members at least
    MIN_AVERAGED_BOX px in their pass: single-pass landmarks of the MobileNet model jitter by ~3 px at a
    100 px eye distance (measured across scales on the demo photos); averaging passes reduces that for free.
    """
    groups: list[list[tuple[Face, float]]] = []
    for face, side in candidates:
        group = next((g for g in groups if _iou(face.box, g[0][0].box) > NMS_THRESHOLD), None)
        if group is None:
            groups.append([(face, side)])
        elif side >= MIN_AVERAGED_BOX:
            group.append((face, side))
    merged = []
    for group in groups:
        members = [f for f, _ in group]
        merged.append(
            Face(
                box=np.mean([f.box for f in members], axis=0),
                score=max(f.score for f in members),
                landmarks=np.mean([f.landmarks for f in members], axis=0),
            )
        )
    return merged


def _to_face(row: np.ndarray, fx: float, fy: float) -> Face:
    """facexlib row (x1, y1, x2, y2, score, 5 x (x, y)) on the resized image -> Face in original coords."""
    scale = np.array([fx, fy])
    # Inverse of cv2.resize's pixel-centre mapping x_small = (x + 0.5) * f - 0.5.
    box = ((row[:4].reshape(2, 2) + 0.5) / scale - 0.5).reshape(4)
    landmarks = (row[5:15].reshape(5, 2) + 0.5) / scale - 0.5
    return Face(box=box, score=float(row[4]), landmarks=landmarks)
