"""The metric suite used by training validation and ``evaluate.py``.

``MetricSuite`` takes batches of restored crops and their ground truths (uint8 RGB numpy images, or network
tensors in [-1, 1]) plus, optionally, the person's reference identity embedding, and returns a dict
``name -> MetricValue`` (a float, or ``Unavailable`` with the reason: never a made-up number):

=====================  ======================================================================================
``psnr``, ``psnr_y``    PSNR (dB) on RGB / on BT.601 Y                                  (higher is better)
``ssim``, ``ssim_y``    SSIM on RGB / on Y                                              (higher is better)
``lpips``               LPIPS, AlexNet                                                  (lower is better)
``niqe``                NIQE of the restored crop, no reference                         (lower is better)
``fid``, ``kid``        FID, KID (+ ``kid_std``) between the restored and GT sets       (lower is better)
``fid_num_images``      how many images per set FID/KID used
``id_*_gt``             dlib identity distance / similarity / verified-fraction vs the GT crop
``id_*_ref``            the same vs the person's reference embedding
``mfn_*_gt``, ``_ref``  MobileFaceNet cosine similarity / verified fraction vs GT and vs the reference
``num_images``          restored crops scored
=====================  ======================================================================================

Per-image metrics are averaged over every image given since the last ``reset`` (so results pool across
persons: call ``update`` per person with that person's reference, ``compute`` once); FID/KID are computed once
over the pooled sets. ``evaluate`` is the one-shot form that leaves the pooled state alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from gpen_fewshot.evaluation.distribution import FeatureDistance
from gpen_fewshot.evaluation.fidelity import LPIPSMetric, check_image, niqe, psnr, ssim
from gpen_fewshot.evaluation.identity_metrics import (
    GT_KEYS,
    MFN_GT_KEYS,
    MFN_REF_KEYS,
    REF_KEYS,
    IdentityScorer,
    MobileFaceNetScorer,
)
from gpen_fewshot.evaluation.values import MetricValue, Unavailable, mean_or_unavailable
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD, IdentityEmbedder
from gpen_fewshot.utils.image import tensor_to_image

ALL_METRICS = ("psnr", "psnr_y", "ssim", "ssim_y", "lpips", "niqe", "fid", "identity", "identity_mfn")
# Groups that produce several result keys.
_EXPANDS = {"fid": ("fid", "kid", "kid_std", "fid_num_images"), "identity": GT_KEYS + REF_KEYS,
            "identity_mfn": MFN_GT_KEYS + MFN_REF_KEYS}
_PAIRWISE: dict[str, Callable[..., float]] = {
    "psnr": lambda r, g, b: psnr(r, g, b, y_channel=False),
    "psnr_y": lambda r, g, b: psnr(r, g, b, y_channel=True),
    "ssim": lambda r, g, b: ssim(r, g, b, y_channel=False),
    "ssim_y": lambda r, g, b: ssim(r, g, b, y_channel=True),
}
NO_GT = "no ground truth given"
NO_REFERENCE = "no reference embedding given"

Images = Sequence[np.ndarray] | np.ndarray | torch.Tensor


def as_images(images: Images | None) -> list[np.ndarray] | None:
    """uint8 RGB (H, W, 3) images from a list of them, a uint8 (N, H, W, 3) or (H, W, 3) array, or a float
    tensor (N, 3, H, W) / (3, H, W) in [-1, 1] (network output; converted by
    ``utils.image.tensor_to_image``)."""
    if images is None:
        return None
    if isinstance(images, torch.Tensor):
        batch = images.unsqueeze(0) if images.dim() == 3 else images
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) image tensor in [-1, 1], got {tuple(images.shape)}")
        return [tensor_to_image(item) for item in batch]
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [check_image(images)]  # one (H, W, 3) image
    return [check_image(item) for item in images]


class MetricSuite:
    """Accumulating evaluator of restored face crops (see the module docstring for the result keys).

    Args:
        metrics: which groups to compute, from ``ALL_METRICS``.
        crop_border: pixels ignored at each edge for PSNR / SSIM / NIQE.
        lpips_net: LPIPS network to inject (default: the real one if its AlexNet weights are on disk).
        fid_feature: FID/KID feature extractor to inject (default: the FID Inception if its weights are on
            disk).
        embedder: dlib identity embedder (default: ``IdentityEmbedder()`` for GPEN-template crops).
        download: allow downloading missing LPIPS / Inception weights.
        kid_subset_size: KID subset size (capped at the number of images).
        seed: KID subset sampling seed.
        threshold: same-person distance threshold for the ``id_verified_*`` fractions.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ALL_METRICS,
        crop_border: int = 0,
        lpips_net: nn.Module | None = None,
        fid_feature: nn.Module | None = None,
        embedder: IdentityEmbedder | None = None,
        download: bool = False,
        kid_subset_size: int = 1000,
        seed: int = 0,
        threshold: float = SAME_PERSON_THRESHOLD,
    ) -> None:
        unknown = sorted(set(metrics) - set(ALL_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.metrics = tuple(name for name in ALL_METRICS if name in metrics)
        self.crop_border = int(crop_border)
        self.lpips = LPIPSMetric(lpips_net, download=download) if "lpips" in self.metrics else None
        self.distribution = (FeatureDistance(fid_feature, download=download, kid_subset_size=kid_subset_size,
                                             seed=seed) if "fid" in self.metrics else None)
        self.identity = IdentityScorer(embedder, threshold) if "identity" in self.metrics else None
        template = getattr(embedder, "template", "gpen")
        self.identity_mfn = MobileFaceNetScorer(template) if "identity_mfn" in self.metrics else None
        self.reset()

    @property
    def keys(self) -> tuple[str, ...]:
        """The result keys ``compute`` returns, in order."""
        return tuple(key for name in self.metrics for key in _EXPANDS.get(name, (name,))) + ("num_images",)

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._values: dict[str, list[float]] = {key: [] for key in self.keys}
        self._reasons: dict[str, str] = {}
        self._count = 0
        if self.distribution is not None:
            self.distribution.reset()

    def to(self, device: torch.device | str) -> MetricSuite:
        """Run LPIPS and the FID network on ``device``; returns self."""
        for part in (self.lpips, self.distribution):
            if part is not None:
                part.to(device)
        return self

    @property
    def per_image(self) -> dict[str, list[float]]:
        """Accumulated per-image values of the per-image metrics (copies)."""
        return {key: list(values) for key, values in self._values.items() if values}

    def update(self, restored: Images, gt: Images | None = None, reference: np.ndarray | None = None) -> None:
        """Score a batch and add it to the pool.

        Args:
            restored: restored crops (uint8 RGB (H, W, 3) list/array, or tensor (N, 3, H, W) in [-1, 1]).
            gt: the matching ground-truth crops, same forms and sizes, or None (full-reference metrics are
                then skipped for this batch).
            reference: the person's reference: a dlib (128,) embedding, or a mapping with ``"dlib"`` and
                ``"mobilefacenet"`` embeddings (either may be missing), or None.
        """
        restored_images = as_images(restored)
        gt_images = as_images(gt)
        if gt_images is not None and len(gt_images) != len(restored_images):
            raise ValueError(f"got {len(restored_images)} restored images but {len(gt_images)} ground truths")
        self._pairwise(restored_images, gt_images)
        if self.lpips is not None:
            self._lpips(restored_images, gt_images)
        if "niqe" in self.metrics:
            self._add_each("niqe", [niqe(image, self.crop_border) for image in restored_images])
        references = reference if isinstance(reference, dict) else {"dlib": reference}
        if self.identity is not None:
            self._identity(restored_images, gt_images, references.get("dlib"))
        if self.identity_mfn is not None:
            self._identity_mfn(restored_images, gt_images, references.get("mobilefacenet"))
        if self.distribution is not None:
            self.distribution.update(restored_images, gt_images or [])
        self._count += len(restored_images)

    def compute(self) -> dict[str, MetricValue]:
        """Means of the per-image metrics and FID/KID over everything added since the last ``reset``."""
        results: dict[str, MetricValue] = {}
        for key in self.keys:
            if key in _EXPANDS["fid"] or key == "num_images":
                continue
            results[key] = mean_or_unavailable(self._values[key], self._reasons.get(key, "no images given"))
        if self.distribution is not None:
            results.update(self.distribution.compute())
        results["num_images"] = self._count
        return {key: results[key] for key in self.keys}

    def evaluate(self, restored: Images, gt: Images | None = None,
                 reference: np.ndarray | None = None) -> dict[str, MetricValue]:
        """One-shot ``update`` + ``compute`` on these images only; the pooled state is left untouched."""
        saved = (self._values, self._reasons, self._count, self.distribution)
        try:
            if self.distribution is not None:
                self.distribution = self.distribution.fork()
            self._values, self._reasons, self._count = {key: [] for key in self.keys}, {}, 0
            self.update(restored, gt, reference)
            return self.compute()
        finally:
            self._values, self._reasons, self._count, self.distribution = saved

    # ---------------------------------------------------------------------------------------- per group
    def _add_each(self, key: str, values: Sequence[MetricValue]) -> None:
        for value in values:
            if isinstance(value, Unavailable):
                self._reasons[key] = value.reason
            else:
                self._values[key].append(float(value))

    def _pairwise(self, restored: list[np.ndarray], gt: list[np.ndarray] | None) -> None:
        for name in (n for n in self.metrics if n in _PAIRWISE):
            if gt is None:
                self._reasons[name] = NO_GT
                continue
            fn = _PAIRWISE[name]
            self._values[name].extend(fn(r, g, self.crop_border) for r, g in zip(restored, gt, strict=True))

    def _lpips(self, restored: list[np.ndarray], gt: list[np.ndarray] | None) -> None:
        if gt is None:
            self._reasons["lpips"] = NO_GT
            return
        values = self.lpips(restored, gt)
        if isinstance(values, Unavailable):
            self._reasons["lpips"] = values.reason
        else:
            self._values["lpips"].extend(values)

    def _identity(self, restored: list[np.ndarray], gt: list[np.ndarray] | None,
                  reference: np.ndarray | None) -> None:
        scores = self.identity.score(restored, gt, reference)
        for key in GT_KEYS + REF_KEYS:
            if isinstance(scores, Unavailable):
                self._reasons[key] = scores.reason
            elif key in scores:
                self._values[key].extend(float(v) for v in scores[key])
            else:
                self._reasons[key] = NO_GT if key in GT_KEYS else NO_REFERENCE

    def _identity_mfn(self, restored: list[np.ndarray], gt: list[np.ndarray] | None,
                      reference: np.ndarray | None) -> None:
        scores = self.identity_mfn.score(restored, gt, reference)
        for key in MFN_GT_KEYS + MFN_REF_KEYS:
            if key in scores:
                self._values[key].extend(float(v) for v in scores[key])
            else:
                self._reasons[key] = NO_GT if key in MFN_GT_KEYS else NO_REFERENCE
