"""Compatibility shims for third-party packages, applied in exactly one place.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module removed in torchvision 0.17.
Its content moved into ``torchvision.transforms.functional``; we alias that module under the old name before
basicsr is first imported. Import basicsr only through :func:`import_basicsr` (or after calling
:func:`patch_torchvision_for_basicsr`).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_OLD_NAME = "torchvision.transforms.functional_tensor"


def patch_torchvision_for_basicsr() -> None:
    """Register ``torchvision.transforms.functional`` under its pre-0.17 name if that name is gone."""
    if _OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(_OLD_NAME)
    except ModuleNotFoundError:
        sys.modules[_OLD_NAME] = importlib.import_module("torchvision.transforms.functional")


def import_basicsr(submodule: str = "") -> ModuleType:
    """Import ``basicsr`` (or ``basicsr.<submodule>``) after applying the torchvision alias.

    Example: ``degradations = import_basicsr("data.degradations")``.
    """
    patch_torchvision_for_basicsr()
    name = "basicsr" + (f".{submodule}" if submodule else "")
    return importlib.import_module(name)
