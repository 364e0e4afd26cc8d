"""Strict loading of exports (see :mod:`gpen_fewshot.export` for the format) and strength interpolation."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gpen_fewshot.archs.checkpoints import CheckpointError, generator_shapes, load_generator
from gpen_fewshot.archs.gpen import GeneratorConfig, GPENGenerator
from gpen_fewshot.archs.shapes import shape_problems
from gpen_fewshot.export.base import BaseReference, resolve_recorded_base
from gpen_fewshot.export.common import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MODES,
    PERSON_FILE,
    WEIGHTS_FILE,
    ExportError,
    PersonMetadata,
    find_export_dir,
)
from gpen_fewshot.faces.alignment import TEMPLATES
from gpen_fewshot.utils.jsonfile import read_json_object


class PersonWeights:
    """A loaded export: the tuned generator's weights, its base and the person's metadata.

    Attributes:
        path: the export directory.
        config: the generator architecture.
        template: alignment template of the crops the model expects ("gpen" or "ffhq").
        mode: "delta" or "full" (how it was stored).
        state_dict: the full tuned generator state dict (float32, CPU; shared: do not modify in place).
        stored_keys: names of the tensors the export stores (all of them in full mode).
        metadata: ``person.json`` content, or None for a model export without a person.
        base: the base checkpoint, when recorded (a delta export always has one).
    """

    def __init__(self, path: Path, config: GeneratorConfig, template: str, mode: str,
                 state_dict: dict[str, Tensor], stored_keys: tuple[str, ...], metadata: PersonMetadata | None,
                 base: BaseReference | None, base_state_dict: dict[str, Tensor] | None,
                 base_record: dict | None = None, base_override: str | os.PathLike | None = None) -> None:
        self.path = path
        self.config = config
        self.template = template
        self.mode = mode
        self.state_dict = state_dict
        self.stored_keys = stored_keys
        self.metadata = metadata
        self.base = base
        self._base_state_dict = base_state_dict
        self._base_record = base_record or {}
        self._base_override = base_override

    @property
    def name(self) -> str:
        """The person's name (the directory name for a model export without person.json)."""
        if self.metadata is not None:
            return self.metadata.name
        return self.path.parent.name if self.path.name == "weights" else self.path.name

    @property
    def size(self) -> int:
        """Crop side the generator works at."""
        return int(self.config.size)

    @property
    def reference_embedding(self) -> np.ndarray | None:
        """The person's reference identity embedding (128,), or None."""
        return None if self.metadata is None else self.metadata.embedding

    @property
    def has_base(self) -> bool:
        """Whether a base is recorded or given, so ``strength < 1`` is possible (False for a full export of a
        model trained from random weights)."""
        return bool(self._base_record) or self._base_override is not None or self._base_state_dict is not None

    def base_state_dict(self) -> dict[str, Tensor]:
        """The base generator's full state dict (loaded on first use for a full export).

        Raises:
            ExportError: no base recorded, base not found or its sha256 differs.
        """
        if self._base_state_dict is None:
            record = self._base_record
            if not record and self._base_override is None:
                raise ExportError(f"{self.path}: no base checkpoint recorded, "
                                  "so strength < 1 is not possible")
            self.base = resolve_recorded_base(record.get("name"), record.get("sha256"), record.get("path"),
                                              self._base_override, self.path)
            self._base_state_dict = load_base_state_dict(self.base)
        return self._base_state_dict

    def state_dict_at(self, strength: float = 1.0) -> dict[str, Tensor]:
        """Weights interpolated parameter-wise between the base (0) and the tuned model (1).

        Strength 0 returns the base tensors themselves and 1 the tuned ones (no arithmetic), so both ends are
        bit-exact; in between ``base + strength * (tuned - base)`` in float32.

        Args:
            strength: in [0, 1].

        Returns:
            Full state dict (shared tensors: do not modify in place).
        """
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if strength == 1.0:
            return self.state_dict
        base = self.base_state_dict()
        if strength == 0.0:
            return base
        keys = set(self.stored_keys)
        return {k: torch.lerp(base[k], v, float(strength)) if k in keys else v
                for k, v in self.state_dict.items()}

    def build_generator(self, strength: float = 1.0) -> GPENGenerator:
        """A ``GPENGenerator`` (CPU, float32, eval mode, no gradients) with the weights at ``strength``."""
        generator = GPENGenerator.from_config(self.config)
        generator.load_state_dict(self.state_dict_at(strength), strict=True)
        generator.requires_grad_(False)
        return generator.eval()

    def __repr__(self) -> str:
        return f"PersonWeights(name={self.name!r}, mode={self.mode!r}, size={self.size}, path='{self.path}')"


def _read_json(path: Path) -> dict:
    return read_json_object(path, ExportError)


