"""Batched restoration of the faces of a photo with the identity guard.

Every face has a ladder of (model, strength) steps: a person's weights at the requested strength, then halved
strengths down to ``min_strength``, then strength 0 (the person's base weights); faces routed to the base
have the single step (base, 0). A step's result is accepted when the identity drift (distance between the
embeddings of the restored crop and of the input crop it came from) is at most the threshold; otherwise the
face moves to its next step. A face whose ladder runs out keeps its input (nothing is pasted), as
ModelScope's GPEN deployment does. All faces at the same (model, strength) run together in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from gpen_fewshot.faces.alignment import AlignedFace, align_face
from gpen_fewshot.restore.models import FaceModel, run_model
from gpen_fewshot.restore.records import KEPT_INPUT, RESTORED, FaceRecord, GuardStep
from gpen_fewshot.restore.routing import euclidean

log = logging.getLogger(__name__)

Step = tuple[FaceModel, float]
Progress = Callable[[int, int], None]


class Job:
    """One face in progress: its source, crops per geometry, model ladder and result.

    Args:
        record: the face's record (updated in place).
        source: uint8 (H, W, 3) RGB photo (or the aligned crop itself when ``landmarks`` is None).
        landmarks: (5, 2) landmarks in ``source`` pixels, or None for an already aligned crop.
    """

    def __init__(self, record: FaceRecord, source: np.ndarray, landmarks: np.ndarray | None) -> None:
        self.record = record
        self.source = source
        self.landmarks = landmarks
        self.model: FaceModel | None = None
        self.steps: list[Step] = []
        self.step = 0
        self.output: np.ndarray | None = None
        self.output_model: FaceModel | None = None
        self._aligned: dict[tuple[int, str], AlignedFace] = {}
        self._embeddings: dict[tuple[int, str], np.ndarray | None] = {}

    def aligned(self, size: int | None = None, template: str | None = None) -> AlignedFace:
        """Aligned crop + transforms at a geometry (default: the model that produced the output)."""
        model = self.output_model or self.model
        key = (size or model.size, template or model.template)
        if self.landmarks is None:
            raise ValueError("an already aligned input has no transforms")
        if key not in self._aligned:
            self._aligned[key] = align_face(self.source, self.landmarks, key[0], key[1])
        return self._aligned[key]

    def embedding(self, size: int, template: str, runner: GuardedRunner) -> np.ndarray | None:
        """Identity embedding of the input crop at a geometry (computed once)."""
        key = (size, template)
        if key not in self._embeddings:
            self._embeddings[key] = runner.embed(self.crop(size, template), template)
        return self._embeddings[key]

    def crop(self, size: int, template: str) -> np.ndarray:
        """uint8 (size, size, 3) RGB input crop for a model geometry."""
        if self.landmarks is not None:
            return self.aligned(size, template).crop
        if self.source.shape[:2] == (size, size):
            return self.source
        shrink = self.source.shape[0] > size
        return cv2.resize(self.source, (size, size),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class GuardedRunner:
    """Runs jobs through their model ladders in batches, checking identity drift after each step.

    Args:
        base: the base model (last resort for models without strength support).
        embedder_for: template -> identity embedder for crops of that template (``embed(crop) -> (128,)``,
            optional ``distance(a, b)``), or None: no embeddings, no guard.
        device: torch device.
        batch_size: crops per forward pass.
        precision: "fp32", "bf16" or "fp16" (``models.run_model``).
        threshold: maximum accepted identity drift; None disables the guard.
        min_strength: weakest non-zero strength tried before strength 0.
    """

    def __init__(self, base: FaceModel, embedder_for: Callable[[str], Any] | None, device: torch.device,
                 batch_size: int, precision: str, threshold: float | None, min_strength: float) -> None:
        self.base = base
        self.embedder_for = embedder_for
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.threshold = threshold
        self.min_strength = min_strength

    @property
    def enabled(self) -> bool:
        """Whether identity embeddings are available."""
        return self.embedder_for is not None

    def embed(self, crop: np.ndarray, template: str) -> np.ndarray | None:
        """Identity embedding of an aligned crop, or None (no embedder, or the crop is unusable)."""
        embedder = self.embedder_for(template) if self.embedder_for is not None else None
        if embedder is None:
            return None
        try:
            embedding = embedder.embed(crop)
        except (ValueError, RuntimeError) as err:
            log.debug("no identity embedding: %s", err)
            return None
        if embedding is None:
            return None
        embedding = np.asarray(embedding, dtype=np.float64)
        return embedding if np.isfinite(embedding).all() else None

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance (the embedder's, else euclidean)."""
        fn = getattr(self.embedder_for("gpen"), "distance", None) if self.embedder_for is not None else None
        return float(fn(a, b)) if fn is not None else euclidean(a, b)

    def ladder(self, model: FaceModel, strength: float) -> list[Step]:
        """The (model, strength) steps tried for a face routed to ``model``."""
        if model is self.base:
            return [(model, 0.0)]
        if not model.supports_strength:
            return [(model, 1.0), (self.base, 0.0)]
        if strength == 0.0:
            return [(model, 0.0)]
        steps = [float(strength)]
        while steps[-1] / 2 >= self.min_strength - 1e-12:
            steps.append(steps[-1] / 2)
        return [(model, s) for s in steps] + [(model, 0.0)]

    def run(self, jobs: Sequence[Job], strength: float, progress: Progress | None = None) -> None:
        """Restore every job (sets ``job.output`` / ``job.output_model`` and the records).

        Args:
            jobs: the faces.
            strength: requested strength for faces routed to a person.
            progress: called as ``progress(finished, total)`` after every batch (faces whose result is final).
        """
        for job in jobs:
            job.steps = self.ladder(job.model, strength)
            job.record.strength_requested = 0.0 if job.model is self.base else float(strength)
        active, finished = list(jobs), [0]

        def report(count: int) -> None:
            finished[0] += count
            if progress is not None:
                progress(finished[0], len(jobs))

        report(0)
        while active:
            groups: dict[tuple[int, float], list[Job]] = {}
            for job in active:
                model, step_strength = job.steps[job.step]
                groups.setdefault((id(model), step_strength), []).append(job)
            active = []
            for members in groups.values():
                for start in range(0, len(members), self.batch_size):
                    batch = members[start : start + self.batch_size]
                    retry = self._run_group(batch)
                    active.extend(retry)
                    report(len(batch) - len(retry))

    def _run_group(self, jobs: list[Job]) -> list[Job]:
        """Run one (model, strength) group; returns the jobs that move on to their next step."""
        model, strength = jobs[0].steps[jobs[0].step]
        fn = model.get(strength, self.device)
        crops = [job.crop(model.size, model.template) for job in jobs]
        outputs = run_model(fn, crops, self.device, self.batch_size, self.precision)
        retry = []
        for job, out in zip(jobs, outputs, strict=True):
            if self._accept(job, model, strength, out):
                job.output, job.output_model = out, model
                job.record.model, job.record.strength_used, job.record.decision = (
                    model.name, strength, RESTORED)
                continue
            job.step += 1
            if job.step < len(job.steps):
                retry.append(job)
            else:
                job.record.decision = KEPT_INPUT
                job.record.note = f"identity drift above {self.threshold:g} at every strength"
        return retry

    def _accept(self, job: Job, model: FaceModel, strength: float, out: np.ndarray) -> bool:
        if self.threshold is None or not self.enabled:
            return True
        reference = job.embedding(model.size, model.template, self)
        if reference is None:
            job.record.note = "identity guard skipped: no identity embedding of the input face"
            return True
        restored = self.embed(out, model.template)
        drift = None if restored is None else self.distance(reference, restored)
        passed = drift is not None and drift <= self.threshold
        job.record.guard.append(GuardStep(model.name, strength, drift, passed))
        return passed
