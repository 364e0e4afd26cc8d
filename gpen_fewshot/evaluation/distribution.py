"""Distribution metrics: FID and KID between restored and ground-truth image sets (torchmetrics' formulas).

Features are extracted once per image (by default the TensorFlow FID Inception, ``inception.py``) and fed to
torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` as precomputed vectors, so both
metrics share one forward pass. ``update`` may be called with many batches (e.g. every person of a benchmark)
and ``compute`` pools them all.

Few images: FID is strongly biased upwards below a few thousand images and its covariance is rank-deficient
below 2048; KID is unbiased, so it is reported beside FID with the number of images used. KID's subset size is
the smaller of ``kid_subset_size`` and the number of images; its random subsets are drawn from a fixed seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gpen_fewshot.evaluation.fidelity import check_image
from gpen_fewshot.evaluation.inception import FID_WEIGHTS, load_fid_inception
from gpen_fewshot.evaluation.values import MetricValue, Unavailable
from gpen_fewshot.weights import WeightsUnavailableError, destination, get_spec


class _Precomputed(nn.Module):
    """Identity 'feature extractor' so torchmetrics accumulates features computed elsewhere."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class FeatureDistance:
    """Pooled FID + KID accumulator.

    Args:
        feature: feature extractor taking float (N, 3, H, W) RGB in [0, 1] and returning (N, D); default:
            the FID Inception-v3 from the "fid-inception" weights (``Unavailable`` results without the file).
        download: fetch the Inception weights when missing (only when ``feature`` is None).
        batch_size: images per feature-extractor forward pass.
        kid_subset_size: KID subset size (capped at the number of images).
        kid_subsets: number of KID subsets.
        seed: seed of KID's subset sampling (results are reproducible).
    """

    def __init__(
        self,
        feature: nn.Module | None = None,
        download: bool = False,
        batch_size: int = 16,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or kid_subset_size < 2 or kid_subsets < 1:
            raise ValueError("need batch_size >= 1, kid_subset_size >= 2, kid_subsets >= 1; got "
                             f"{batch_size}, {kid_subset_size}, {kid_subsets}")
        self._feature = feature.eval() if feature is not None else None
        self.download = download
        self.batch_size = int(batch_size)
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.seed = int(seed)
        self._reason: str | None = None
        self._fid: FrechetInceptionDistance | None = None
        self._kid: KernelInceptionDistance | None = None
        self.num_restored = 0
        self.num_gt = 0

    @property
    def feature(self) -> nn.Module | None:
        """The feature extractor (the default one is loaded on first use), or None when unavailable."""
        if self._feature is None and self._reason is None:
            try:
                self._feature = load_fid_inception(download=self.download)
            except WeightsUnavailableError:
                spec = get_spec(FID_WEIGHTS)
                self._reason = (f"fid/kid: needs {spec.filename} in {destination(spec).parent} "
                                f"(download {spec.url})")
        return self._feature

    def fork(self) -> FeatureDistance:
        """A new, empty accumulator with the same settings sharing this one's (loaded) feature extractor."""
        other = FeatureDistance(self.feature, self.download, self.batch_size, self.kid_subset_size,
                                self.kid_subsets, self.seed)
        other._reason = self._reason
        return other

    def to(self, device: torch.device | str) -> FeatureDistance:
        """Move the feature extractor to ``device`` (features are accumulated on the CPU); returns self."""
        if self.feature is not None:
            self._feature = self.feature.to(device)
        return self

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._fid = self._kid = None
        self.num_restored = self.num_gt = 0

    def update(self, restored: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> None:
        """Add images: restored ones to the 'fake' set, ground truths to the 'real' set.

        Args:
            restored: uint8 RGB (H, W, 3) images (any count; sizes may differ between calls).
            gt: uint8 RGB (H, W, 3) images (need not pair with ``restored``).
        """
        if self.feature is not None:
            for images, real in ((gt, True), (restored, False)):
                for start in range(0, len(images), self.batch_size):
                    features = self.extract(images[start:start + self.batch_size])
                    self._metrics(features.shape[1])
                    self._fid.update(features, real=real)
                    self._kid.update(features, real=real)
        # counted without the feature extractor too: reports still say how many images there were
        self.num_gt += len(gt)
        self.num_restored += len(restored)

    def extract(self, images: Sequence[np.ndarray]) -> Tensor:
        """Features of uint8 RGB images (one size) as float64 (N, D) on the CPU."""
        net = self.feature
        if net is None:
            raise RuntimeError(self._reason or "no feature extractor")
        for image in images:
            check_image(image)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        device = next(net.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            features = net(batch.to(device=device, dtype=torch.float32) / 255.0)
        return features.reshape(len(images), -1).double().cpu()

    def _metrics(self, num_features: int) -> None:
        if self._fid is None:
            self._fid = FrechetInceptionDistance(feature=_Precomputed(num_features))
            with warnings.catch_warnings():
                # KID keeps every feature vector by design; its memory warning is noise at our sizes
                warnings.filterwarnings("ignore", ".*will save all extracted features", UserWarning)
                self._kid = KernelInceptionDistance(
                    feature=_Precomputed(num_features),
                    subsets=self.kid_subsets,
                    subset_size=self.kid_subset_size,
                )

    def compute(self) -> dict[str, MetricValue]:
        """``{"fid", "kid", "kid_std", "fid_num_images"}`` over everything added since the last ``reset``.

        ``fid_num_images`` is the smaller of the two set sizes. FID/KID are ``Unavailable`` without the
        feature extractor or with fewer than 2 images per set.
        """
        count = min(self.num_restored, self.num_gt)
        if self.feature is None:
            reason = self._reason or "fid/kid: no feature extractor"
            return {"fid": Unavailable(reason), "kid": Unavailable(reason), "kid_std": Unavailable(reason),
                    "fid_num_images": count}
        if count < 2:
            reason = f"fid/kid: need at least 2 restored and 2 ground-truth images, got {count}"
            return {"fid": Unavailable(reason), "kid": Unavailable(reason), "kid_std": Unavailable(reason),
                    "fid_num_images": count}
        fid = float(self._fid.compute())
        self._kid.subset_size = min(self.kid_subset_size, count)
        with torch.random.fork_rng(devices=[]):  # KID samples subsets with torch's global generator
            torch.manual_seed(self.seed)
            kid_mean, kid_std = self._kid.compute()
        return {"fid": fid, "kid": float(kid_mean), "kid_std": float(kid_std), "fid_num_images": count}
