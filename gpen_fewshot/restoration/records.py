"""Per-face decisions and the per-photo result of a restoration (also written as the JSON sidecar)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEPT_INPUT = "kept input"
RESTORED = "restored"
SKIPPED = "skipped"


@dataclass
class GuardStep:
    """One identity-guard check: the model/strength tried and the identity drift it produced."""

    model: str
    strength: float
    drift: float | None
    passed: bool

    def to_dict(self) -> dict:
        drift = None if self.drift is None else round(self.drift, 4)
        return {"model": self.model, "strength": self.strength, "drift": drift, "passed": self.passed}


@dataclass
class FaceRecord:
    """What happened to one detected face (filled in as the pipeline runs).

    Attributes:
        index: position in the detector's list (largest face first).
        box: x1, y1, x2, y2 in input-image pixels.
        score: detector confidence.
        person: the person the face was matched to, or None (base).
        distance: identity distance to the matched (or closest) person.
        candidates: identity distance to every registered person.
        route_reason: why this person / the base was chosen.
        model: the model finally used ("base" or a person's name); None when nothing was pasted.
        strength_requested: the strength asked for (0 for base faces).
        strength_used: the strength of the pasted result (0 = base weights), None when nothing was pasted.
        guard: the identity-guard checks, in order.
        decision: "restored", "kept input" or "skipped".
        note: extra explanation (why skipped / why the input was kept).
    """

    index: int
    box: list[float]
    score: float
    person: str | None = None
    distance: float | None = None
    candidates: dict[str, float] = field(default_factory=dict)
    route_reason: str = ""
    model: str | None = None
    strength_requested: float = 0.0
    strength_used: float | None = None
    guard: list[GuardStep] = field(default_factory=list)
    decision: str = RESTORED
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        return {
            "index": self.index,
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "person": self.person,
            "model": self.model,
            "distance": None if self.distance is None else round(self.distance, 4),
            "candidates": self.candidates,
            "route_reason": self.route_reason,
            "strength_requested": self.strength_requested,
            "strength_used": self.strength_used,
            "guard": [g.to_dict() for g in self.guard],
            "decision": self.decision,
            "note": self.note,
        }

    def summary(self) -> str:
        """One line for the console."""
        box = ",".join(f"{v:.0f}" for v in self.box)
        head = f"face {self.index} (box {box})"
        if self.decision == SKIPPED:
            return f"{head}: skipped ({self.note})"
        who = self.person if self.person is not None else "base"
        line = f"{head}: {who} [{self.route_reason}]"
        failed = [g for g in self.guard if not g.passed]
        if failed:
            tried = ", ".join(f"{_step(g)}: drift {_fmt(g.drift)}" for g in failed)
            line += f"; identity guard rejected {tried}"
        if self.decision == KEPT_INPUT:
            return line + f"; kept the input face ({self.note})"
        return line + f"; restored with {self.model} at strength {self.strength_used:g}"


def _step(step: GuardStep) -> str:
    return step.model if step.model == "base" else f"{step.model} at strength {step.strength:g}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass
class RestoreResult:
    """The restored photo and what happened to each face.

    Attributes:
        image: uint8 (H*scale, W*scale, 3) RGB output.
        faces: one record per detected face (largest first).
        pairs: (aligned input crop, restored crop or None) uint8 RGB per face, for ``--save-faces``.
        input_size: (H, W) of the input.
        scale: output / input size factor.
        info: extra facts for the sidecar (models, thresholds, background upscaler).
    """

    image: np.ndarray
    faces: list[FaceRecord]
    pairs: list[tuple[np.ndarray, np.ndarray | None]]
    input_size: tuple[int, int]
    scale: int
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON sidecar content."""
        return {
            "input_size": list(self.input_size),
            "output_size": list(self.image.shape[:2]),
            "scale": self.scale,
            **self.info,
            "faces": [f.to_dict() for f in self.faces],
        }
