"""Synthetic (degraded, clean) pairs for smoke runs, benchmarks and tests: no photos, no face detection.

Clean images are smooth random colour fields (a few Gaussian blobs on a gradient); the degraded image is a
box-blurred, noisy copy. Sample ``k`` is generated from ``np.random.default_rng((seed, k))`` and the training
sampler yields keys ``epoch * length + i``, so data depends only on the position in the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from gpen_fewshot.utils.image import image_to_tensor

_BLOBS = 4


def synthetic_pair(size: int, rng: np.random.Generator, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """One (clean, degraded) pair, float32 HWC RGB in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = rng.uniform(0.2, 0.8, 3)[None, None] + 0.2 * (xx[..., None] - 0.5) * rng.uniform(-1, 1, 3)
    for _ in range(_BLOBS):
        cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        image = image + blob[..., None] * rng.uniform(-0.4, 0.4, 3)
    clean = np.clip(image, 0, 1).astype(np.float32)
    blurred = (clean + np.roll(clean, 1, 0) + np.roll(clean, 1, 1) + np.roll(clean, (1, 1), (0, 1))) / 4
    degraded = np.clip(blurred + rng.normal(0, noise, clean.shape), 0, 1).astype(np.float32)
    return clean, degraded


class SyntheticPairs(Dataset):
    """Key ``k`` -> ``{"lq", "gt": (3, S, S) float [-1, 1], "path": "synthetic/<k>"}``, seeded by ``(seed,
    k)``."""

    def __init__(self, size: int, length: int, seed: int = 0) -> None:
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int) -> dict[str, Any]:
        clean, degraded = synthetic_pair(self.size, np.random.default_rng((self.seed, int(key))))
        return {"lq": image_to_tensor(degraded), "gt": image_to_tensor(clean), "path": f"synthetic/{key}"}


class KeySampler(Sampler[int]):
    """Keys ``epoch * length + i``; Lightning calls ``set_epoch`` at every epoch."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch = length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))

    def __len__(self) -> int:
        return self.length


class SyntheticDataModule(pl.LightningDataModule):
    """Synthetic training / validation pairs.

    Args:
        size: image side in pixels.
        batch_size: training batch size.
        samples_per_epoch: training samples per epoch.
        val_samples: fixed validation samples (seeded apart from training).
        seed: base seed.
        template: reported alignment template (for exports).
        num_workers: DataLoader worker processes.
        val_degradations: accepted so that experiments naming validation levels compose with synthetic data
            (tests); synthetic pairs carry their own single degradation, so the names are recorded, not used.
        augment: accepted for the same reason (experiments that set face augmentations); synthetic pairs are
            not face crops, so it is recorded, not used.
    """

    def __init__(self, size: int = 32, batch_size: int = 2, samples_per_epoch: int = 8, val_samples: int = 2,
                 seed: int = 0, template: str = "gpen", num_workers: int = 0,
                 val_degradations: Sequence[str] = ("synthetic",),
                 augment: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.val_degradations, self.augment = list(val_degradations), dict(augment or {})
        self.size, self.batch_size, self.template, self.num_workers = size, batch_size, template, num_workers
        self.samples_per_epoch, self.val_samples, self.seed = samples_per_epoch, val_samples, seed

    def train_dataloader(self) -> DataLoader:
        dataset = SyntheticPairs(self.size, self.samples_per_epoch, self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=KeySampler(self.samples_per_epoch),
                          drop_last=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        dataset = SyntheticPairs(self.size, self.val_samples, self.seed + 1_000_000)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
