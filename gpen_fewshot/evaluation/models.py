"""Which models to evaluate: ``ckpt`` specs -> named generators, with the base they were tuned from.

A spec entry is one of

- a checkpoint file (Lightning ``.ckpt``, reference/bare ``.pth``, ``.safetensors``);
- an export directory (``config.json`` + ``model.safetensors``: a person or model export, delta or full, e.g.
  a training run's ``export/`` or a registered ``data/persons/<name>/weights``); a person folder with
  ``weights/`` also works;
- a training run directory (``outputs/<person>/<date>_<time>/``): its ``export/`` by default, or its
  ``checkpoints/last.ckpt`` / ``best.ckpt`` (``checkpoint=last|best``);
- a multirun (sweep) directory: every run inside it, each tagged with its sweep overrides;
- a glob pattern of any of these, or a weights-registry name (``GPEN-BFR-512``).

The base model is always evaluated too: ``base=`` when given (registry name or path; ``none`` = no base),
otherwise the base the tuned models record (the export's ``base`` record, where a run's or a person's export
without one was trained from random weights; else the run config's ``model.generator_weights``).
"""

from __future__ import annotations

import dataclasses
import glob
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.archs.checkpoints import CheckpointError
from gpen_fewshot.export.common import recover_export_dir
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.persons import weights_dir as default_export_dir
from gpen_fewshot.utils.jsonfile import read_json_object
from gpen_fewshot.weights import REGISTRY

RANDOM = "random"  # recorded base of a run that started from random weights
NO_BASE = ("none", "null", "")
_SELECT = ("export", "last", "best")
_GLOB_CHARS = set("*?[")


