"""Optional LPIPS perceptual loss (``lpips`` package, AlexNet backbone).

The ``lpips`` package ships only its linear heads; the AlexNet backbone comes from torchvision's download
server, which is unreachable offline. We therefore build LPIPS with a random backbone and load the torchvision
AlexNet file ourselves from the weights registry (``"lpips-alexnet"``, i.e.
``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``). When the file is missing, enabling the loss fails
with one clear message saying where to put it; ``random_backbone=True`` exists for plumbing tests only.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from gpen_fewshot import weights

# lpips' AlexNet splits torchvision's ``features`` into five slices; index -> slice it lives in.
_ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


class PerceptualLoss(nn.Module):
    """LPIPS distance between restored images and targets, both (B, 3, S, S) RGB float in [-1, 1]."""

    def __init__(self, net: str = "alex", random_backbone: bool = False, download: bool = False) -> None:
        """Build the metric.

        Args:
            net: only ``"alex"`` is supported (the backbone the weights registry knows).
            random_backbone: use a random AlexNet (values are meaningless; for tests only).
            download: try to download the backbone when it is missing.

        Raises:
            weights.WeightsUnavailableError: the backbone file is missing and could not be downloaded.
        """
        super().__init__()
        if net != "alex":
            raise ValueError(f"PerceptualLoss supports net='alex' only, got {net!r}")
        import lpips  # lazily: importing lpips pulls torchvision models

        backbone = None if random_backbone else weights.weight_path("lpips-alexnet", download=download)
        with warnings.catch_warnings():
            # lpips calls torchvision's deprecated ``alexnet(pretrained=False)``; nothing to act on.
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            self.metric = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if backbone is not None:
            self._load_alexnet(torch.load(backbone, map_location="cpu", weights_only=True))
        self.metric.eval().requires_grad_(False)

    def _load_alexnet(self, state: dict[str, Tensor]) -> None:
        own = self.metric.net
        for index, slice_number in _ALEX_SLICES.items():
            conv = getattr(getattr(own, f"slice{slice_number}"), str(index))
            conv.weight.data.copy_(state[f"features.{index}.weight"])
            conv.bias.data.copy_(state[f"features.{index}.bias"])

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Keep the metric in eval mode (dropout off) whatever the parent module does."""
        super().train(mode)
        self.metric.eval()
        return self

    def forward(self, fake: Tensor, target: Tensor) -> Tensor:
        """Mean LPIPS distance (scalar)."""
        return self.metric(fake, target.detach(), normalize=False).mean()
