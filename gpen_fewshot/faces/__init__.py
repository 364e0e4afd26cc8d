"""Faces: detection (RetinaFace), five-point alignment, identity embeddings and paste-back."""

from gpen_fewshot.faces.alignment import (
    TEMPLATES,
    AlignedFace,
    align_face,
    estimate_alignment,
    template_points,
)
from gpen_fewshot.faces.detection import Face, FaceDetector

__all__ = [
    "TEMPLATES",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "align_face",
    "estimate_alignment",
    "template_points",
]