def _generator_config(config: dict, source: Path) -> GeneratorConfig:
    if config.get("format") != FORMAT_NAME:
        raise ExportError(f"{source}: not a gpen-fewshot export (format {config.get('format')!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(f"{source}: format version {version!r} is newer than this gpen-fewshot reads "
                          f"({FORMAT_VERSION}); upgrade gpen-fewshot")
    if config.get("mode") not in MODES:
        raise ExportError(f"{source}: unknown mode {config.get('mode')!r}")
    generator = config.get("generator")
    if not isinstance(generator, dict):
        raise ExportError(f"{source}: 'generator' must be an object of architecture fields, "
                          f"got {generator!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in generator.items()}
    try:
        parsed = GeneratorConfig(**fields)
    except TypeError as err:
        raise ExportError(f"{source}: invalid generator architecture ({err})") from None
    problem = _value_problem(parsed) or _template_problem(config.get("template", "gpen"))
    if (not problem and "size" in config
            and (config["size"] != parsed.size or isinstance(config["size"], bool))):
        problem = f"size {config['size']!r} does not match the generator's size {parsed.size}"
    if problem:
        raise ExportError(f"{source}: {problem}")
    return parsed


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_problem(config: GeneratorConfig) -> str | None:
    """What is wrong with a parsed architecture's values (valid JSON can still say ``"size": "big"``)."""
    size = config.size
    if not isinstance(size, int) or isinstance(size, bool) or size < 16 or size & (size - 1):
        return f"generator size {size!r} must be a power of two >= 16 (e.g. 256, 512)"
    for name in ("style_dim", "n_mlp"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"generator {name} {value!r} must be an integer >= 1"
    for name in ("channel_multiplier", "narrow", "lr_mlp"):
        value = getattr(config, name)
        if not _is_number(value) or value <= 0:
            return f"generator {name} {value!r} must be a number > 0"
    if not config.blur_kernel or not all(_is_number(v) for v in config.blur_kernel):
        return f"generator blur_kernel {config.blur_kernel!r} must be a list of numbers"
    for name in ("isconcat", "residual"):
        if not isinstance(getattr(config, name), bool):
            return f"generator {name} {getattr(config, name)!r} must be true or false"
    return None


def _template_problem(template: object) -> str | None:

    if not isinstance(template, str) or template not in TEMPLATES:
        return f"template {template!r} must be one of {sorted(TEMPLATES)}"
    return None


def _expected_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every state_dict entry of the architecture (computed, no module is built)."""

    return generator_shapes(config.size, config.style_dim, config.n_mlp, config.channel_multiplier,
                            config.narrow, config.isconcat, config.residual)


def _check_keys(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], source: Path,
                complete: bool) -> None:
    problems = shape_problems(tensors, expected, complete)
    if problems:
        raise ExportError(f"{source}: does not fit the architecture in {CONFIG_FILE}: " + "; ".join(problems))


def _read_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ExportError(f"{path}: weights file missing")
    try:
        return {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ExportError(f"{path}: unreadable safetensors file ({err})") from None


def load_person(name_or_path: str | os.PathLike, persons_dir: str | os.PathLike | None = None,
                base: str | os.PathLike | None = None) -> PersonWeights:
    """Load a person (or model) export strictly.

    Args:
        name_or_path: a person name (looked up as ``<persons_dir>/<name>/weights/``), an export directory, or
            a person folder containing ``weights/``.
        persons_dir: root of the persons (default :func:`gpen_fewshot.export.persons_dir`).
        base: base checkpoint (name, file or export directory) to use instead of the recorded one; its
            sha256 must still match the recorded one.

    Returns:
        The loaded ``PersonWeights``.

    Raises:
        ExportError: not an export, unreadable files, keys/shapes that do not fit, base missing or mismatched.
    """
    folder = find_export_dir(name_or_path, persons_dir)
    config = _read_json(folder / CONFIG_FILE)
    gen_config = _generator_config(config, folder / CONFIG_FILE)
    expected = _expected_shapes(gen_config)
    stored = _read_tensors(folder / WEIGHTS_FILE)
    mode = config["mode"]
    _check_keys(stored, expected, folder / WEIGHTS_FILE, complete=mode == "full")
    record = config.get("base")
    base_ref, base_sd = None, None
    if mode == "delta":
        if not record:
            raise ExportError(f"{folder / CONFIG_FILE}: a delta export without a base record")
        base_ref = resolve_recorded_base(record.get("name"), record.get("sha256"), record.get("path"), base,
                                         folder)
        base_sd = load_base_state_dict(base_ref)
        _check_keys(base_sd, expected, base_ref.path, complete=True)
    state = {k: stored[k] if k in stored else base_sd[k] for k in expected}
    person_file = folder / PERSON_FILE
    metadata = (PersonMetadata.from_dict(_read_json(person_file), person_file) if person_file.is_file()
                else None)
    return PersonWeights(folder, gen_config, str(config.get("template", "gpen")), mode, state, tuple(stored),
                         metadata, base_ref, base_sd, record, base)


def load_export_generator(path: str | os.PathLike) -> GPENGenerator:
    """The generator of an export directory (delta or full), eval mode: what ``load_generator`` should call
    for directories that hold a ``config.json`` of this format."""
    return load_person(path).build_generator()


def load_base_state_dict(ref: BaseReference) -> dict[str, Tensor]:
    """Full generator state dict (float32, CPU) of a base checkpoint; cached per (path, sha256).

    The returned tensors are shared between callers: never modify them in place.
    """
    return _load_cached(str(ref.path), ref.sha256)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, sha256: str) -> dict[str, Tensor]:
    del sha256  # part of the cache key only: a changed file is loaded again
    source = Path(path)
    if source.is_dir():
        weights = load_person(source)
        if weights.mode != "full":
            raise ExportError(f"{source}: a base must be a full export, this one is {weights.mode!r}")
        state = weights.state_dict
    else:
        try:
            state = load_generator(source).state_dict()
        except CheckpointError as err:
            raise ExportError(f"{source}: not a usable base generator ({err})") from None
    return {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
