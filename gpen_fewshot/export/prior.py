"""Export a pretrained prior (EMA generator + discriminator) from a training run as bundled safetensors files.

``python train.py experiment=pretrain ...`` leaves Lightning checkpoints in ``<run dir>/checkpoints/``
(``last.ckpt``, ``best.ckpt``). :func:`export_prior` turns one of them into the two files the weights registry
ships in ``gpen_fewshot/assets/weights/``:

- ``<name>.safetensors``: the EMA generator (``generator_ema.*``, never the raw ``generator.*``);
- ``<name>-D.safetensors``: the discriminator (kept so that few-shot runs start with a trained D).

Tensors are stored in float16 by default (half the size; ``load_generator`` / ``load_discriminator`` read
them into float32 models). Each file's safetensors metadata names the format, the network's config fields,
the source checkpoint and its iteration, the date and how it was trained. Both files are written and then
reloaded from a hidden temporary folder next to their destination, with the project's strict loaders; only
when the reloaded tensors equal the stored ones and the reloaded generator restores a fixed random input like
the float32 EMA generator (max abs difference within ``tolerance``) are they renamed into place. An
interrupted or failed export leaves no file behind (a killed process may leave the hidden
``.<name>.*.tmp`` folder, which the package data never includes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
from gpen_fewshot.archs.checkpoints import (
    CheckpointError,
    extract_state_dict,
    infer_discriminator_config,
    infer_generator_config,
    load_discriminator,
    load_generator,
    read_checkpoint_file,
)
from gpen_fewshot.archs.discriminator import DiscriminatorConfig
from gpen_fewshot.archs.gpen import GeneratorConfig
from gpen_fewshot.export.common import ExportError, package_version
from gpen_fewshot.utils.atomic import atomic_write_bytes
from gpen_fewshot.utils.hashing import sha256_file

PRIOR_FORMAT = "gpen-fewshot-prior"
PRIOR_FORMAT_VERSION = 1
TRAINED_BY = "gpen-fewshot experiment=pretrain"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
CHECKPOINTS = ("last", "best")
DISCRIMINATOR_SUFFIX = "-D"
# Max abs difference (images in [-1, 1]) between the float32 EMA generator and the reloaded file on the check
# input. fp16 weights (11-bit mantissa) moved an early compact_256 checkpoint's output by 1.9e-3 (measured);
# 0.02 is 2.5 grey levels of 255.
DEFAULT_TOLERANCE = 0.02
CHECK_SEED = 0
CHECK_BATCH = 2
_EMA_PREFIX = "generator_ema."
_RUN_STATE_KEY = "gpen_fewshot"  # GPENFewShotModule.on_save_checkpoint's entry (iteration, configs)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TrainingCheckpoint:
    """What :func:`read_training_checkpoint` takes from a run's Lightning checkpoint.

    Attributes:
        path: the checkpoint file.
        iteration: the module's iteration counter when it was saved.
        generator: EMA generator state dict (reference key names, as stored).
        discriminator: discriminator state dict.
        generator_config: the config recorded by the run (inferred from the shapes when not recorded).
        discriminator_config: likewise for the discriminator.
        template: alignment template of the training crops, if recorded.
    """

    path: Path
    iteration: int
    generator: dict[str, Tensor]
    discriminator: dict[str, Tensor]
    generator_config: GeneratorConfig
    discriminator_config: DiscriminatorConfig
    template: str | None


@dataclass(frozen=True)
class ExportedFile:
    """One written weight file: path, sha256 (hex) and size in bytes."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class PriorExport:
    """Result of :func:`export_prior`.

    Attributes:
        name: registry name of the generator (the discriminator's is ``name + "-D"``).
        generator: the generator file.
        discriminator: the discriminator file.
        source: the checkpoint read.
        dtype: storage dtype name.
        generator_max_abs_diff: max |G_fp32(x) - G_file(x)| on the check input (images in [-1, 1]).
        discriminator_max_abs_diff: max |D_fp32(x) - D_file(x)| of the logits, for information.
    """

    name: str
    generator: ExportedFile
    discriminator: ExportedFile
    source: TrainingCheckpoint
    dtype: str
    generator_max_abs_diff: float
    discriminator_max_abs_diff: float


