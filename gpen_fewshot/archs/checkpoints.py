"""Load GPEN generator / discriminator weights from any of the formats they come in, inferring the config.

Accepted inputs (files are read with ``torch.load(weights_only=True)`` or safetensors; nothing else is ever
unpickled):

- a released bare state dict (``GPEN-BFR-512.pth``, ``GPEN-BFR-256-D.pth``, ...);
- a reference-trainer checkpoint ``{'g', 'd', 'g_ema', 'g_optim', 'd_optim'}`` (``g_ema`` preferred for the
  generator, ``d`` for the discriminator);
- a PyTorch Lightning checkpoint of this project (``state_dict`` with ``generator_ema.`` / ``generator.`` /
  ``discriminator.`` submodule prefixes; ``generator_ema.`` preferred);
- a BasicSR-style ``{'params_ema' | 'params': state_dict}`` or a plain ``{'state_dict': state_dict}``;
- a ``.safetensors`` file, or an export directory holding ``model.safetensors`` (generator) and an optional
  ``config.json`` (generator fields at the top level or under ``"generator"``); a discriminator is read from
  ``discriminator.safetensors`` in such a directory;
- (a person / model export of :mod:`gpen_fewshot.export`, delta ones included, is read by
  ``gpen_fewshot.export.load_generator``, which falls back to this module for everything else).

``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped.

Config inference works on tensor shapes only (meta tensors are fine): the size, style_dim, n_mlp and
isconcat come from key counts and shapes; channel_multiplier and narrow are chosen among candidates by
comparing every tensor's shape with the one the GPEN channel table predicts. All candidates that fit give
the same network; the simplest values are reported (e.g. narrow 0.3 rather than 0.298828125, and the
default channel_multiplier 2 when the size is below 64 px and cm has no effect).

Why one file over 400 lines: reading every checkpoint format and inferring the architecture from the tensors
read are one job (the config comes from what was read, and both report errors naming the same file); the
project's own export format is not here (``gpen_fewshot.export.loading``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path, PosixPath, WindowsPath
from typing import Any, Literal

import torch
from torch import Tensor

from gpen_fewshot.archs.discriminator import DiscriminatorConfig, GPENDiscriminator
from gpen_fewshot.archs.gpen import GeneratorConfig, GPENGenerator
from gpen_fewshot.archs.shapes import Shapes, discriminator_shapes, generator_shapes, shape_problems
from gpen_fewshot.weights import REGISTRY, weight_path

__all__ = ["CheckpointError", "extract_state_dict", "infer_discriminator_config", "infer_generator_config",
           "load_discriminator", "load_generator", "read_checkpoint_file", "read_state_dict"]

Kind = Literal["generator", "discriminator"]

_LIGHTNING_PREFIXES = {"generator": ("generator_ema.", "generator."), "discriminator": ("discriminator.",)}
_TRAINER_KEYS = {"generator": ("g_ema", "g", "params_ema", "params"), "discriminator": ("d",)}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Plain-data classes a Lightning checkpoint's hyper_parameters may hold; nothing else is ever unpickled.
_SAFE_GLOBALS = [GeneratorConfig, DiscriminatorConfig, PosixPath, WindowsPath]
_MARKERS = {"generator": "ecd0.0.0.weight", "discriminator": "convs.0.0.weight"}  # first layer of each
_EXPORT_FILES = {"generator": "model.safetensors", "discriminator": "discriminator.safetensors"}


class CheckpointError(ValueError):
    """A weight file is unreadable, not a GPEN checkpoint of the requested kind, or does not fit the model."""


# -------------------------------------------------------------------------------------------- inference
def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := regex.fullmatch(k))})


def _require(state_dict: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"cannot infer the config: key {key!r} is missing")
    return tuple(state_dict[key].shape)


def _simple_values(observed: int, unit: float) -> list[float]:
    """Values v with ``int(unit * v) == observed``, the simplest first (0.3 rather than 0.298828125)."""
    low, mid = observed / unit, (observed + 0.5) / unit
    values = {low, mid} | {round(x, d) for x in (low, mid) for d in range(7)}
    return sorted((v for v in values if v > 0 and int(unit * v) == observed),
                  key=lambda v: (_complexity(v), -v))


def _complexity(value: float) -> int:
    """1 for powers of two and 3 * powers of two (0.0625, 0.75, 2), else the significant decimal digits."""
    if math.frexp(value)[0] in (0.5, 0.75):
        return 1
    return len(f"{value:.12g}".replace(".", "").strip("0"))


def _choose(ch64: int | None, ch4: int, shapes_for: Any, state_dict: Mapping[str, Tensor],
            what: str) -> tuple[float, float]:
    """(channel_multiplier, narrow) whose predicted shapes fit every tensor (see module docstring).

    ``ch4`` / ``ch64`` are the channel counts observed at 4 and 64 px (``None`` below 64 px: cm is unused).
    """
    best: tuple[int, str] | None = None
    for narrow in _simple_values(ch4, 512):
        cms = [2.0] if ch64 is None else _simple_values(ch64, 256 * narrow)
        for cm in cms:
            # unexpected extra keys say nothing about cm/narrow; strict loading reports them later
            problems = [p for p in shape_problems(state_dict, shapes_for(cm, narrow))
                        if "unexpected" not in p]
            if not problems:
                return (int(cm) if float(cm).is_integer() else cm), narrow
            if best is None or len(problems) < best[0]:
                best = (len(problems), f"closest: channel_multiplier {cm:g}, narrow {narrow:g}: "
                                       + "; ".join(problems))
    detail = best[1] if best else f"{ch4} channels at 4x4 fit no narrow"
    raise CheckpointError(f"no GPEN {what} configuration fits this state dict ({detail})")


def _level_key(template: str, first: str, size: int) -> str:
    """Key whose output channels are those at 64 px: the first layer if size is 64, else block
    log2(size/64)."""
    level = int(math.log2(size // 64))
    return first if level == 0 else template.format(level)


def infer_generator_config(state_dict: Mapping[str, Tensor]) -> GeneratorConfig:
    """Infer the ``GeneratorConfig`` of a GPEN generator state dict (reference key names) from its shapes.

    Raises:
        CheckpointError: the keys/shapes are not those of any GPEN generator (the message says which).
    """
    n_down = _count(state_dict, r"ecd(\d+)\.0\.1\.weight")
    if "ecd0.0.0.weight" not in state_dict or n_down < 1:
        raise CheckpointError("cannot infer the generator config: no encoder keys ('ecd0.0.0.weight', ...)")
    size = 2 ** (n_down + 2)
    style_dim = _require(state_dict, "final_linear.0.weight")[0]
    n_mlp = _count(state_dict, r"generator\.style\.(\d+)\.weight")
    ch4 = _require(state_dict, "generator.input.input")[1]
    isconcat = _require(state_dict, "generator.conv1.activate.bias")[0] == 2 * ch4
    residual = "input_skip" in state_dict  # the buffer only residual generators have
    ch64 = (None if size < 64
            else _require(state_dict, _level_key("ecd{}.0.1.weight", "ecd0.0.0.weight", size))[0])

    def shapes_for(cm: float, narrow: float) -> Shapes:
        return generator_shapes(size, style_dim, n_mlp, cm, narrow, isconcat, residual)

    cm, narrow = _choose(ch64, ch4, shapes_for, state_dict, "generator")
    values = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": cm,
              "narrow": narrow, "isconcat": isconcat, "residual": residual}
    return _make_config(GeneratorConfig, values)


def infer_discriminator_config(state_dict: Mapping[str, Tensor]) -> DiscriminatorConfig:
    """Infer the ``DiscriminatorConfig`` of a GPEN discriminator state dict from its shapes.

    Raises:
        CheckpointError: the keys/shapes are not those of any GPEN discriminator.
    """
    n_blocks = _count(state_dict, r"convs\.(\d+)\.conv1\.0\.weight")
    if "convs.0.0.weight" not in state_dict or n_blocks < 1:
        raise CheckpointError("cannot infer the discriminator config: no 'convs.0.0.weight'/'convs.1.*' keys")
    size = 2 ** (n_blocks + 2)
    ch4 = _require(state_dict, "final_linear.1.weight")[1]
    ch64 = (None if size < 64
            else _require(state_dict, _level_key("convs.{}.conv2.1.weight", "convs.0.0.weight", size))[0])

    def shapes_for(cm: float, narrow: float) -> Shapes:
        return discriminator_shapes(size, cm, narrow)

    cm, narrow = _choose(ch64, ch4, shapes_for, state_dict, "discriminator")
    return _make_config(DiscriminatorConfig, {"size": size, "channel_multiplier": cm, "narrow": narrow})


def _make_config(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _config_from_json(values: dict[str, Any]) -> GeneratorConfig | None:
    """GeneratorConfig from an export's config.json fields (None if it names none of them)."""
    names = {f.name for f in dataclasses.fields(GeneratorConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    if not fields:
        return None
    try:
        return GeneratorConfig(**fields)
    except TypeError as error:
        raise CheckpointError(f"config.json has an incomplete generator config ({error})") from None


# ------------------------------------------------------------------------------------ state dict extraction
def extract_state_dict(obj: Any, kind: Kind = "generator") -> dict[str, Tensor]:
    """Pick the ``kind`` network's state dict out of a loaded checkpoint object (formats: module docstring).

    Args:
        obj: what ``torch.load`` / safetensors returned.
        kind: ``"generator"`` or ``"discriminator"``.

    Returns:
        A state dict with reference key names (wrapper prefixes stripped), tensors as loaded.

    Raises:
        CheckpointError: not a checkpoint, no network of that kind inside, or a network of the other kind.
    """
    if kind not in _LIGHTNING_PREFIXES:
        raise ValueError(f"kind must be 'generator' or 'discriminator', got {kind!r}")
    state_dict = _strip_wrappers(_select(obj, kind))
    bad = next((k for k, v in state_dict.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"entry {bad!r} is a {type(state_dict[bad]).__name__}, not a tensor")
    _check_kind(state_dict, kind)
    return state_dict


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _select(obj: Any, kind: Kind) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    if _is_state_dict(obj):
        return dict(obj)
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        if _MARKERS[kind] in inner:  # {'state_dict': bare state dict}, e.g. the parity fixtures
            return _select(inner, kind)
        for prefix in _LIGHTNING_PREFIXES[kind]:  # Lightning: submodules of the LightningModule
            sub = {k[len(prefix):]: v for k, v in inner.items() if k.startswith(prefix)}
            if sub:
                return sub
        return _select(inner, kind)
    for key in _TRAINER_KEYS[kind]:
        if isinstance(obj.get(key), Mapping):
            return _select(obj[key], kind)
    found = ", ".join(repr(k) for k in list(obj)[:6]) or "nothing"
    raise CheckpointError(f"no {kind} state dict found (top-level keys: {found})")


def _strip_wrappers(state_dict: dict[str, Any]) -> dict[str, Any]:
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _check_kind(state_dict: Mapping[str, Tensor], kind: Kind) -> None:
    is_generator = ("ecd0.0.0.weight" in state_dict
                    or any(k.startswith("generator.style.") for k in state_dict))
    is_discriminator = "final_conv.0.weight" in state_dict and "convs.0.0.weight" in state_dict
    if kind == "generator" and is_discriminator and not is_generator:
        raise CheckpointError("this is a GPEN discriminator state dict, not a generator")
    if kind == "discriminator" and is_generator:
        raise CheckpointError("this is a GPEN generator state dict, not a discriminator")
    if not (is_generator if kind == "generator" else is_discriminator):
        sample = ", ".join(list(state_dict)[:3])
        raise CheckpointError(f"not a GPEN {kind} state dict (keys start with: {sample})")


# ------------------------------------------------------------------------------------------- file reading
@contextmanager
def _about(path: Path) -> Iterator[None]:
    """Prefix every CheckpointError raised inside with the file name (one message per error)."""
    try:
        yield
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:  # safetensors: 8-byte little-endian header length, then JSON
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_file(path: Path, map_location: str | torch.device) -> Any:
    if path.stat().st_size == 0:
        raise CheckpointError("file is empty")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(map_location))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(_not_a_checkpoint(error)) from None
    try:
        safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        with safe(_SAFE_GLOBALS) if safe else nullcontext():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise CheckpointError(f"holds a pickled Python object ({refused.group(1)}); refusing to "
                                  "unpickle it (re-save the state dict alone, or as safetensors)") from None
        raise CheckpointError(_not_a_checkpoint(error)) from None
    except (RuntimeError, EOFError, ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError,
            struct.error) as error:  # struct.error: a few bytes that start like a pickle
        raise CheckpointError(_not_a_checkpoint(error)) from None


def read_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """What a checkpoint file holds, read safely (``weights_only`` pickle or safetensors), without selecting
    a network: for callers that need more than the state dict (e.g. a run's iteration counter).

    Raises:
        CheckpointError: empty, truncated, not a checkpoint, or holding pickled objects; the message names
            the file.
    """
    path = Path(path)
    with _about(path):
        return _read_file(path, map_location)


def _not_a_checkpoint(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "Unsupported operand" in line), lines[0] if lines else "")
    detail = detail.split(". ")[0][:160]  # torch appends paragraphs of advice after the first sentence
    return f"file is truncated or not a PyTorch/safetensors file ({type(error).__name__}: {detail})"


def _resolve(path_or_name: str | Path, kind: Kind) -> Path:
    """A path on disk, or the downloaded/verified file of a registry name."""
    path = Path(path_or_name)
    if path.exists():
        return path

    spec = REGISTRY.get(str(path_or_name))
    if spec is None:
        raise FileNotFoundError(f"{path_or_name}: no such file or directory, and not a registered weights "
                                f"name ({', '.join(n for n, s in REGISTRY.items() if s.kind == kind)})")
    if spec.kind != kind:
        raise CheckpointError(f"{spec.name!r} holds {spec.kind} weights, not a GPEN {kind}")
    return weight_path(spec.name)


def _export_config(folder: Path) -> dict[str, Any] | None:
    """The generator fields of an export directory's config.json, or None when it has none."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"config.json is not valid JSON ({error})") from None
    if isinstance(data, dict) and data.get("mode") == "delta":
        raise CheckpointError("is a delta export (only the fine-tuned tensors, the rest come from its base "
                              "checkpoint): load it with gpen_fewshot.export.load_generator")
    if isinstance(data, dict) and isinstance(data.get("generator"), dict):
        data = data["generator"]
    return data if isinstance(data, dict) else None


def read_state_dict(path_or_name: str | Path, kind: Kind = "generator",
                    map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a file/directory/registry name and return the ``kind`` network's state dict (reference keys).

    Raises:
        FileNotFoundError: neither an existing path nor a registered weights name.
        CheckpointError: unreadable, truncated or not a GPEN checkpoint of that kind (message names the file).
        gpen_fewshot.weights.WeightsUnavailableError: a registry name whose file cannot be downloaded.
    """
    return _read_with_config(path_or_name, kind, map_location)[0]


def _read_with_config(path_or_name: str | Path, kind: Kind,
                      map_location: str | torch.device) -> tuple[dict[str, Tensor], dict | None, Path]:
    path = _resolve(path_or_name, kind)
    config = None
    if path.is_dir():
        with _about(path):
            if not (path / _EXPORT_FILES[kind]).is_file():
                raise CheckpointError(f"directory has no {_EXPORT_FILES[kind]}")
            config = _export_config(path) if kind == "generator" else None
        path = path / _EXPORT_FILES[kind]
    with _about(path):
        return extract_state_dict(_read_file(path, map_location), kind), config, path


# ------------------------------------------------------------------------------------------------ loading
def _load_into(model: torch.nn.Module, state_dict: Mapping[str, Tensor], strict: bool, config: Any) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = shape_problems(state_dict, expected)
    if not strict:  # missing/unexpected keys are allowed, wrong shapes never are
        problems = [p for p in problems if "wrong shape" in p]
    if problems:
        raise CheckpointError(f"does not fit {type(model).__name__}({describe_config(config)}): "
                              + "; ".join(problems))
    model.load_state_dict(state_dict, strict=strict)


def _build(cls: type, config: Any) -> Any:
    try:
        return cls.from_config(config)
    except ValueError as error:  # e.g. a config whose channel table has a zero entry
        raise CheckpointError(f"cannot build {cls.__name__}({describe_config(config)}): {error}") from None


def describe_config(config: Any) -> str:
    shown = ("size", "style_dim", "n_mlp", "channel_multiplier", "narrow")
    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(config).items() if k in shown)


