"""Before|after images of a restoration (``--compare``) and where they, and the face pairs, are written."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from gpen_fewshot.restore.records import SKIPPED, RestoreResult
from gpen_fewshot.utils.drawing import label_strip
from gpen_fewshot.utils.image import write_image

GAP = 8  # px of white between the two halves
MIN_LABEL_HEIGHT, MAX_LABEL_HEIGHT = 24, 160


def comparison_path(output_path: str | os.PathLike) -> Path:
    """``<output stem>_compare<ext>`` next to the output (``out.png`` -> ``out_compare.png``)."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}_compare{output_path.suffix}")


def faces_dir(output_path: str | os.PathLike) -> Path:
    """``<output stem>_faces/`` next to the output: the input|restored crop pairs."""
    output_path = Path(output_path)
    return output_path.parent / f"{output_path.stem}_faces"


def side_by_side(before: np.ndarray, after: np.ndarray, labels: tuple[str, str] = ("input", "restored")
                 ) -> np.ndarray:
    """The input left, the restored photo right, each under its label.

    Args:
        before: uint8 (H, W, 3) RGB input; resized (Lanczos, as the background of an upscaled restoration)
            to ``after``'s size when they differ.
        after: uint8 (H', W', 3) RGB restored photo.
        labels: the two captions (any Unicode).

    Returns:
        uint8 (label + H', 2 * W' + GAP, 3) RGB.
    """
    height, width = after.shape[:2]
    if before.shape[:2] != (height, width):
        before = cv2.resize(before, (width, height), interpolation=cv2.INTER_LANCZOS4)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    label_height = int(np.clip(round(width / 28), MIN_LABEL_HEIGHT, MAX_LABEL_HEIGHT))
    strip = label_strip(list(labels), [width + GAP // 2, width + GAP - GAP // 2], label_height)
    return np.concatenate([strip, np.concatenate([before, gap, after], axis=1)], axis=0)


def save_face_pairs(result: RestoreResult, folder: Path) -> None:
    """Write each restored face's aligned input crop next to its result: ``face<NN>_<model>.png`` in
    ``folder`` (the input twice for a face whose input was kept)."""
    for record, (crop, restored) in zip((r for r in result.faces if r.decision != SKIPPED), result.pairs,
                                        strict=False):
        right = restored if restored is not None else crop
        if right.shape != crop.shape:
            right = cv2.resize(right, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LANCZOS4)
        write_image(folder / f"face{record.index:02d}_{record.model or 'input'}.png",
                    np.hstack([crop, right]))
