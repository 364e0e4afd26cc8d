"""The Inception-v3 feature extractor of the standard FID (TensorFlow's 2015-12-05 graph, pytorch-fid port).

Builds torchvision's ``Inception3`` (1008 classes, no auxiliary head) and changes the two things in which
the TensorFlow FID network differs (facts from pytorch-fid, Seitzer 2020): the average pooling in the pool
branch of the A, C and first E blocks ignores padded zeros, and the last E block max-pools instead. Parameter
names are torchvision's, so the weight file ``pt_inception-2015-12-05-6726825d.pth`` (registered as
"fid-inception" in ``gpen_fewshot.weights``) loads with ``strict=True``; with the same weights the features
equal pytorch-fid's ``InceptionV3`` bit for bit (checked with random weights). Features: the 2048-d final
average pool.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from gpen_fewshot import weights as registry  # module access: tests stand in for the registry

FID_WEIGHTS = "fid-inception"
FID_INPUT_SIZE = 299
FID_NUM_FEATURES = 2048
_NUM_CLASSES = 1008  # the TensorFlow graph's classifier size; only needed so the weight file loads strictly
_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


class _TFPoolBranch:
    """Mixin: recompute an Inception block's pool branch the way the TensorFlow graph pools.

    torchvision's ``_forward`` returns the branch outputs with the pool branch last; that branch's (cheap 1x1)
    convolution is redone on the TensorFlow-style pooled input, which keeps torchvision's code and names.
    """

    use_max_pool = False

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)  # type: ignore[attr-defined]
        if self.use_max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        outputs[-1] = self.branch_pool(pooled)  # type: ignore[attr-defined]
        return torch.cat(outputs, 1)


class _FIDInceptionA(_TFPoolBranch, InceptionA):
    pass


class _FIDInceptionC(_TFPoolBranch, InceptionC):
    pass


class _FIDInceptionE(_TFPoolBranch, InceptionE):
    pass


class _FIDInceptionEMax(_TFPoolBranch, InceptionE):
    use_max_pool = True


class FIDInceptionV3(nn.Module):
    """FID feature extractor: images -> 2048-d pool features.

    Randomly initialised until weights are loaded (``load_fid_inception``). Always in eval mode semantics for
    BatchNorm once ``eval()`` is called (the loader does).
    """

    num_features = FID_NUM_FEATURES  # read by torchmetrics instead of a dummy forward pass

    def __init__(self) -> None:
        super().__init__()
        blocks = [None, _FIDInceptionA, None, _FIDInceptionC, None, _FIDInceptionE, None]
        # torchvision's constructor takes the block classes in this order: conv, A, B, C, D, E, aux;
        # None keeps its default. It would apply the same E class to both E blocks: Mixed_7c is replaced.
        self.net = Inception3(num_classes=_NUM_CLASSES, aux_logits=False, init_weights=False,
                              inception_blocks=_fill_default_blocks(blocks))
        self.net.Mixed_7c = _FIDInceptionEMax(2048)
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        """Features of a batch.

        Args:
            images: float (N, 3, H, W) RGB in [0, 1], any size (resized bilinearly to 299x299 as in
                pytorch-fid).

        Returns:
            float (N, 2048).
        """
        x = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        for name in _TRUNK:
            x = getattr(self.net, name)(x)
        return torch.flatten(x, 1)


def _fill_default_blocks(blocks: list) -> list:
    from torchvision.models.inception import BasicConv2d, InceptionAux, InceptionB, InceptionD

    defaults = [BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionAux]
    return [given or default for given, default in zip(blocks, defaults, strict=True)]


def load_fid_inception(path: str | os.PathLike | None = None, download: bool = False) -> FIDInceptionV3:
    """The FID network with its weights, in eval mode.

    Args:
        path: weight file (a plain state_dict with torchvision ``Inception3`` names, 1008 classes); default:
            the "fid-inception" entry of the weights registry (``$TORCH_HOME/hub/checkpoints/...``).
        download: fetch the registry file when it is missing.

    Raises:
        WeightsUnavailableError: no file given and the registry file is missing (message: file, folder, URL).
        ValueError: the file is not an Inception state_dict (names what is missing / unexpected).
    """
    if path is None:
        path = registry.weight_path(FID_WEIGHTS, download=download)
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected an Inception-v3 state_dict, got {type(state).__name__}")
    model = FIDInceptionV3()
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a FID Inception-v3 state_dict: {err}") from err
    return model.eval()
