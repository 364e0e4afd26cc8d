"""Full-reference (PSNR, SSIM, LPIPS) and no-reference (NIQE) image quality.

PSNR, SSIM and NIQE are BasicSR's implementations (``basicsr.metrics``), the numbers the face-restoration
literature reports: PSNR/SSIM over the RGB channels or on the Y channel of BT.601 YCbCr (MATLAB's
``rgb2ycbcr``, Y in [16, 235]); SSIM with an 11x11 Gaussian window (sigma 1.5), MATLAB-compatible; NIQE
with the official pristine-image model shipped in BasicSR (offline). LPIPS is the ``lpips`` package with
AlexNet (v0.1).

All images here are uint8 RGB (H, W, 3) numpy arrays; BasicSR's BGR convention is handled inside.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch
from torch import nn

from gpen_fewshot import weights as registry  # module access: tests stand in for the registry
from gpen_fewshot._compat import import_basicsr
from gpen_fewshot.evaluation.values import MetricValue, Unavailable
from gpen_fewshot.utils.image import image_to_tensor, rgb_to_bgr
from gpen_fewshot.weights import WeightsUnavailableError, destination, get_spec

LPIPS_WEIGHTS = "lpips-alexnet"
# NIQE's features use 96x96 blocks at full and half resolution; with fewer than 2x2 blocks its covariance
# is degenerate (BasicSR raises "SVD did not converge").
NIQE_MIN_SIDE = 192


@functools.lru_cache(maxsize=1)
def _basicsr_metrics() -> ModuleType:
    return import_basicsr("metrics")


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Raise ``ValueError`` unless ``image`` is a uint8 (H, W, 3) array; returns it."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be a uint8 RGB (H, W, 3) array, got {desc}")
    return image


def _check_pair(restored: np.ndarray, gt: np.ndarray, crop_border: int) -> None:
    check_image(restored, "restored image")
    check_image(gt, "ground-truth image")
    if restored.shape != gt.shape:
        raise ValueError(f"restored and ground-truth images differ in shape: {restored.shape} vs {gt.shape}")
    if crop_border < 0 or 2 * crop_border >= min(gt.shape[:2]):
        raise ValueError(f"crop_border {crop_border} is invalid for {gt.shape[1]}x{gt.shape[0]} images")


def psnr(restored: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), BasicSR's ``calculate_psnr``.

    Args:
        restored: uint8 RGB (H, W, 3).
        gt: uint8 RGB (H, W, 3), same shape.
        crop_border: pixels ignored at each edge.
        y_channel: on the BT.601 Y channel instead of the mean over R, G, B.

    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    _check_pair(restored, gt, crop_border)
    return float(_basicsr_metrics().calculate_psnr(rgb_to_bgr(restored), rgb_to_bgr(gt), crop_border,
                                                   input_order="HWC", test_y_channel=y_channel))


def ssim(restored: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (MATLAB-compatible, Gaussian window), BasicSR's ``calculate_ssim``.

    Args and shapes as in ``psnr``; per-channel SSIM averaged over R, G, B unless ``y_channel``.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    _check_pair(restored, gt, crop_border)
    return float(_basicsr_metrics().calculate_ssim(rgb_to_bgr(restored), rgb_to_bgr(gt), crop_border,
                                                   input_order="HWC", test_y_channel=y_channel))


def niqe(image: np.ndarray, crop_border: int = 0) -> MetricValue:
    """Natural Image Quality Evaluator on the Y channel (lower = more natural), BasicSR's ``calculate_niqe``.

    Args:
        image: uint8 RGB (H, W, 3), at least 192 px a side after ``crop_border``.
        crop_border: pixels ignored at each edge.

    Returns:
        The NIQE score, or ``Unavailable`` for images too small for its 96-px blocks.
    """
    check_image(image)
    height, width = (side - 2 * crop_border for side in image.shape[:2])
    if min(height, width) < NIQE_MIN_SIDE:
        return Unavailable(f"niqe: needs images of at least {NIQE_MIN_SIDE} px a side, got {width}x{height}")
    undefined = Unavailable("niqe: undefined for this image (too many flat 96-px blocks)")
    with warnings.catch_warnings():
        # Flat blocks give NaN features, which NIQE drops on purpose; numpy warns about them on the way.
        # When too few blocks are left, the covariance is degenerate: reported as Unavailable below.
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
        try:
            value = float(_basicsr_metrics().calculate_niqe(rgb_to_bgr(image), crop_border, input_order="HWC",
                                                            convert_to="y"))
        except np.linalg.LinAlgError:
            return undefined
    return value if math.isfinite(value) else undefined


def _stack(images: Sequence[np.ndarray], what: str) -> torch.Tensor:
    """uint8 RGB images of one size -> float (N, 3, H, W) in [-1, 1]."""
    for image in images:
        check_image(image, what)
    if len({image.shape for image in images}) > 1:
        sizes = sorted({image.shape for image in images})
        raise ValueError(f"{what}s in one batch must have the same size, got {sizes}")
    return torch.stack([image_to_tensor(image) for image in images])


class LPIPSMetric:
    """Learned perceptual image patch similarity (Zhang et al. 2018), AlexNet v0.1; lower = more similar.

    The ``lpips`` package ships only its linear heads; the AlexNet backbone is torchvision's ImageNet file
    ``alexnet-owt-7be5be79.pth`` in torch's hub cache (registered as "lpips-alexnet"). Without it the metric
    reports ``Unavailable`` instead of a number.

    Args:
        net: an ``lpips.LPIPS``-like module (``net(x, y)`` on [-1, 1] NCHW -> (N, 1, 1, 1)) to use instead of
            the real one, e.g. ``lpips.LPIPS(net="alex", pnet_rand=True)`` in tests.
        download: fetch the AlexNet file when it is missing (otherwise never touches the network).
        batch_size: images per forward pass.
    """

    def __init__(self, net: nn.Module | None = None, download: bool = False, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._net = net.eval() if net is not None else None
        self.download = download
        self.batch_size = int(batch_size)
        self._reason: str | None = None

    def unavailable_reason(self) -> str | None:
        """Why the real network cannot be built (missing AlexNet file), or None when it can (or was given)."""
        if self._net is not None:
            return None

        try:
            registry.weight_path(LPIPS_WEIGHTS, download=self.download, progress=False)
        except WeightsUnavailableError:
            spec = get_spec(LPIPS_WEIGHTS)
            return f"lpips: needs {spec.filename} in {destination(spec).parent} (download {spec.url})"
        return None

    @property
    def network(self) -> nn.Module | None:
        """The LPIPS module (built on first use), or None when unavailable."""
        if self._net is None and self._reason is None:
            self._reason = self.unavailable_reason()
            if self._reason is None:
                import lpips

                self._net = lpips.LPIPS(net="alex", verbose=False).eval()
        return self._net

    def to(self, device: torch.device | str) -> LPIPSMetric:
        """Move the network (if built or buildable) to ``device``; returns self."""
        if self.network is not None:
            self._net = self.network.to(device)
        return self

    def __call__(self, restored: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> list[float] | Unavailable:
        """Per-pair LPIPS distances.

        Args:
            restored: uint8 RGB (H, W, 3) images, all the same size.
            gt: as many uint8 RGB images, same size as ``restored``.

        Returns:
            One distance per pair (0 for identical images), or ``Unavailable`` with the reason.
        """
        if len(restored) != len(gt):
            raise ValueError(f"got {len(restored)} restored images but {len(gt)} ground-truth images")
        net = self.network
        if net is None:
            return Unavailable(self._reason or "lpips: unavailable")
        out: list[float] = []
        device = next(net.parameters()).device
        for start in range(0, len(gt), self.batch_size):
            x = _stack(restored[start:start + self.batch_size], "restored image").to(device)
            y = _stack(gt[start:start + self.batch_size], "ground-truth image").to(device)
            if x.shape != y.shape:
                raise ValueError(f"restored and ground-truth images differ in size: {x.shape} vs {y.shape}")
            with torch.inference_mode():
                out.extend(float(v) for v in net(x, y).flatten().cpu())
        return out