# ------------------------------------------------------------------------------------------ reading a run
def find_checkpoint(run_dir_or_ckpt: str | os.PathLike, checkpoint: str = "last") -> Path:
    """The checkpoint file of a run directory (``checkpoints/<checkpoint>.ckpt``), or the file itself.

    Args:
        run_dir_or_ckpt: a training run directory or a ``.ckpt`` file.
        checkpoint: ``"last"`` or ``"best"`` (ignored when a file is given).

    Raises:
        FileNotFoundError: nothing there; the message names the places looked at.
        ValueError: unknown ``checkpoint``.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    path = Path(run_dir_or_ckpt).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint file")
    candidates = [path / "checkpoints" / f"{checkpoint}.ckpt", path / f"{checkpoint}.ckpt"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: holds no checkpoints/{checkpoint}.ckpt (nor {checkpoint}.ckpt); "
                                "is it a training run directory?")
    return found


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:  # weights_only / safetensors only: nothing executable is unpickled
        obj = read_checkpoint_file(path)
    except (CheckpointError, OSError) as error:  # CheckpointError's message starts with "<path>: "
        detail = str(error).removeprefix(f"{path}: ")
        raise ExportError(f"{path}: not a readable Lightning checkpoint ({detail})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(_RUN_STATE_KEY), dict):
        raise ExportError(f"{path}: not a checkpoint of a gpen-fewshot training run (no {_RUN_STATE_KEY!r} "
                          "entry with the iteration; give a run's checkpoints/last.ckpt or best.ckpt)")
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not any(k.startswith(_EMA_PREFIX) for k in state):
        raise ExportError(f"{path}: the checkpoint holds no EMA generator ('{_EMA_PREFIX}*' weights)")
    return obj


def _config(cls: type, recorded: Any, inferred: Any) -> Any:
    """The run's recorded config (it also knows the blur kernel and lr_mlp, which shapes cannot tell), else
    the one inferred from the shapes. A recorded config that does not fit the weights fails at strict
    loading."""
    if not isinstance(recorded, dict):
        return inferred
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})


def read_training_checkpoint(path: str | os.PathLike) -> TrainingCheckpoint:
    """Read the EMA generator, the discriminator and the iteration from a run's Lightning checkpoint.

    Raises:
        ExportError: unreadable, not written by a gpen-fewshot training run, or without an EMA generator;
            the message names the file.
    """
    path = Path(path)
    obj = _load_checkpoint(path)
    run_state = obj[_RUN_STATE_KEY]
    try:
        # generator_ema.* (checked above) wins over generator.*
        generator = extract_state_dict(obj, "generator")
        discriminator = extract_state_dict(obj, "discriminator")
        g_config = _config(GeneratorConfig, run_state.get("generator_config"),
                           infer_generator_config(generator))
        d_config = _config(DiscriminatorConfig, run_state.get("discriminator_config"),
                           infer_discriminator_config(discriminator))
    except (CheckpointError, TypeError) as error:  # TypeError: a recorded config with unknown fields
        raise ExportError(f"{path}: {error}") from None
    return TrainingCheckpoint(path, int(run_state.get("iteration", 0)), generator, discriminator, g_config,
                              d_config, run_state.get("template"))


# ---------------------------------------------------------------------------------------------- writing
def prior_filenames(name: str) -> tuple[str, str]:
    """File names of the generator and the discriminator: ``<name>.safetensors``, ``<name>-D.safetensors``.

    Raises:
        ValueError: ``name`` is not a plain file-name stem (letters, digits, ``.``, ``_``, ``-``).
    """
    if not _NAME.fullmatch(name) or name.endswith(".safetensors"):
        raise ValueError(f"invalid prior name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(e.g. gpen-compact-256)")
    return f"{name}.safetensors", f"{name}{DISCRIMINATOR_SUFFIX}.safetensors"


def _storage(state: dict[str, Tensor], dtype: str, what: str) -> dict[str, Tensor]:
    """CPU, contiguous copies in the storage dtype; every value must stay finite (fp16 overflows at 65504)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in state.items()}
    bad = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ExportError(f"{len(bad)} {what} tensor(s) are not finite in {dtype} (first: {bad[0]})")
    return out


