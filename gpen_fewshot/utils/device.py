"""The one device choice of every front end (restore, evaluate, scripts): a name -> ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.

    Raises:
        ValueError: CUDA requested but unavailable, or a name torch does not know (one line, for the CLIs).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r}: {err}") from None
