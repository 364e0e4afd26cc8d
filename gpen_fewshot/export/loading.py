"""One loader for every generator weights source: registry names, checkpoint files, and this project's
exports.

``load_generator`` is what the training, evaluation and restore code call with a user's ``name or path``. A
person / model export directory written by :mod:`gpen_fewshot.export` (``config.json`` naming the format;
delta or full, fp32 or fp16) is read by ``load_export_generator`` (strict, completed from its recorded base);
everything else goes to :func:`gpen_fewshot.archs.checkpoints.load_generator` (released ``.pth`` files,
trainer and Lightning checkpoints, safetensors, registry names), which knows no export format of this
project.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gpen_fewshot.archs import checkpoints
from gpen_fewshot.archs.checkpoints import CheckpointError
from gpen_fewshot.archs.gpen import GeneratorConfig, GPENGenerator
from gpen_fewshot.export.common import CONFIG_FILE, FORMAT_NAME, ExportError
from gpen_fewshot.export.reader import load_export_generator

__all__ = ["load_generator"]


def load_generator(path_or_name: str | Path, map_location: str | torch.device = "cpu", strict: bool = True,
                   config: GeneratorConfig | None = None) -> GPENGenerator:
    """A ``GPENGenerator`` (eval mode, trainable parameters) from any weights source the project accepts.

    Args:
        path_or_name: an export directory of :mod:`gpen_fewshot.export`, a checkpoint file or directory, or a
            registry name (e.g. ``"GPEN-BFR-512"``).
        map_location, strict: as :func:`gpen_fewshot.archs.checkpoints.load_generator` (exports are always
            loaded strictly, on the CPU).
        config: expected config; by default the export's / ``config.json``'s, else inferred from the shapes.

    Raises:
        CheckpointError: unreadable/wrong file or weights that do not fit; one message naming the file.
    """
    export_dir = _our_export_dir(path_or_name)
    if export_dir is not None:
        return _load_our_export(export_dir, config)
    return checkpoints.load_generator(path_or_name, map_location, strict, config)


def _our_export_dir(path_or_name: str | Path) -> Path | None:
    """``path_or_name`` when it is an export directory written by ``gpen_fewshot.export``, else None."""
    path = Path(path_or_name)
    try:
        data = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")) if path.is_dir() else None
    except (OSError, ValueError):
        return None  # not readable as ours: the generic reader below reports the problem
    return path if isinstance(data, dict) and data.get("format") == FORMAT_NAME else None


def _load_our_export(folder: Path, config: GeneratorConfig | None) -> GPENGenerator:
    try:
        model = load_export_generator(folder)
    except ExportError as error:  # its messages already name the file
        raise CheckpointError(str(error)) from None
    if config is not None and model.config != config:
        raise CheckpointError(f"{folder}: export holds "
                              f"GPENGenerator({checkpoints.describe_config(model.config)}), "
                              f"expected ({checkpoints.describe_config(config)})")
    return model.requires_grad_(True).eval()  # like the other formats: a fresh, trainable module
