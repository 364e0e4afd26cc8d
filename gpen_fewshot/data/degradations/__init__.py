"""Random degradation models that turn clean face crops into low-quality inputs.

A degradation is called as ``lq = degradation(img, rng)`` with ``img`` float32 RGB (H, W, 3) in [0, 1] and an
explicit ``np.random.Generator``; ``gt, lq = degradation.pair(img, rng)`` builds a training pair. Build one
with ``build_degradation("moderate")``, ``build_degradation({"kind": "bsrgan", "sf": 2, ...})`` or from a
config dataclass. Per-sample generators: :func:`sample_rng`.
"""

from __future__ import annotations

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
    return IdentityDegradation(config)


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one sample, from a base seed and integer keys (stream, epoch, index, ...).

    The same ``(seed, *keys)`` always gives the same stream, whatever process or worker asks for it, so
    results do not depend on the number of data-loading workers.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))
