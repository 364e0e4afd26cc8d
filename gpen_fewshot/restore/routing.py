"""Which weights restore which face: identity matching against the registered persons' reference embeddings.

Each person is assigned to at most one face per photo (a person is in a photo once): the (face, person) pairs
below the threshold are taken greedily in order of increasing distance. Faces without a match go to the base.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DistanceFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Route:
    """The routing decision for one face.

    Attributes:
        person: the chosen person's name, or None for the base model.
        distance: identity distance to the chosen person (or to the closest one when routed to the base);
            None when no distance could be computed.
        candidates: distance to every registered person.
        reason: one line explaining the decision.
    """

    person: str | None
    distance: float | None
    candidates: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def euclidean(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two embeddings (dlib's identity distance)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def route_faces(
    embeddings: Sequence[np.ndarray | None],
    references: Mapping[str, np.ndarray],
    threshold: float,
    distance: DistanceFn = euclidean,
) -> list[Route]:
    """Match every face of one photo to a registered person or the base.

    Args:
        embeddings: per face, its identity embedding (128,) or None when it could not be computed.
        references: person name -> reference embedding (128,).
        threshold: same person when distance < threshold.
        distance: embedding distance function.

    Returns:
        One ``Route`` per face, same order.
    """
    table = [
        {name: distance(emb, ref) for name, ref in references.items()} if emb is not None else {}
        for emb in embeddings
    ]
    pairs = sorted((d, i, name) for i, row in enumerate(table) for name, d in row.items() if d < threshold)
    assigned: dict[int, str] = {}
    taken: set[str] = set()
    for _, i, name in pairs:
        if i not in assigned and name not in taken:
            assigned[i] = name
            taken.add(name)
    return [_route(table[i], assigned.get(i), embeddings[i] is None, references, threshold)
            for i in range(len(embeddings))]


def _route(row: dict[str, float], person: str | None, no_embedding: bool,
           references: Mapping[str, np.ndarray], threshold: float) -> Route:
    rounded = {k: round(v, 4) for k, v in row.items()}
    if person is not None:
        return Route(person, row[person], rounded, f"identity distance {row[person]:.3f} < {threshold:.2f}")
    if not references:
        return Route(None, None, rounded, "no registered person has a reference embedding")
    if no_embedding:
        return Route(None, None, rounded, "no identity embedding for this face (too small or not frontal)")
    closest = min(row, key=row.get)
    if row[closest] < threshold:
        return Route(None, row[closest], rounded,
                     f"{closest} ({row[closest]:.3f}) is assigned to a closer face in this photo")
    return Route(None, row[closest], rounded,
                 f"no person within {threshold:.2f} (closest: {closest} at {row[closest]:.3f})")


def forced_routes(count: int, person: str) -> list[Route]:
    """Every face to ``person`` (``--weights``: no identity matching)."""
    return [Route(person, None, {}, "forced by --weights") for _ in range(count)]
