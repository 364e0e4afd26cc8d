"""Per-photo decisions for a person's photo folder: read, detect, pick the person's face, measure, dedupe.

Every photo ends with exactly one decision: "used" or one of the rejection codes in REJECTIONS. The
steps run in order and each only looks at photos still in the running:

1. bytes: sha256; a byte-identical copy of an earlier file (sorted by name) is a "duplicate";
2. decode (EXIF orientation, gray/RGBA/16-bit/CMYK via ``read_image``) else "unreadable";
3. detect faces, else "no_face";
4. several faces: pick the one whose identity embedding is closest to the faces of the other photos
   (else the largest); the photo stays usable;
5. "too_small": measured eye distance below ``min_face_scale`` x the template's eye distance at the crop
   size (the crop would be upsampled more than 1 / min_face_scale, a soft ground truth);
6. "blurred": variance of the Laplacian of the aligned inner face below ``min_sharpness``;
7. "duplicate": the same picture again (re-encoded, resized, cropped, letterboxed): the registered fine
   detail of the aligned inner faces correlates at least ``duplicate_threshold``
   (``quality.same_picture_score``); the copy with the larger face is kept.

Only step 5 depends on the crop size. The identity embeddings (4), sharpness (6) and same-picture detail (7)
are measured on ``quality.analysis_crop``: the face aligned from the original photo at a fixed scale (50 px
between the eyes), whatever size the training crops have, so a photo gets the same decision for a 32-px
test model as for a 512-px one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gpen_fewshot.faces.alignment import AlignedFace, align_face, template_eye_distance
from gpen_fewshot.faces.detection import Face, FaceDetector
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD
from gpen_fewshot.faces.quality import (
    ANALYSIS_EYE_DISTANCE,
    analysis_crop,
    face_region,
    same_picture_score,
    sharpness,
)
from gpen_fewshot.utils.image import ImageReadError, read_image

REJECTIONS = ("unreadable", "no_face", "too_small", "blurred", "duplicate")
MAX_CANDIDATES = 5  # faces of a group photo compared by identity (largest first)
THUMBNAIL_SIDE = 200
# Photos are vetted and cropped from at most this many pixels (larger JPEGs are decoded at reduced scale):
# far more than any face crop needs, and it keeps a 200-megapixel phone photo within a few hundred MB.
MAX_PHOTO_PIXELS = 40_000_000
_BUFFER_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class VettingSettings:
    """Thresholds of the photo checks (see the module docstring for what each one means)."""

    size: int = 256
    template: str = "gpen"
    min_face_scale: float = 0.5
    min_sharpness: float = 30.0
    duplicate_threshold: float = 0.96
    use_identity: bool = True


@dataclass
class Photo:
    """Working state of one photo while it is vetted (mutable; frozen into a PhotoRecord at the end)."""

    path: Path
    sha256: str | None = None
    size_wh: tuple[int, int] | None = None
    thumbnail: np.ndarray | None = None  # uint8 RGB, longer side THUMBNAIL_SIDE
    faces: list[Face] = field(default_factory=list)
    candidates: list[AlignedFace] = field(default_factory=list)  # aligned crops of faces[:MAX_CANDIDATES]
    analysis: list[np.ndarray] = field(default_factory=list)  # the same faces at the analysis scale (quality)
    embeddings: list[np.ndarray | None] = field(default_factory=list)
    chosen: int | None = None
    decision: str | None = None  # None while still in the running
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    region: np.ndarray | None = None  # inner face of the chosen crop (quality.face_region), for duplicates

    @property
    def active(self) -> bool:
        return self.decision is None

    @property
    def face(self) -> Face | None:
        return None if self.chosen is None else self.faces[self.chosen]

    @property
    def crop(self) -> AlignedFace | None:
        return None if self.chosen is None else self.candidates[self.chosen]

    @property
    def analysis_crop(self) -> np.ndarray | None:
        """The chosen face aligned from the photo at the analysis scale (``quality.analysis_crop``)."""
        return None if self.chosen is None else self.analysis[self.chosen]

    def reject(self, decision: str, reason: str) -> None:
        if decision not in REJECTIONS:
            raise ValueError(f"unknown rejection {decision!r}; expected one of {REJECTIONS}")
        self.decision, self.reason = decision, reason


@dataclass(frozen=True)
class PhotoRecord:
    """The decision about one photo, as stored in manifest.json.

    ``decision`` is "used" or a rejection code ("unreadable", "no_face", "too_small", "blurred",
    "duplicate"); ``split`` is "train"/"holdout" for used photos; ``crop`` is relative to the prepared folder.
    """

    file: str
    sha256: str | None
    decision: str
    reason: str
    split: str | None = None
    crop: str | None = None
    width: int | None = None
    height: int | None = None
    faces_found: int = 0
    face: dict | None = None
    other_boxes: tuple = ()
    measures: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "other_boxes": [list(b) for b in self.other_boxes]}

    @classmethod
    def from_dict(cls, data: dict) -> PhotoRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["other_boxes"] = tuple(tuple(b) for b in values.get("other_boxes", ()))
        return cls(**values)


def to_record(photo: Photo, split: str | None, crop: str | None) -> PhotoRecord:
    """Freeze a vetted photo into its manifest record (``split``/``crop`` set by the caller for used
    photos)."""
    notes = "; ".join(photo.notes)
    if photo.active:
        m = photo.measures
        reason = f"ok: face {m['face_scale']:.2f}x crop scale, sharpness {m['sharpness']:.0f}"
        reason = f"{reason}; {notes}" if notes else reason
    else:
        reason = f"{photo.reason}; {notes}" if notes else photo.reason
    face = photo.face
    return PhotoRecord(
        file=photo.path.name, sha256=photo.sha256, decision=photo.decision or "used", reason=reason,
        split=split, crop=crop, width=photo.size_wh[0] if photo.size_wh else None,
        height=photo.size_wh[1] if photo.size_wh else None, faces_found=len(photo.faces),
        face=face.to_dict() if face is not None else None,
        other_boxes=tuple(tuple(round(float(v), 1) for v in f.box) for f in photo.faces if f is not face),
        measures=dict(photo.measures),
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_photo(path: Path, detector: FaceDetector, settings: VettingSettings, seen: dict[str, str]) -> Photo:
    """Steps 1-3 for one file: hash, decode, detect, align the candidate faces at the crop size and at the
    analysis scale (keeps no full image).

    Args:
        path: the photo.
        detector: face detector.
        settings: crop size and template.
        seen: sha256 -> file name of the photos loaded so far (updated here).
    """
    photo = Photo(path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        photo.reject("unreadable", f"cannot read file: {err.strerror or err}")
        return photo
    photo.sha256 = sha256_bytes(data)
    if photo.sha256 in seen:
        photo.reject("duplicate", f"byte-identical copy of {seen[photo.sha256]}")
        return photo
    seen[photo.sha256] = path.name
    try:
        image = read_image(path, max_pixels=MAX_PHOTO_PIXELS)
    except ImageReadError as err:
        # Pillow names its in-memory buffer ("<_io.BytesIO object at 0x...>"): noise for the user.
        photo.reject("unreadable", _BUFFER_REPR.sub("", str(err).removeprefix(f"{path}: ")))
        return photo
    photo.size_wh = (image.shape[1], image.shape[0])
    photo.thumbnail = _thumbnail(image)
    photo.faces = detector.detect(image)
    if not photo.faces:
        photo.reject("no_face", f"no face found (detector score >= {detector.conf_threshold:g})")
        return photo
    faces = photo.faces[:MAX_CANDIDATES]
    photo.candidates = [align_face(image, face.landmarks, settings.size, settings.template) for face in faces]
    photo.analysis = [analysis_crop(image, face.landmarks, settings.template) for face in faces]
    return photo


def _thumbnail(image: np.ndarray) -> np.ndarray:
    factor = THUMBNAIL_SIDE / max(image.shape[:2])
    if factor >= 1.0:
        return image.copy()
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def embed_candidates(photos: Sequence[Photo], embed: Callable[[np.ndarray], np.ndarray]) -> None:
    """Identity embedding of every candidate face of every active photo (None where it fails), computed on
    the analysis-scale crops (a tiny training crop would embed poorly)."""
    for photo in photos:
        if photo.active:
            photo.embeddings = [_safe_embed(embed, crop) for crop in photo.analysis]


def _safe_embed(embed: Callable[[np.ndarray], np.ndarray], crop: np.ndarray) -> np.ndarray | None:
    try:
        return np.asarray(embed(crop), dtype=np.float64)
    except Exception:  # an embedder failing on one odd crop must not stop the folder
        return None


def choose_faces(photos: Sequence[Photo], threshold: float = SAME_PERSON_THRESHOLD) -> None:
    """Step 4: set ``chosen`` for every active photo; a group photo gets a note saying which face and why.

    A candidate's identity score is the median, over the other photos with faces, of its smallest
    embedding distance to that photo's candidates; the lowest score wins if it is below ``threshold``.
    """
    active = [p for p in photos if p.active]
    for photo in active:
        if len(photo.faces) == 1:
            photo.chosen = 0
            continue
        scores = [_identity_score(photo, i, active) for i in range(len(photo.embeddings))]
        count = f"{len(photo.faces)} faces"
        valid = [(s, i) for i, s in enumerate(scores) if s is not None]
        if not valid:
            photo.chosen = 0
            why = "no identity embeddings to compare" if photo.embeddings else "identity check off"
            photo.notes.append(f"{count}: picked the largest ({why})")
            continue
        best, index = min(valid)
        if best < threshold:
            photo.chosen = index
            others = sorted(s for s, i in valid if i != index)
            next_best = f"; next best {others[0]:.2f}" if others else ""
            photo.notes.append(f"{count}: picked the {_ordinal(index)} by identity (distance {best:.2f} to "
                               f"the other photos{next_best})")
        else:
            photo.chosen = 0
            photo.notes.append(f"{count}: none matches the other photos (best {best:.2f} >= {threshold:g}); "
                               "picked the largest")


def _ordinal(index: int) -> str:
    """0 -> "largest", 1 -> "2nd largest", ..."""
    if index == 0:
        return "largest"
    suffix = {1: "nd", 2: "rd"}.get(index, "th")
    return f"{index + 1}{suffix} largest"


def _identity_score(photo: Photo, index: int, active: Sequence[Photo]) -> float | None:
    if not photo.embeddings or photo.embeddings[index] is None:
        return None
    mine = photo.embeddings[index]
    per_photo = []
    for other in active:
        dists = [float(np.linalg.norm(mine - e)) for e in other.embeddings if e is not None]
        if other is not photo and dists:
            per_photo.append(min(dists))
    return float(np.median(per_photo)) if per_photo else None


def measure_and_filter(photos: Sequence[Photo], settings: VettingSettings) -> None:
    """Steps 5-6: face scale (vs the crop size) and sharpness (at the analysis scale) of each chosen face."""
    template_eye = template_eye_distance(settings.template, settings.size)
    for photo in (p for p in photos if p.active):
        eye = photo.face.eye_distance
        scale = eye / template_eye
        blur = sharpness(photo.analysis_crop, settings.template)
        photo.measures.update(eye_distance=round(eye, 2), face_scale=round(scale, 3),
                              sharpness=round(blur, 1))
        photo.region = face_region(photo.analysis_crop, settings.template)
        if scale < settings.min_face_scale:
            photo.reject("too_small", f"face too small: eyes {eye:.0f} px apart, need >= "
                         f"{settings.min_face_scale * template_eye:.0f} for {settings.size} px crops "
                         f"(would be upsampled {1 / scale:.1f}x)")
        elif blur < settings.min_sharpness:
            upsampled = f"; eyes only {eye:.0f} px apart" if eye < ANALYSIS_EYE_DISTANCE else ""
            photo.reject("blurred", f"blurred: sharpness {blur:.0f} < {settings.min_sharpness:g} "
                         f"(Laplacian variance of the face at {ANALYSIS_EYE_DISTANCE:g} px between the eyes"
                         f"{upsampled})")


def mark_near_duplicates(photos: Sequence[Photo], threshold: float) -> None:
    """Step 7: among active photos, the smaller-face copy of the same picture becomes a "duplicate"."""
    active = sorted((p for p in photos if p.active), key=lambda p: (-p.face.eye_distance, p.path.name))
    kept: list[Photo] = []
    for photo in active:
        match = None
        for other in kept:
            score = same_picture_score(other.region, photo.region)
            if score >= threshold:
                match = (other, score)
                break
        if match is None:
            kept.append(photo)
        else:
            photo.reject("duplicate", f"same picture as {match[0].path.name} (aligned faces correlate "
                         f"{match[1]:.3f} >= {threshold:g}; kept the larger face)")


def annotate_identity(photos: Sequence[Photo], threshold: float = SAME_PERSON_THRESHOLD) -> None:
    """Median identity distance of each used photo's face to the other used photos (a warning, not a
    rejection)."""
    used = [p for p in photos if p.active and p.embeddings and p.embeddings[p.chosen] is not None]
    for photo in used:
        mine = photo.embeddings[photo.chosen]
        dists = [float(np.linalg.norm(mine - o.embeddings[o.chosen])) for o in used if o is not photo]
        if not dists:
            continue
        median = float(np.median(dists))
        photo.measures["identity_distance"] = round(median, 3)
        if median >= threshold:
            photo.notes.append(f"check identity: median distance {median:.2f} to the other photos >= "
                               f"{threshold:g}")