def prior_metadata(kind: str, config: GeneratorConfig | DiscriminatorConfig, source: TrainingCheckpoint,
                   name: str, dtype: str) -> dict[str, str]:
    """The safetensors metadata of one file (string values; config fields JSON-encoded, e.g. ``"0.25"``).

    Args:
        kind: ``"generator"`` or ``"discriminator"``.
        config: the network's config.
        source: the checkpoint the weights come from.
        name: registry name of the file.
        dtype: storage dtype name.
    """
    fields = {key: json.dumps(value) for key, value in config.asdict().items()}
    return {
        "format": "pt",  # the safetensors convention for PyTorch tensors
        "gpen_fewshot_format": PRIOR_FORMAT,
        "format_version": str(PRIOR_FORMAT_VERSION),
        "name": name,
        "kind": kind,
        "architecture": GPENGenerator.__name__ if kind == "generator" else GPENDiscriminator.__name__,
        **fields,
        "dtype": dtype,
        "template": source.template or "unknown",
        "source_checkpoint": "/".join(source.path.resolve().parts[-3:]),
        "source_checkpoint_sha256": sha256_file(source.path),
        "source_iteration": str(source.iteration),
        "trained_by": TRAINED_BY,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": package_version(),
    }


def _write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save


    atomic_write_bytes(path, save(tensors, metadata=metadata))


# ------------------------------------------------------------------------------------------ verification
def _reference(cls: type, config: Any, state: dict[str, Tensor], path: Path) -> nn.Module:
    """The float32 network of the checkpoint (strict), in eval mode."""
    try:
        model = cls.from_config(config)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0][:200]
        raise ExportError(f"{path}: the weights do not fit {cls.__name__}({config}): {first}") from None
    return model.eval()


