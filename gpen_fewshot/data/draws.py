"""The seeded degradation draws shared by the evaluation protocol and the training validation set.

A draw's random generator depends only on ``(seed, photo key, level, copy)`` (:func:`sample_rng`), and
:func:`degrade` turns a uint8 ground truth into a uint8 ``(gt, lq)`` pair, so ``evaluate.py``
(:mod:`gpen_fewshot.evaluation.protocol`) and a training run's validation set
(:mod:`gpen_fewshot.data.datamodule`) build bit-identical inputs for the same photo. This module is their one
home; it lives in ``data`` so that the datamodule does not import the evaluation package.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gpen_fewshot.data.degradations import Degradation
from gpen_fewshot.utils.image import to_float, to_uint8


class ProtocolError(ValueError):
    """The evaluation set cannot be built (no held-out photos, unusable folders); the message says why."""


def sample_rng(seed: int, key: str, level: str, copy: int) -> np.random.Generator:
    """The generator of one degradation draw, from ``(seed, photo key, level, copy)`` only."""
    digest = hashlib.sha256(f"{key}\0{level}\0{int(copy)}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int.from_bytes(digest[:16], "little")]))


def degrade(gt: np.ndarray, degradation: Degradation,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw: uint8 RGB (S, S, 3) ground truth -> ``(gt, lq)``, both uint8 RGB (S, S, 3).

    The ground truth comes back too because a degradation model may change it (grayscale pairs).
    """
    new_gt, lq = degradation.pair(to_float(gt), rng)
    if lq.shape != gt.shape:
        raise ProtocolError(f"degradation {degradation!r} changed the size {gt.shape} -> {lq.shape}")
    new_gt = gt if np.array_equal(to_uint8(new_gt), gt) else to_uint8(new_gt)
    return new_gt, to_uint8(lq)
