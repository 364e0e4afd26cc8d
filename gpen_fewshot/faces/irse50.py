"""ArcFace IR-SE50 (the network behind the released ``model_ir_se50.pth``), built by facexlib.

facexlib's ``Backbone`` has the module names of the released file (TreB1eN/InsightFace_Pytorch, also used by
pSp and GPEN's trainer), so the file loads with ``strict=True``: ``input_layer`` (conv 3x3 -> BN -> PReLU),
``body.<i>`` (24 IR-SE bottlenecks), ``output_layer`` (BN2d, dropout, flatten, linear 512*7*7 -> 512, BN1d).
The embedding is L2-normalised. This module adds the strict, explained loading of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from facexlib.recognition.arcface_arch import Backbone


class IRSE50(Backbone):
    """ArcFace IR-SE50 embedding network for 112 x 112 aligned faces: facexlib's ``Backbone(50, drop,
    'ir_se')`` (the same 397 state-dict keys as the released file, which it loads strictly).

    ``forward(x)``: (B, 3, 112, 112) float RGB in [-1, 1] -> (B, 512) L2-normalised embeddings.
    """

    def __init__(self, drop_ratio: float = 0.6) -> None:
        super().__init__(50, drop_ratio, "ir_se")


def load_irse50(path: str | os.PathLike) -> IRSE50:
    """Build :class:`IRSE50` and load a ``model_ir_se50.pth`` state dict strictly (eval mode, frozen).

    Raises:
        ValueError: the file is not an IR-SE50 state dict; the message names the file and the key problems.
    """
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = IRSE50()
    for key, value in net.state_dict().items():
        # Files saved by PyTorch < 0.4.1 have no BatchNorm step counters (unused in eval mode anyway).
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[:3]
        raise ValueError(f"{path}: not an ArcFace IR-SE50 state dict ({' '.join(first)})") from None
    net.eval().requires_grad_(False)
    return net
