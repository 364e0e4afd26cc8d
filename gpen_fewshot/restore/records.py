"""Per-face decisions and the per-photo result of a restoration (also written as the JSON sidecar)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEPT_INPUT = "kept input"
RESTORED = "restored"
SKIPPED = "skipped"
NO_PERSONS = "no persons registered"  # route reason of a base-only run (not repeated on the console)


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

    def summary(self, base_label: str = "base") -> str:
        """One line for the console: ``face 3: restored with gpen-compact-256 (base)``.

        Args:
            base_label: what to call the base model (its weights name).
        """
        return f"face {self.index}: {self.outcome(base_label)}"

    def outcome(self, base_label: str = "base") -> str:
        """What happened to the face, without its index (the console groups faces with the same outcome)."""
        if self.decision == SKIPPED:
            return f"skipped: {self.note}"
        failed = [g for g in self.guard if not g.passed]
        rejected = ("; identity guard rejected " + ", ".join(f"{_step(g, base_label)} (drift {_fmt(g.drift)})"
                                                             for g in failed)) if failed else ""
        if self.decision == KEPT_INPUT:
            return f"kept the input face ({self.note}){rejected}"
        why = "" if self.route_reason in ("", NO_PERSONS) else self.route_reason
        if self.model == "base":
            used = f"{base_label} (base{'; ' + why if why else ''})"
        else:
            base_weights = " = its base weights" if self.strength_used == 0 else ""
            used = f"{self.model} at strength {self.strength_used:g}{base_weights}" + (
                f" ({why})" if why else ""
            )
        return f"restored with {used}{rejected}"
def _step(step: GuardStep, base_label: str) -> str:
    return f"{base_label} (base)" if step.model == "base" else f"{step.model} at strength {step.strength:g}"


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
