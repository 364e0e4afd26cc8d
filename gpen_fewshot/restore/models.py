"""Face models for restoration: the base generator, a person's tuned generator (any strength), or any
callable.

A ``FaceModel`` turns a batch of aligned crops (N, 3, S, S) float RGB in [-1, 1] into restored crops of the
same shape. Generators are built once per (strength, device) and cached, so a batch of files reuses them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gpen_fewshot.export import CONFIG_FILE, ExportError, PersonWeights, load_person
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.utils.image import image_to_tensor, tensor_to_image
from gpen_fewshot.weights import REGISTRY, destination, is_available, weights_dir

# Tried in order when no base model is given: the released 512 model (downloaded), then the project's compact
# prior (bundled in the package, so normally always present).
DEFAULT_BASES = ("GPEN-BFR-512", "gpen-compact-256")
BASE = "base"  # the model name recorded for faces restored by the base model

ModelFn = Callable[[Tensor], Tensor]


class BaseModelUnavailableError(FileNotFoundError):
    """No base model file was found; the message says which file to put where."""


class FaceModel:
    """A restoration model at a fixed crop size and alignment template.

    Args:
        model: an ``nn.Module`` or any callable (N, 3, S, S) [-1, 1] -> (N, 3, S, S) (e.g. ``lambda x: x`` in
            tests). Strength does not apply to it.
        size: crop side S.
        name: label for logs and the sidecar ("base" for the base model, else the person's name).
        template: alignment template ("gpen" or "ffhq").
        reference_embedding: the person's identity embedding (128,) used for routing, or None.
    """

    def __init__(self, model: ModelFn, size: int, name: str = BASE, template: str = "gpen",
                 reference_embedding: np.ndarray | None = None) -> None:
        self._model = model
        self.size = int(size)
        self.name = name
        self.template = template
        self.reference_embedding = reference_embedding
        self.source: str | None = None  # where it was loaded from (weights name / path), for reports
        self.label: str = name  # what the console calls it ("gpen-compact-256" for the base, else the name)
        self.origin: str | None = None  # where it came from, in words ("bundled with the package: <path>")
        self._on_device: dict[str, ModelFn] = {}

    @property
    def parameters(self) -> int | None:
        """Number of parameters (None for a plain callable)."""
        if isinstance(self._model, nn.Module):
            return sum(p.numel() for p in self._model.parameters())
        return None

    def describe(self) -> str:
        """One line for the console: name, face size, parameters and origin."""
        facts = [f"{self.size} px faces"]
        if self.parameters is not None:
            facts.append(f"{self.parameters / 1e6:.1f} M parameters")
        return f"{self.label} ({', '.join(facts)})" + (f", {self.origin}" if self.origin else "")

    @property
    def supports_strength(self) -> bool:
        """Whether :meth:`get` honours ``strength`` (only tuned person weights do)."""
        return False

    def get(self, strength: float, device: torch.device) -> ModelFn:
        """The callable to run at ``strength`` on ``device`` (cached)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = _to_device(self._model, device)
        return self._on_device[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={self.size}, template={self.template!r})"


class PersonModel(FaceModel):
    """A person's tuned weights; ``get(strength)`` interpolates with the base (0 = base, 1 = tuned).

    Args:
        weights: the loaded export.
        cache_size: how many (strength, device) generators to keep built.
    """

    def __init__(self, weights: PersonWeights, cache_size: int = 4) -> None:
        super().__init__(_unused, weights.size, weights.name, weights.template, weights.reference_embedding)
        self.weights = weights
        self.origin = f"person export {weights.path}"
        self._cache: OrderedDict[tuple[float, str], nn.Module] = OrderedDict()
        self._cache_size = max(1, int(cache_size))

    @property
    def supports_strength(self) -> bool:
        """Only with a base to interpolate towards (an export trained from random weights has none)."""
        return self.weights.has_base

    def get(self, strength: float, device: torch.device) -> ModelFn:
        key = (float(strength), str(device))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        module = self.weights.build_generator(strength).to(device)
        self._cache[key] = module
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return module


def _unused(x: Tensor) -> Tensor:  # PersonModel overrides get(); this is never called
    raise RuntimeError("PersonModel runs its generators through get()")


def _to_device(model: ModelFn, device: torch.device) -> ModelFn:
    if isinstance(model, nn.Module):
        model = model.to(device).eval()
        model.requires_grad_(False)
    return model


PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def run_model(fn: ModelFn, crops: Sequence[np.ndarray], device: torch.device, batch_size: int,
              precision: str = "fp32") -> list[np.ndarray]:
    """Restore aligned crops in batches.

    Args:
        fn: model callable on (N, 3, S, S) float [-1, 1].
        crops: uint8 (S, S, 3) RGB crops.
        device: where to run.
        batch_size: crops per forward pass.
        precision: "fp32", "bf16" (autocast, CPU or CUDA) or "fp16" (autocast, CUDA only; fp32 elsewhere).

    Returns:
        uint8 (S, S, 3) RGB restored crops, same order.
    """
    outputs: list[np.ndarray] = []
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    use_amp = precision == "bf16" or (precision == "fp16" and device.type == "cuda")
    dtype = _AUTOCAST.get(precision, torch.float32)
    for start in range(0, len(crops), max(1, batch_size)):
        batch = torch.stack([image_to_tensor(c) for c in crops[start : start + batch_size]]).to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            out = fn(batch)
        if out.shape != batch.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)} for input {tuple(batch.shape)}")
        outputs.extend(tensor_to_image(image) for image in out.float().cpu())
    return outputs