def load_generator(path_or_name: str | Path, map_location: str | torch.device = "cpu", strict: bool = True,
                   config: GeneratorConfig | None = None) -> GPENGenerator:
    """Build a ``GPENGenerator`` with the checkpoint's config and load its weights (eval mode).

    Args:
        path_or_name: checkpoint file, export directory or registry name (e.g. ``"GPEN-BFR-512"``).
        map_location: where tensors are loaded (``torch.load`` semantics); the model stays on the CPU.
        strict: require exactly the model's keys (shapes must always match).
        config: expected config; by default ``config.json`` of an export directory, else inferred.

    This module knows no export format of the project: ``gpen_fewshot.export.load_generator`` is the loader
    that also takes the project's person / model exports (delta ones included) and falls back to this one.

    Raises:
        CheckpointError: unreadable/wrong file or weights that do not fit; one message naming the file.
    """
    state_dict, exported, path = _read_with_config(path_or_name, "generator", map_location)
    with _about(path):
        if config is None and exported is not None:
            config = _config_from_json(exported)
        config = config or infer_generator_config(state_dict)
        model = _build(GPENGenerator, config)
        _load_into(model, state_dict, strict, config)
    return model.eval()


def load_discriminator(path_or_name: str | Path, map_location: str | torch.device = "cpu",
                       strict: bool = True, config: DiscriminatorConfig | None = None) -> GPENDiscriminator:
    """Build a ``GPENDiscriminator`` with the checkpoint's (inferred) config and load it (eval mode).

    Args and errors as ``load_generator``.
    """
    state_dict, _, path = _read_with_config(path_or_name, "discriminator", map_location)
    with _about(path):
        config = config or infer_discriminator_config(state_dict)
        model = _build(GPENDiscriminator, config)
        _load_into(model, state_dict, strict, config)
    return model.eval()
