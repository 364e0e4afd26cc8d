"""Validation bookkeeping: per-image metrics of the EMA generator and the LQ | restored | GT sample grid.

PSNR / SSIM are the evaluation suite's (``gpen_fewshot.evaluation.fidelity``: BasicSR's implementations on
uint8 RGB, the numbers ``evaluate.py`` reports). Identity, when enabled: the dlib distance of each restored
face to its ground truth (``id_distance_gt``, lower is better; ``id_verified_gt`` = fraction below 0.6), and
the cosine similarity of the identity-loss network (``identity_<network>``, e.g. ``identity_mobilefacenet``: a
metric the run trains on, so it flatters the run) when that network is loaded.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from gpen_fewshot.evaluation.fidelity import psnr, ssim
from gpen_fewshot.evaluation.identity_metrics import IdentityScorer
from gpen_fewshot.faces.identity import IdentityEmbedder
from gpen_fewshot.utils.image import tensor_to_image

log = logging.getLogger(__name__)
_DLIB_KEYS = ("id_distance_gt", "id_verified_gt")


def _identity_scorer(enabled: bool, template: str = "gpen") -> object | None:
    """dlib scorer for crops aligned with ``template`` (its face box depends on it); None when
    off/unavailable."""
    if not enabled:
        return None

    scorer = IdentityScorer(IdentityEmbedder(template=template))
    reason = scorer.unavailable_reason()
    if reason:
        log.warning("validation identity metric disabled: %s", reason)
        return None
    return scorer


class ValidationAccumulator:
    """Collects per-image metrics and the first ``num_samples`` (LQ, restored, GT) triplets of an epoch.

    Args:
        num_samples: rows of the sample grid.
        arcface: optional ``IdentityLoss``; adds ``identity_<network>`` (mean cosine similarity to the GT).
        dlib_identity: add the dlib identity distance to the ground truth (``id_distance_gt``).
        template: alignment template of the validation crops (where dlib looks for the face).
    """

    def __init__(self, num_samples: int, arcface: nn.Module | None = None, dlib_identity: bool = False,
                 template: str = "gpen") -> None:
        self.num_samples = num_samples
        self.arcface = arcface
        self.template = template
        self._dlib_enabled = dlib_identity
        self._scorer: object | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything collected."""
        self._values: dict[str, list[float]] = {}
        self._grouped: dict[str, list[float]] = {}
        self._rows: list[np.ndarray] = []
        self.count = 0

    def _add(self, name: str, values: list[float], groups: list[str] | None) -> None:
        self._values.setdefault(name, []).extend(values)
        for value, group in zip(values, groups or (), strict=False):
            self._grouped.setdefault(f"{name}_{group}", []).append(value)

    @torch.no_grad()
    def update(self, lq: Tensor, restored: Tensor, gt: Tensor, groups: list[str] | None = None) -> None:
        """Add a batch; tensors (B, 3, S, S) float RGB in [-1, 1]. ``groups`` (one label per image, e.g. the
        degradation preset) adds per-group means ``<metric>_<group>``."""
        images = {name: [tensor_to_image(t[i].float().clamp(-1, 1).cpu()) for i in range(t.shape[0])]
                  for name, t in (("lq", lq), ("restored", restored), ("gt", gt))}
        pairs = list(zip(images["restored"], images["gt"], strict=True))
        self._add("psnr", [psnr(r, g) for r, g in pairs], groups)
        self._add("ssim", [ssim(r, g) for r, g in pairs], groups)
        self._add_identity(restored, gt, images, groups)
        self.count += len(pairs)
        for row in zip(images["lq"], images["restored"], images["gt"], strict=True):
            if len(self._rows) < self.num_samples:
                self._rows.append(np.concatenate(row, axis=1))

    def _add_identity(self, restored: Tensor, gt: Tensor, images: dict[str, list[np.ndarray]],
                      groups: list[str] | None) -> None:
        if self.arcface is not None:
            similarity = [1.0 - float(self.arcface(restored[i:i + 1].float(), gt[i:i + 1].float()))
                          for i in range(restored.shape[0])]
            name = getattr(self.arcface, "network_name", "arcface")
            self._add(f"identity_{name}", similarity, groups)
        if self._dlib_enabled and self._scorer is None:
            self._scorer = _identity_scorer(True, self.template)
            self._dlib_enabled = self._scorer is not None
        if self._scorer is not None:
            scores = self._scorer.score(images["restored"], images["gt"])
            if isinstance(scores, dict):
                for key in _DLIB_KEYS:
                    self._add(key, [float(v) for v in scores[key]], groups)

    def compute(self, per_group: bool = True) -> dict[str, float]:
        """Mean of every metric over the images seen (empty dict when nothing was seen), and per group."""
        means = {name: float(np.mean(values)) for name, values in self._values.items() if values}
        if per_group:
            means.update({name: float(np.mean(values)) for name, values in sorted(self._grouped.items())})
        return means

    def grid(self) -> np.ndarray | None:
        """uint8 RGB (rows * S, 3 * S, 3) grid: one row per sample, columns LQ | restored | GT."""
        if not self._rows:
            return None
        return np.concatenate(self._rows, axis=0)