class ModelSpecError(ValueError):
    """A ``ckpt`` / ``base`` entry names nothing loadable; the message names the entry and what is wrong."""


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate.

    Attributes:
        name: unique display name (``base`` for the base model).
        role: ``"base"`` or ``"tuned"``.
        source: file, directory or registry name to load.
        format: ``"registry"``, ``"checkpoint"`` or ``"export"`` (person/model export directory).
        template: alignment template the model expects (None: unknown, the evaluation default is used).
        base: recorded base source (path or registry name), ``"random"`` or None (unknown).
        run_dir: the training run directory the model comes from, if any.
        sweep: name of the multirun directory it belongs to, if any.
        overrides: the sweep's command-line overrides of its run.
        identity_loss: the identity network a loss term of its training read (from the export's person.json or
            the run's config), None when none did or it is unknown.
    """

    name: str
    role: str
    source: str
    format: str
    template: str | None = None
    base: str | None = None
    run_dir: Path | None = None
    sweep: str | None = None
    overrides: tuple[str, ...] = ()
    identity_loss: str | None = None


# ------------------------------------------------------------------------------------------ small readers
def _read_json(path: Path) -> dict:
    return read_json_object(path, ModelSpecError)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ModelSpecError(f"{path}: unreadable YAML ({err})") from None


def run_config(run_dir: Path) -> dict:
    """The composed training config of a run (``.hydra/config.yaml``), or {} when there is none."""
    path = run_dir / ".hydra" / "config.yaml"
    data = _read_yaml(path) if path.is_file() else None
    return data if isinstance(data, dict) else {}


def _plain(value: Any) -> str | None:
    """A recorded string, or None for missing values and unresolved ``${...}`` interpolations."""
    if value is None or (isinstance(value, str) and "${" in value):
        return None
    return str(value)


# -------------------------------------------------------------------------------------- kinds of folders
def is_export_dir(folder: Path) -> bool:
    """An export directory of ``gpen_fewshot.export``: ``config.json`` + ``model.safetensors``."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def is_run_dir(folder: Path) -> bool:
    """A training run: has ``checkpoints/``, ``export/`` or ``.hydra/config.yaml``."""
    return ((folder / "checkpoints").is_dir() or (folder / "export").is_dir()
            or (folder / ".hydra" / "config.yaml").is_file())


def sweep_runs(folder: Path) -> list[Path]:
    """Run directories directly inside a multirun directory, in numeric-then-name order."""
    subs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and is_run_dir(d)]
    return sorted(subs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


# ----------------------------------------------------------------------------------------- spec building
def _display_name(path: Path) -> str:
    if path.name in ("export", "weights") and path.parent.name:
        return path.parent.name
    if path.is_file() and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem if path.is_file() else path.name


def _recorded_template_and_base(run_dir: Path | None, export: Path | None) -> tuple[str | None, str | None]:
    template = base = None
    if run_dir is not None:
        config = run_config(run_dir)
        model, data = config.get("model") or {}, config.get("data") or {}
        template = _plain(data.get("template"))
        if model:
            base = RANDOM if model.get("init") == "random" else _plain(model.get("generator_weights"))
    if export is not None and (export / "config.json").is_file():
        config = _read_json(export / "config.json")
        template = _plain(config.get("template")) or template
        record = config.get("base")
        if isinstance(record, dict):  # the recorded file if still there, else its name
            path = record.get("path")
            base = _plain(path) if path and Path(path).exists() else _plain(record.get("name"))
        elif "base" in config and (run_dir is not None or (export / "person.json").is_file()):
            base = RANDOM  # a finished run records its base checkpoint; none means random initial weights
    return template, base


# Identity terms that read the identity network, and the network of configs written before it was selectable.
_IDENTITY_TERMS = ("identity", "identity_reference", "face_perceptual")
_LEGACY_IDENTITY_NETWORK = "irse50"


def recorded_identity_loss(run_dir: Path | None, export: Path | None) -> str | None:
    """The identity network the model's training had in its loss: ``person.json``'s record, else the run's
    ``loss`` config (a network only when one of the identity terms is non-zero); None when none or unknown."""
    if export is not None and (export / "person.json").is_file():
        recorded = _read_json(export / "person.json").get("identity_loss")
        if isinstance(recorded, str):
            return recorded
    loss = (run_config(run_dir).get("loss") or {}) if run_dir is not None else {}
    if not any(isinstance(loss.get(t), (int, float)) and loss.get(t) for t in _IDENTITY_TERMS):
        return None
    return _plain(loss.get("identity_network", _LEGACY_IDENTITY_NETWORK))


def _run_spec(run_dir: Path, select: str, sweep: str | None = None) -> ModelSpec:
    export = run_dir / "export"
    found = is_export_dir(export)
    overrides: tuple[str, ...] = ()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if sweep is not None and overrides_file.is_file():
        overrides = tuple(str(o) for o in (_read_yaml(overrides_file) or []))
    name = f"{sweep}/{run_dir.name}" if sweep else run_dir.name
    template, base = _recorded_template_and_base(run_dir, export if found else None)
    identity = recorded_identity_loss(run_dir, export if found else None)
    if select == "export" and found:
        return ModelSpec(name, "tuned", str(export), "export", template, base, run_dir, sweep, overrides,
                         identity)
    stem = "best" if select == "best" else "last"  # no export yet: the latest weights
    ckpt = run_dir / "checkpoints" / f"{stem}.ckpt"
    if ckpt.is_file():
        return ModelSpec(f"{name}/{stem}" if select != "export" else name, "tuned", str(ckpt), "checkpoint",
                         template, base, run_dir, sweep, overrides, identity)
    wanted = "export/ or checkpoints/last.ckpt" if select == "export" else f"checkpoints/{select}.ckpt"
    raise ModelSpecError(f"{run_dir}: training run without {wanted} (did it finish?)")


def _path_specs(path: Path, select: str) -> list[ModelSpec]:
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        template, base = _recorded_template_and_base(run_dir, run_dir / "export" if run_dir else None)
        identity = recorded_identity_loss(run_dir, None)
        return [ModelSpec(_display_name(path), "tuned", str(path), "checkpoint", template, base, run_dir,
                          identity_loss=identity)]
    for folder in (path, path / "weights"):
        if is_export_dir(folder):
            run_dir = folder.parent if folder.name == "export" and is_run_dir(folder.parent) else None
            template, base = _recorded_template_and_base(run_dir, folder)
            return [ModelSpec(_display_name(folder), "tuned", str(folder), "export", template, base, run_dir,
                              identity_loss=recorded_identity_loss(run_dir, folder))]
    if is_run_dir(path):
        return [_run_spec(path, select)]
    runs = sweep_runs(path)
    if runs:
        return [_run_spec(run, select, sweep=path.name) for run in runs]
    raise ModelSpecError(f"ckpt: {path} is not a checkpoint file, an export directory, a training run or a "
                         "multirun directory (it has no config.json, checkpoints/, export/ or run folders)")


def _entry_specs(entry: str, select: str) -> list[ModelSpec]:

    expanded = Path(entry).expanduser()
    if _GLOB_CHARS & set(entry):
        matches = sorted(glob.glob(str(expanded)))
        if not matches:
            raise ModelSpecError(f"ckpt: the pattern {entry!r} matches nothing")
        return [spec for match in matches for spec in _path_specs(Path(match), select)]
    if expanded.exists():
        return _path_specs(expanded, select)
    if entry in REGISTRY and REGISTRY[entry].kind == "generator":
        return [ModelSpec(entry, "tuned", entry, "registry", "gpen", None)]
    raise ModelSpecError(f"ckpt: {entry}: no such file or directory (and not a generator name of the weights "
                         f"registry: {', '.join(n for n, s in REGISTRY.items() if s.kind == 'generator')})")


def _unique_names(specs: list[ModelSpec]) -> list[ModelSpec]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        out.append(spec if seen[spec.name] == 1
                   else dataclasses.replace(spec, name=f"{spec.name}~{seen[spec.name]}"))
    return out


def _base_spec(source: str, template: str | None) -> ModelSpec:

    path = Path(source).expanduser()
    if path.exists():
        found = path.is_dir() and is_export_dir(path)
        if path.is_dir() and not found:
            raise ModelSpecError(f"base: {path} is a directory but not an export directory "
                                 "(no config.json + model.safetensors)")
        recorded, _ = _recorded_template_and_base(None, path if found else None)
        return ModelSpec("base", "base", str(path), "export" if found else "checkpoint", recorded or template)
    if source in REGISTRY and REGISTRY[source].kind == "generator":
        return ModelSpec("base", "base", source, "registry", "gpen")
    raise ModelSpecError(f"base: {source}: no such file or directory, and not a generator name of the "
                         "weights registry (pass base=<name or path>, or base=none)")


def resolve_models(ckpt: str | Sequence[str] | None, base: str | None = None,
                   select: str = "export") -> list[ModelSpec]:
    """Resolve ``ckpt`` entries into model specs, the base first.

    Args:
        ckpt: one entry or a list (see module docstring); None/empty = only the base.
        base: base model (registry name or path); ``"none"`` = no base; None = the recorded one.
        select: for run directories: ``"export"`` (falls back to last.ckpt), ``"last"`` or ``"best"``.

    Returns:
        ``[base, tuned...]`` (the base is absent only with ``base="none"``).

    Raises:
        ModelSpecError: a bad entry, no base recorded / different bases recorded and no ``base=`` given.
    """
    if select not in _SELECT:
        raise ModelSpecError(f"checkpoint must be one of {_SELECT}, got {select!r}")
    entries = [ckpt] if isinstance(ckpt, str) else list(ckpt or [])
    tuned = _unique_names([spec for entry in entries for spec in _entry_specs(str(entry), select)])
    template = next((s.template for s in tuned if s.template), None)
    if base is not None and str(base).strip().lower() in NO_BASE:
        if not tuned:
            raise ModelSpecError("nothing to evaluate: no ckpt given and base=none")
        return tuned
    if base is not None:
        return [_base_spec(str(base), template), *tuned]
    if not tuned:
        raise ModelSpecError("nothing to evaluate: give ckpt=<run dir, checkpoint, export dir, glob or list> "
                             "and/or base=<registry name or path>")
    return [_recorded_base(tuned, template), *tuned]


def registered_export(person: str, persons_dir: str | Path | None = None,
                      base: str | None = None) -> str | None:
    """What ``ckpt`` defaults to: the person's registered export (``<persons dir>/<person>/weights``, the one
    ``restore.py --person`` uses); None when there is none but a ``base`` alone was asked for.

    Raises:
        ModelSpecError: no registered export and no ``base``: one line saying how to make one.
    """

    try:
        folder = default_export_dir(person, persons_dir)
    except ValueError as err:
        raise ModelSpecError(f"person: {err}") from None
    recover_export_dir(folder)  # an interrupted re-registration leaves the previous export aside
    if is_export_dir(folder):
        return str(folder)
    if base is not None and str(base).strip().lower() not in NO_BASE:
        return None
    raise ModelSpecError(f"no ckpt given and person {person!r} has no registered export in {folder}: train "
                         f"one with `python train.py person={shlex.quote(person)}`, or pass "
                         "ckpt=<run dir or export>")


def _recorded_base(tuned: list[ModelSpec], template: str | None) -> ModelSpec:
    recorded = {s.base for s in tuned}
    hint = "pass base=<registry name or checkpoint> to compare against, or base=none to evaluate without one"
    if len(recorded) > 1:
        listing = "; ".join(f"{s.name}: {s.base}" for s in tuned)
        raise ModelSpecError(f"the models were tuned from different bases ({listing}); {hint}")
    source = recorded.pop()
    if source is None:
        raise ModelSpecError(f"cannot tell which base {tuned[0].name} ({tuned[0].source}) was tuned from; "
                             f"{hint}")
    if source == RANDOM:
        raise ModelSpecError(f"{tuned[0].name} ({tuned[0].source}) was trained from random weights, so there "
                             f"is no base model to compare with; {hint}")
    return _base_spec(source, template)


# ------------------------------------------------------------------------------------------------ loading
def load_model(spec: ModelSpec) -> GPENGenerator:
    """The spec's generator (CPU, float32, eval mode, no gradients).

    Raises:
        ModelSpecError: the files are unreadable or do not fit (the message names the file).
    """

    try:
        generator = load_generator(spec.source)  # any format, export directories (delta or full) included
    except (CheckpointError, FileNotFoundError) as err:
        raise ModelSpecError(f"{spec.name}: {err}") from None
    generator.requires_grad_(False)
    return generator.eval()
