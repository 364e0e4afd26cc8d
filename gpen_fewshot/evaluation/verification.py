"""Face-verification pairs (LFW style) and their accuracy: the proof that an identity-network port is right.

A pairs folder holds ``pairs.csv`` (``image_a,image_b,same,reference_cosine``; paths relative to ``images/``;
``same`` is 1 or -1; ``reference_cosine`` optional, the score the original network gave) and ``images/`` with
112 x 112 aligned crops.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpen_fewshot.utils.image import image_to_tensor, read_image


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths, whether they show the same person, the reference score."""

    image_a: Path
    image_b: Path
    same: bool
    reference_cosine: float | None


def read_pairs(folder: str | os.PathLike) -> list[Pair]:
    """Read ``<folder>/pairs.csv``; image paths are resolved under ``<folder>/images``.

    Raises:
        FileNotFoundError: no ``pairs.csv``.
        ValueError: a missing column or a bad ``same`` / ``reference_cosine`` value (row named).
    """
    folder = Path(folder)
    table = folder / "pairs.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no pairs.csv (expected columns "
                                "image_a,image_b,same[,reference_cosine])")
    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pairs = []
    for line, row in enumerate(rows, start=2):
        try:
            same = {"1": True, "-1": False, "0": False}[row["same"].strip()]
            ref = row.get("reference_cosine")
            reference = float(ref) if ref not in (None, "") else None
            pairs.append(Pair(folder / "images" / row["image_a"], folder / "images" / row["image_b"], same,
                              reference))
        except (KeyError, ValueError, AttributeError) as error:
            raise ValueError(f"{table}:{line}: bad row {row} ({error!r})") from None
    if not pairs:
        raise ValueError(f"{table}: no pairs")
    return pairs


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Accuracy of ``score > threshold`` at the best threshold over all midpoints of the sorted scores.

    Args:
        scores: (N,) similarity scores (higher = more alike).
        same: (N,) bool ground truth.

    Returns:
        ``(accuracy, threshold)``.
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accuracies = [float(np.mean((scores > t) == same)) for t in candidates]
    best = int(np.argmax(accuracies))
    return accuracies[best], float(candidates[best])


def embed_images(net: torch.nn.Module, paths: Sequence[Path], channels: str = "rgb", flip: bool = False,
                 batch: int = 64) -> dict[Path, np.ndarray]:
    """Embed each image once: (D,) float64 unit vectors keyed by path.

    Args:
        net: identity network taking (B, 3, 112, 112) RGB in [-1, 1] and returning unit embeddings.
        paths: 112 x 112 aligned crops.
        channels: "rgb", or "bgr" to feed the channels reversed (the convention of some reference scores).
        flip: InsightFace's test-time augmentation: add the mirrored face's embedding, renormalised.
        batch: images per forward pass.
    """
    out: dict[Path, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            chunk = list(paths[start:start + batch])
            images = torch.stack([image_to_tensor(read_image(p)) for p in chunk])
            if channels == "bgr":
                images = images.flip(1)
            emb = net(images)
            if flip:
                emb = torch.nn.functional.normalize(emb + net(images.flip(3)), dim=1)
            out.update(zip(chunk, emb.double().numpy(), strict=True))
    return out


def pair_scores(pairs: Sequence[Pair], embeddings: dict[Path, np.ndarray]) -> np.ndarray:
    """(N,) cosine of each pair's two embeddings."""
    return np.array([float(embeddings[p.image_a] @ embeddings[p.image_b]) for p in pairs])
