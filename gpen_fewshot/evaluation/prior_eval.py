"""A face prior on the held-out faces of its own pretraining data, against the bicubic baseline.

- **Faces**: exactly the crops ``FacesFolderDataModule`` holds out for validation (same folders, size,
  template, ``val_count`` and cache): the selection calls the datamodule itself.
- **Inputs**: per face, level (degradation preset) and copy ``k``, the preset is run with its output scale set
  to its scale factor ``sf`` (BSRGAN presets: mild 1, moderate 2, severe 4), which gives the low-resolution
  image (``S / sf``); that image upsampled back to ``S`` with bicubic interpolation (cv2.INTER_CUBIC) and
  quantised to uint8 is both the **bicubic baseline** and the **models' input**, so "beats bicubic" means
  the network improved the very image it was given. The random generator is the evaluation protocol's
  ``sample_rng(seed, sha256 of the crop, level, k)``: the key the datamodule's validation set uses for these
  crops, so the low-resolution image is the one behind the training run's ``val/psnr`` input (same seed and
  copy). That input resizes back with a random bilinear/bicubic interpolation; where the draw picked bicubic
  it is bit-identical to ours (the LR image is already on the uint8 grid after the preset's final JPEG).
  Presets without a fixed scale factor (``first_order``, ``none``) are used at full size as they are.
- **Scores** per image: PSNR (RGB and BT.601 Y), SSIM (RGB), dlib identity distance to the ground truth
  (``IdentityScorer``: the project's fixed face box on aligned crops, so every crop has an embedding), and
  whether dlib's own HOG detector finds a face in the image (counted and reported, never used to drop one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpen_fewshot.data.datamodule import FacesFolderDataModule
from gpen_fewshot.data.degradations import BSRGANConfig, Degradation, build_degradation, get_preset
from gpen_fewshot.data.degradations.primitives import resize
from gpen_fewshot.evaluation.fidelity import psnr, ssim
from gpen_fewshot.evaluation.identity_metrics import IdentityScorer
from gpen_fewshot.evaluation.protocol import read_crop, sample_rng
from gpen_fewshot.evaluation.values import Unavailable
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD, IdentityEmbedder
from gpen_fewshot.utils.hashing import sha256_file
from gpen_fewshot.utils.image import to_float, to_uint8

BICUBIC = "bicubic"
GROUND_TRUTH = "ground truth"
SCORES = ("psnr", "psnr_y", "ssim", "id_distance", "dlib_face")
HOG_SIDE = 512  # dlib's HOG detector misses faces under ~80 px: upsample crops until they are this large


# ------------------------------------------------------------------------------------------ the faces
def _faces_dir_arg(dirs: list[Path], cache_dir: Path | None, size: int, template: str) -> Path | list[Path]:
    """The ``faces_dir`` the training run most likely got: a list for several folders; for one folder, a
    one-element list only when its cache sits in the per-folder layout that a list produces."""
    if len(dirs) > 1:
        return dirs
    if cache_dir is not None:
        flat = cache_dir / f"{size}_{template}" / "manifest.json"
        per_folder = cache_dir / dirs[0].name / f"{size}_{template}" / "manifest.json"
        if not flat.is_file() and per_folder.is_file():
            return dirs
    return dirs[0]


def held_out_crops(faces_dirs: Sequence[str | Path], size: int = 256, template: str = "gpen",
                   val_count: int = 200, cache_dir: str | Path | None = None) -> list[Path]:
    """The crops ``FacesFolderDataModule`` holds out for validation with these arguments (its own split).

    Args:
        faces_dirs: the photo folders given to pretraining (``data.faces_dir``).
        size, template, val_count, cache_dir: as given to pretraining (``data.*``).

    Returns:
        Paths of the held-out aligned uint8 RGB PNG crops, in the validation set's order. Preparing is
        cached: with the training run's cache nothing is detected again.

    Raises:
        ValueError: no folder, or too few crops to hold ``val_count`` out (the datamodule's message).
    """

    dirs = [Path(d) for d in faces_dirs]
    if not dirs:
        raise ValueError("held_out_crops needs at least one faces folder")
    cache = Path(cache_dir) if cache_dir is not None else None
    module = FacesFolderDataModule(_faces_dir_arg(dirs, cache, size, template), size=size, template=template,
                                   val_count=val_count, cache_dir=cache)
    return module.resolve_crops()[1]


# ----------------------------------------------------------------------------------------- the inputs
def lr_factor(level: str) -> int:
    """The preset's degradation scale factor (BSRGAN ``sf``); 1 for presets without a fixed one."""
    config = get_preset(level)
    return config.sf if isinstance(config, BSRGANConfig) else 1


def baseline_description(level: str, size: int) -> str:
    """One line saying how the bicubic baseline (= the models' input) of ``level`` is made."""
    factor = lr_factor(level)
    if factor == 1:
        return (f"{level}: degraded at full size ({size} px; the preset has scale factor 1), so the "
                "bicubic baseline is the degraded image itself")
    return (f"{level}: degraded to {size // factor} px (sf={factor}), upsampled x{factor} to {size} px "
            "with bicubic interpolation (cv2.INTER_CUBIC)")


def lr_degradation(level: str) -> Degradation:
    """The preset with its output kept at low resolution (``scale = sf``)."""
    config = get_preset(level)
    factor = lr_factor(level)
    return build_degradation(dataclasses.replace(config, scale=factor) if factor > 1 else config)


def degrade_to_bicubic(gt: np.ndarray, degradation: Degradation, rng: np.random.Generator,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One draw: ground truth -> ``(gt, lr, bicubic)``.

    Args:
        gt: uint8 RGB (S, S, 3) clean crop.
        degradation: from :func:`lr_degradation` (output ``S / scale``).
        rng: the draw's generator (consumed exactly as the same-size preset consumes it up to its resize
            back).

    Returns:
        ``gt`` uint8 RGB (S, S, 3) (a new array only if the degradation changes it, e.g. grayscale pairs),
        ``lr`` uint8 RGB (S / scale, S / scale, 3), ``bicubic`` uint8 RGB (S, S, 3).
    """
    new_gt, lr = degradation.pair(to_float(gt), rng)
    new_gt = gt if np.array_equal(to_uint8(new_gt), gt) else to_uint8(new_gt)
    lr_u8 = to_uint8(lr)
    # the same resize (cv2 bicubic + clip) as the preset's own resize back, on the uint8 LR image
    bicubic = to_uint8(resize(to_float(lr_u8), new_gt.shape[:2], "bicubic"))
    return new_gt, lr_u8, bicubic


@dataclass(frozen=True)
class Sample:
    """One input: face ``face`` (crop file name) degraded at ``level``, draw ``copy``."""

    face: str
    level: str
    copy: int


@dataclass
class InputSet:
    """Inputs in (face, level, copy) order; the image lists are aligned with ``samples``.

    Attributes:
        samples: one entry per degraded input.
        gt: uint8 RGB (S, S, 3) ground truths.
        bicubic: uint8 RGB (S, S, 3) bicubic baselines (the models' inputs).
        lr_sizes: per level, the side of its low-resolution images.
    """

    samples: list[Sample]
    gt: list[np.ndarray]
    bicubic: list[np.ndarray]
    lr_sizes: dict[str, int]

    def indices(self, level: str) -> list[int]:
        """Sample indices at ``level``."""
        return [i for i, s in enumerate(self.samples) if s.level == level]


def build_inputs(crops: Sequence[Path], size: int, levels: Sequence[str], copies: int = 1,
                 seed: int = 0) -> InputSet:
    """Degrade every crop at every level ``copies`` times (deterministic, see the module docstring)."""
    if not crops or not levels or copies < 1:
        raise ValueError("build_inputs needs crops, at least one level and copies >= 1")
    degradations = {level: lr_degradation(level) for level in levels}
    out = InputSet([], [], [], {})
    for path in crops:
        clean, key = read_crop(Path(path), size), sha256_file(path)  # the validation set's seed key
        for level in levels:
            for copy in range(copies):
                gt, lr, bicubic = degrade_to_bicubic(clean, degradations[level],
                                                     sample_rng(seed, key, level, copy))
                out.samples.append(Sample(Path(path).name, level, copy))
                out.gt.append(gt)
                out.bicubic.append(bicubic)
                out.lr_sizes[level] = lr.shape[0]
    return out


# ---------------------------------------------------------------------------------------------- scores
class Scorer:
    """Per-image PSNR / PSNR-Y / SSIM / identity distance / dlib face found, of images against ground truths.

    Args:
        template: alignment template of the crops (selects the identity embedder's face box).
        threshold: same-person distance threshold (reported as the verified fraction).
    """

    def __init__(self, template: str = "gpen", threshold: float = SAME_PERSON_THRESHOLD) -> None:
        self.threshold = float(threshold)
        self.identity = IdentityScorer(IdentityEmbedder(template=template), self.threshold)
        self._detector = None

    def face_found(self, image: np.ndarray) -> bool:
        """Whether dlib's HOG frontal face detector finds a face in a uint8 RGB crop."""
        if self._detector is None:
            import dlib  # present whenever the embedder loaded (IdentityScorer checked it)

            self._detector = dlib.get_frontal_face_detector()
        upsample = max(0, math.ceil(math.log2(HOG_SIDE / max(image.shape[:2]))))
        return len(self._detector(np.ascontiguousarray(image), upsample)) > 0

    def score(self, images: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Scores of uint8 RGB (S, S, 3) images against their ground truths: float64 (N,) per name in SCORES.

        Raises:
            ImportError: dlib or its models are missing (the message says what to install).
        """
        ids = self.identity.score(images, gts)
        if isinstance(ids, Unavailable):
            raise ImportError(ids.reason)
        return {
            "psnr": np.array([psnr(i, g) for i, g in zip(images, gts, strict=True)]),
            "psnr_y": np.array([psnr(i, g, y_channel=True) for i, g in zip(images, gts, strict=True)]),
            "ssim": np.array([ssim(i, g) for i, g in zip(images, gts, strict=True)]),
            "id_distance": np.asarray(ids["id_distance_gt"], np.float64),
            "dlib_face": np.array([self.face_found(i) for i in images], np.float64),
        }


def summarize(scores: dict[str, np.ndarray], index: Sequence[int],
              threshold: float = SAME_PERSON_THRESHOLD) -> dict[str, float | int]:
    """Means (and identity median / verified fraction / no-face count) of one row over ``index``."""
    sub = {name: np.asarray(values)[list(index)] for name, values in scores.items()}
    dist = sub["id_distance"]
    return {
        "n": len(index),
        "psnr": float(np.mean(sub["psnr"])),
        "psnr_y": float(np.mean(sub["psnr_y"])),
        "ssim": float(np.mean(sub["ssim"])),
        "id_distance_mean": float(np.mean(dist)),
        "id_distance_median": float(np.median(dist)),
        "id_verified": float(np.mean(dist < threshold)),
        "no_face": int(np.sum(sub["dlib_face"] == 0)),
    }


def paired(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], index: Sequence[int],
           ) -> dict[str, float]:
    """Per-image comparison of a model with the baseline over ``index``: mean gains and win fractions.

    ``psnr_gain`` is in dB (model - baseline); ``id_gain`` = baseline distance - model distance (> 0: the
    model is closer to the ground truth's identity); ``*_se`` are their standard errors over the images (the
    paired differences' sample std / sqrt(n)). Wins are strict.
    """
    idx = list(index)
    base_psnr = np.asarray(baseline["psnr"], dtype=np.float64)[idx]
    d_psnr = np.asarray(model["psnr"])[idx] - base_psnr
    # An input identical to its ground truth (the "none" preset) has an infinite PSNR: a gain over it is
    # undefined (nan, reported as n/a), not -inf; the win count stays strict (nothing beats it).
    d_psnr = np.where(np.isinf(base_psnr), np.nan, d_psnr)
    d_id = np.asarray(baseline["id_distance"])[idx] - np.asarray(model["id_distance"])[idx]
    with np.errstate(invalid="ignore"):  # nan comparisons
        return {
            "psnr_gain": float("nan") if np.isnan(d_psnr).all() else float(np.nanmean(d_psnr)),
            "psnr_win": float(np.mean(d_psnr > 0)),
            "psnr_gain_se": _standard_error(d_psnr),
            "id_gain": float(np.mean(d_id)),
            "id_gain_se": _standard_error(d_id),
            "id_win": float(np.mean(d_id > 0)),
        }


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of the finite values (0 for fewer than two)."""
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else 0.0


def grid_rows(inputs: InputSet, level: str, count: int = 8) -> list[int]:
    """Indices of up to ``count`` samples of ``level`` (copy 0), spread evenly over the faces."""
    first = [i for i in inputs.indices(level) if inputs.samples[i].copy == 0]
    if len(first) <= count:
        return first
    return [first[int(j)] for j in np.linspace(0, len(first) - 1, count).round()]
