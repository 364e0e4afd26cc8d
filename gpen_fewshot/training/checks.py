"""Type checks of the training config's commonly overridden values, before anything runs: ``iterations=abc``
is one clear line naming the key, not a traceback from deep inside the model or the trainer."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# key -> (kind, smallest allowed value); kind is "int", "float" or "bool". Keys absent from a config are
# skipped.
CHECKED: dict[str, tuple[str, float | None]] = {
    "iterations": ("int", 1),
    "val_every": ("int", 1),
    "seed": ("int", 0),
    "num_sample_images": ("int", 0),
    "validate_before_training": ("bool", None),
    "val_identity": ("bool", None),
    "data.batch_size": ("int", 1),
    "data.samples_per_epoch": ("int", 1),
    "data.num_workers": ("int", 0),
    "data.size": ("int", 16),
    "model.size": ("int", 16),
    "optim.lr_g": ("float", 0),
    "optim.lr_d": ("float", 0),
    "optim.warmup_iters": ("int", 0),
    "callbacks.checkpoint.every_n_iters": ("int", 0),
    "export.register": ("bool", None),
}
_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false"}


class ConfigValueError(ValueError):
    """A config value has the wrong type or range; the message names the key, the value and what is
    expected."""


def _fits(value: Any, kind: str, minimum: float | None) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "int" and not isinstance(value, int):
        return False
    if kind == "float" and not isinstance(value, int | float):
        return False
    if kind == "bool":
        return False
    return minimum is None or value >= minimum


def check_config_values(cfg: DictConfig) -> None:
    """Raise for the first checked key whose value has the wrong type or is below its minimum.

    Raises:
        ConfigValueError: e.g. ``iterations='abc': expected an integer >= 1``.
    """
    for key, (kind, minimum) in CHECKED.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:  # absent from this config (or null: the consumer's default applies)
            continue
        if not _fits(value, kind, minimum):
            bound = f" >= {minimum:g}" if minimum is not None else ""
            raise ConfigValueError(f"{key}={value!r}: expected {_NAMES[kind]}{bound}")