def check_input(size: int, batch: int = CHECK_BATCH, seed: int = CHECK_SEED) -> Tensor:
    """The fixed random check input: (batch, 3, size, size) float32 RGB uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, size, size), generator=generator) * 2 - 1


def _same_tensors(model: nn.Module, stored: dict[str, Tensor], path: Path) -> None:
    """The reloaded float32 model holds exactly the stored tensors (cast back to the storage dtype)."""
    loaded = model.state_dict()
    if loaded.keys() != stored.keys():
        raise ExportError(f"{path}: reloaded keys differ from the stored ones")
    changed = [k for k, v in stored.items() if not torch.equal(loaded[k].to(v.dtype), v)]
    if changed:
        raise ExportError(f"{path}: {len(changed)} tensor(s) reload with other values (first: {changed[0]})")


@torch.no_grad()
def _max_abs_diff(reference: nn.Module, loaded: nn.Module, x: Tensor) -> float:
    return float((reference(x).float() - loaded(x).float()).abs().max())


def verify_prior(g_path: Path, d_path: Path, source: TrainingCheckpoint,
                 stored: tuple[dict[str, Tensor], dict[str, Tensor]],
                 tolerance: float) -> tuple[float, float]:
    """Reload both files strictly and compare them with the checkpoint's float32 networks.

    Returns:
        ``(generator, discriminator)`` max abs differences on :func:`check_input` (restored images in
        [-1, 1]; discriminator logits).

    Raises:
        ExportError: a file does not reload strictly or with the stored values, or the generator's
            difference is not finite or above ``tolerance``.
    """
    try:
        g_loaded, d_loaded = load_generator(g_path, strict=True), load_discriminator(d_path, strict=True)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    _same_tensors(g_loaded, stored[0], g_path)
    _same_tensors(d_loaded, stored[1], d_path)
    x = check_input(source.generator_config.size)
    g_ref = _reference(GPENGenerator, source.generator_config, source.generator, source.path)
    g_diff = _max_abs_diff(g_ref, g_loaded, x)
    if not g_diff <= tolerance:  # also catches NaN
        raise ExportError(f"{g_path}: the reloaded generator differs from the float32 EMA generator by "
                          f"{g_diff:.3g} (max abs, images in [-1, 1]) > tolerance {tolerance:g}")
    d_ref = _reference(GPENDiscriminator, source.discriminator_config, source.discriminator, source.path)
    return g_diff, _max_abs_diff(d_ref, d_loaded, x)


# ------------------------------------------------------------------------------------------------ export
def export_prior(run_dir_or_ckpt: str | os.PathLike, name: str, out_dir: str | os.PathLike,
                 checkpoint: str = "last", dtype: str = "float16",
                 tolerance: float = DEFAULT_TOLERANCE) -> PriorExport:
    """Write ``<out_dir>/<name>.safetensors`` (EMA generator) and ``<name>-D.safetensors`` (discriminator).

    Both files are written and verified (:func:`verify_prior`) in a hidden temporary folder inside
    ``out_dir``, then renamed into place (replacing older files); on any error nothing is left behind.

    Args:
        run_dir_or_ckpt: a pretraining run directory or one of its ``.ckpt`` files.
        name: registry name of the generator, e.g. ``"gpen-compact-256"``.
        out_dir: destination folder, e.g. ``gpen_fewshot/assets/weights``.
        checkpoint: ``"last"`` or ``"best"`` when a run directory is given.
        dtype: ``"float16"`` or ``"float32"`` storage.
        tolerance: max abs difference allowed between the float32 EMA generator and the reloaded file.

    Raises:
        FileNotFoundError: no such run directory / checkpoint.
        ValueError: bad ``name``, ``checkpoint`` or ``dtype``.
        ExportError: the checkpoint is not usable, or the written files fail verification.
    """
    g_name, d_name = prior_filenames(name)
    source = read_training_checkpoint(find_checkpoint(run_dir_or_ckpt, checkpoint))
    stored = (_storage(source.generator, dtype, "generator"),
              _storage(source.discriminator, dtype, "discriminator"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        _write(tmp / g_name, stored[0],
               prior_metadata("generator", source.generator_config, source, name, dtype))
        _write(tmp / d_name, stored[1], prior_metadata("discriminator", source.discriminator_config, source,
                                                       name + DISCRIMINATOR_SUFFIX, dtype))
        g_diff, d_diff = verify_prior(tmp / g_name, tmp / d_name, source, stored, tolerance)
        files = tuple(ExportedFile(out / f, sha256_file(tmp / f), (tmp / f).stat().st_size)
                      for f in (g_name, d_name))
        for file_name in (g_name, d_name):
            os.replace(tmp / file_name, out / file_name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PriorExport(name, files[0], files[1], source, dtype, g_diff, d_diff)


def registry_lines(result: PriorExport, licence: str) -> str:
    """Python source of the two ``WeightSpec`` entries of ``result`` (location ``"bundled"``)."""
    g, d = result.source.generator_config, result.source.discriminator_config
    what = (f"{g.size} px (style_dim {g.style_dim}, n_mlp {g.n_mlp}, cm {g.channel_multiplier}, "
            f"narrow {g.narrow})")
    entries = [
        (result.name, result.generator, "generator",
         f"GPEN prior {what}, EMA generator trained by {TRAINED_BY} "
         f"({result.source.iteration} iterations), {result.dtype}, bundled"),
        (result.name + DISCRIMINATOR_SUFFIX, result.discriminator, "discriminator",
         f"discriminator trained with {result.name} (cm {d.channel_multiplier}, narrow {d.narrow}), "
         f"{result.dtype}, bundled"),
    ]
    q = json.dumps  # a JSON string is a valid Python string literal, always double-quoted
    return "\n".join(
        f"WeightSpec({q(name)}, {q(file.path.name)}, None, {q(file.sha256)}, {file.size:_},\n"
        f"           {q(licence)},\n           {q(description)}, {q(kind)}, \"bundled\"),"
        for name, file, kind, description in entries)


def constant_lines(result: PriorExport) -> str:
    """The checksum/size constants of ``gpen_fewshot/weights.py`` that pin ``result``'s two files.

    The constant names come from the registry name: ``gpen-compact-256`` -> ``COMPACT_256_SHA256`` etc.
    """
    stem = re.sub(r"[^A-Za-z0-9]+", "_", result.name.removeprefix("gpen-")).upper()
    lines = []
    for prefix, file in ((stem, result.generator), (stem + "_D", result.discriminator)):
        lines += [f'{prefix}_SHA256: str | None = "{file.sha256}"',
                  f"{prefix}_SIZE: int | None = {file.size:_}"]
    return "\n".join(lines)
