"""Random degradation models that turn clean face crops into low-quality inputs.

A degradation is called as ``lq = degradation(img, rng)`` with ``img`` float32 RGB (H, W, 3) in [0, 1] and an
explicit ``np.random.Generator``; ``gt, lq = degradation.pair(img, rng)`` builds a training pair. Build one
with ``build_degradation("moderate")``, ``build_degradation({"kind": "bsrgan", "sf": 2, ...})`` or from a
config dataclass. Per-sample generators: :func:`sample_rng`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpen_fewshot.data.degradations.base import Degradation, IdentityDegradation
from gpen_fewshot.data.degradations.bsrgan import BSRGANDegradation
from gpen_fewshot.data.degradations.config import (
    PRESETS,
    BSRGANConfig,
    DegradationConfig,
    FirstOrderConfig,
    MixtureConfig,
    NoDegradation,
    config_from_dict,
    config_to_dict,
    get_preset,
    resolve_config,
)
from gpen_fewshot.data.degradations.first_order import FirstOrderDegradation

__all__ = [
    "PRESETS",
    "BSRGANConfig",
    "BSRGANDegradation",
    "Degradation",
    "DegradationConfig",
    "FirstOrderConfig",
    "FirstOrderDegradation",
    "IdentityDegradation",
    "MixtureConfig",
    "MixtureDegradation",
    "NoDegradation",
    "build_degradation",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
    "resolve_config",
    "sample_rng",
]


def build_degradation(config: str | Mapping[str, Any] | DegradationConfig) -> Degradation:
    """The degradation described by a preset name, a mapping with a ``kind`` key, or a config dataclass."""
    config = resolve_config(config)
    if isinstance(config, BSRGANConfig):
        return BSRGANDegradation(config)
    if isinstance(config, FirstOrderConfig):
        return FirstOrderDegradation(config)
    if isinstance(config, MixtureConfig):
        return MixtureDegradation(config)
    return IdentityDegradation(config)


class MixtureDegradation(Degradation):
    """Draws one preset per sample (probabilities from the config's weights) and applies it."""

    def __init__(self, config: MixtureConfig) -> None:
        self.config = config
        self.components = [build_degradation(dataclasses.replace(get_preset(name), scale=config.scale))
                           for name in config.presets]
        weights = np.asarray(config.weights, dtype=np.float64)
        self.probabilities = weights / weights.sum()

    def _pick(self, rng: np.random.Generator) -> Degradation:
        return self.components[int(rng.choice(len(self.components), p=self.probabilities))]

    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """See :meth:`Degradation.__call__`."""
        return self._pick(rng).degrade(img, rng)

    def degrade_pair(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The chosen preset's pair (some presets change the ground truth too)."""
        return self._pick(rng).degrade_pair(img, rng)


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one sample, from a base seed and integer keys (stream, epoch, index, ...).

    The same ``(seed, *keys)`` always gives the same stream, whatever process or worker asks for it, so
    results do not depend on the number of data-loading workers.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))
