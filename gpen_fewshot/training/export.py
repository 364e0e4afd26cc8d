"""Minimal export of a trained person model (to be replaced by the export issue's format).

Writes ``<run_dir>/export/generator_ema.safetensors`` (the EMA generator's full state dict, reference key
names, float32) and ``<run_dir>/export/config.json`` (generator config, alignment template, size, provenance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.utils.atomic import atomic_write_bytes, atomic_write_json

WEIGHTS_FILENAME = "generator_ema.safetensors"
CONFIG_FILENAME = "config.json"


def export_generator(generator: GPENGenerator, out_dir: str | os.PathLike, template: str,
                     extra: dict[str, Any] | None = None) -> Path:
    """Write the generator's weights and config into ``out_dir`` (atomically).

    Args:
        generator: the (EMA) generator to export.
        out_dir: destination folder (created).
        template: face-alignment template the model was trained on (``"gpen"`` / ``"ffhq"``).
        extra: more JSON-serialisable provenance fields (person, iteration, run directory...).

    Returns:
        The path of the safetensors file.
    """
    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items()}
    config = generator.config.asdict()
    metadata = {"format": "gpen-fewshot-generator", "template": template, "size": str(config["size"])}
    weights_path = out_dir / WEIGHTS_FILENAME
    atomic_write_bytes(weights_path, safetensors_bytes(tensors, metadata=metadata))
    atomic_write_json(out_dir / CONFIG_FILENAME, {
        "generator": config, "template": template, "size": config["size"], "weights": WEIGHTS_FILENAME,
        **(extra or {}),
    })
    return weights_path
