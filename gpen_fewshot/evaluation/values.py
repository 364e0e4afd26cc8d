"""Result type of every metric: a number, or ``Unavailable`` with the reason (never a made-up number)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpen_fewshot.utils.jsonfile import jsonable


@dataclass(frozen=True)
class Unavailable:
    """A metric that could not be computed, e.g. ``Unavailable("lpips: needs alexnet-owt-7be5be79.pth ...")``.

    Falsy, so ``if value:`` skips it; ``str()`` gives ``"n/a (<reason>)"`` for reports.
    """

    reason: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


MetricValue = float | Unavailable


def is_available(value: MetricValue) -> bool:
    """True for a number (including inf, e.g. the PSNR of identical images), False for ``Unavailable``."""
    return not isinstance(value, Unavailable)


def mean_or_unavailable(values: list[float], reason: str) -> MetricValue:
    """Mean of ``values`` (inf if any is inf), or ``Unavailable(reason)`` when there are none."""
    if not values:
        return Unavailable(reason)
    return float(sum(values) / len(values))


def to_jsonable(results: Mapping[str, MetricValue]) -> dict[str, float | str | None]:
    """Results as JSON-friendly values: numbers stay numbers (inf -> "inf"), ``Unavailable`` -> its string."""
    return {name: str(value) if isinstance(value, Unavailable) else jsonable(float(value))
            for name, value in results.items()}


def available_only(results: Mapping[str, MetricValue]) -> dict[str, float]:
    """The numeric results only (e.g. for a logger that takes floats)."""
    return {name: float(value) for name, value in results.items() if not isinstance(value, Unavailable)}


def format_results(results: Mapping[str, MetricValue], digits: int = 4) -> str:
    """One line for logs: ``"psnr 24.31 | lpips n/a (lpips: needs ...)"``."""
    parts = []
    for name, value in results.items():
        text = str(value) if isinstance(value, Unavailable) else f"{float(value):.{digits}g}"
        parts.append(f"{name} {text}")
    return " | ".join(parts)