def default_base_name() -> str | Path:
    """The first of ``DEFAULT_BASES`` that is present: a registry file (downloaded, or bundled like the
    compact prior), or an export directory of that name in the weights directory.

    Raises:
        BaseModelUnavailableError: none is present; the message says which file to put where.
    """
    for name in DEFAULT_BASES:
        if name in REGISTRY and is_available(name):
            return name
        if (weights_dir() / name / CONFIG_FILE).is_file():
            return weights_dir() / name
    spec = REGISTRY["GPEN-BFR-512"]
    raise BaseModelUnavailableError(
        f"no base model found: the bundled compact prior {DEFAULT_BASES[1]!r} is missing from the installed "
        f"package ({destination(DEFAULT_BASES[1])}; reinstall gpen-fewshot), and GPEN-BFR-512 is not "
        f"downloaded: download {spec.url} and save it as {weights_dir() / spec.filename} (or set "
        f"$GPEN_FEWSHOT_WEIGHTS_DIR), "
        "or pass --base with a GPEN checkpoint file or export directory"
    )


def load_base_model(name_or_path: str | os.PathLike | None = None) -> FaceModel:
    """Load the base restoration model.

    Args:
        name_or_path: weights-registry name ("GPEN-BFR-512", ...), a checkpoint file, an export directory
            (config.json + model.safetensors), or None for :func:`default_base_name`.

    Returns:
        A ``FaceModel`` named "base" (template "gpen" for released checkpoints, the export's otherwise).

    Raises:
        BaseModelUnavailableError: no default base present.
        ExportError: the file/directory/name cannot be loaded as a GPEN generator.
    """
    source = default_base_name() if name_or_path is None else name_or_path
    path = Path(source).expanduser()
    if path.is_dir() or (path / CONFIG_FILE).is_file():
        weights = load_person(path)
        model = FaceModel(weights.build_generator(), weights.size, BASE, weights.template)
        model.source = str(path)
        model.label, model.origin = weights.name, f"export folder {path}"
        return model

    if not path.exists() and str(source) not in REGISTRY:
        raise ExportError(f"{source}: no such base model file, and not a known weights name")
    try:
        generator = load_generator(source)
    except (ValueError, FileNotFoundError) as err:
        raise ExportError(f"{source}: cannot load the base model ({err})") from None
    model = FaceModel(generator, generator.config.size, BASE, "gpen")
    model.source = str(source)
    model.label, model.origin = _origin(str(source))
    return model


def _origin(source: str) -> tuple[str, str]:
    """(label, origin in words) of a checkpoint given as a registry name or a file path."""
    if source in REGISTRY:
        spec = REGISTRY[source]
        where = "bundled with the package" if spec.location == "bundled" else "downloaded"
        return source, f"{where}: {destination(source)}"
    path = Path(source).expanduser()
    return path.stem, f"file {path}"
