"""Build the generator and discriminator of a run from a :class:`ModelConfig` (pretrained or random).

``init="pretrained"``: the weights must exist (registry name or path); a missing released file raises the
weights registry's error, which names the file, the folder to put it in and its URL.
``init="auto"``: load when available, otherwise initialise randomly and log a loud warning.
``init="random"``: never load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gpen_fewshot import weights
from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
from gpen_fewshot.archs.checkpoints import load_discriminator
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.training.config import ModelConfig

log = logging.getLogger(__name__)

_BANNER = "!" * 100


@dataclass(frozen=True)
class NetworkSources:
    """Where the initial weights came from: a file path, or ``"random"``."""

    generator: str
    discriminator: str


def locate_weights(source: str, download: bool) -> Path:
    """File of a registry name or path (see :func:`gpen_fewshot.weights.locate`)."""
    return weights.locate(source, download)


def warn_random_init(what: str, source: str | None, reason: str) -> None:
    """Log a banner that the run starts from random weights (results will not be a restoration model)."""
    log.warning(
        "\n%s\n!! RANDOM INITIALISATION of the %s: %s\n!! (%s)\n!! The run will train, but without the GAN "
        "prior it cannot restore faces like GPEN.\n!! Put the weights in place, or choose a released model "
        "(model=gpen_bfr_512 / model=gpen_bfr_256), or set model.init=random to silence this.\n%s",
        _BANNER, what, source or "no weights configured", reason, _BANNER,
    )


def _load(kind: str, source: str | None, config: ModelConfig) -> tuple[nn.Module | None, str]:
    """Load ``source`` per ``config.init``; ``(None, reason)`` when random init is allowed and chosen."""
    if config.init == "random":
        return None, "model.init=random"
    if source is None:
        if config.init == "pretrained" and kind == "generator":
            raise ValueError(f"model {config.name!r}: init=pretrained but no generator_weights configured")
        return None, "no weights configured"
    try:
        path = locate_weights(source, config.download)
    except (FileNotFoundError, KeyError) as error:  # WeightsUnavailableError is a FileNotFoundError
        if config.init == "pretrained":
            raise
        return None, str(error).splitlines()[0]
    loader = load_generator if kind == "generator" else load_discriminator
    return loader(path), str(path)


def _check_generator(generator: GPENGenerator, config: ModelConfig, source: str) -> None:
    """Compare tensor shapes (not config fields: e.g. channel_multiplier has no effect below 64 px)."""
    with torch.device("meta"):
        expected = GPENGenerator(**config.generator_kwargs()).state_dict()
    loaded = generator.state_dict()
    mismatched = sorted(k for k in expected.keys() | loaded.keys()
                        if k not in expected or k not in loaded or expected[k].shape != loaded[k].shape)
    if mismatched:
        raise ValueError(
            f"{source}: generator ({generator.config}) does not match model {config.name!r} "
            f"({config.generator_kwargs()}); {len(mismatched)} tensors differ, e.g. {mismatched[:3]}; "
            "choose the model preset that matches the weights")


def build_networks(config: ModelConfig) -> tuple[GPENGenerator, GPENDiscriminator, NetworkSources]:
    """Generator and discriminator initialised per ``config`` (train mode).

    Raises:
        weights.WeightsUnavailableError: ``init=pretrained`` and a registry file is missing.
        FileNotFoundError: ``init=pretrained`` and a path does not exist.
        ValueError: loaded weights do not match the configured architecture.
    """
    generator, g_source = _load("generator", config.generator_weights, config)
    if generator is None:
        if config.init != "random":
            warn_random_init("generator (GAN prior)", config.generator_weights, g_source)
        generator, g_source = GPENGenerator(**config.generator_kwargs()), "random"
    else:
        _check_generator(generator, config, g_source)
    discriminator, d_source = _load("discriminator", config.discriminator_weights, config)
    if discriminator is None:
        if config.init != "random" and config.discriminator_weights is not None:
            log.warning("discriminator starts from random weights: %s", d_source)
        discriminator, d_source = GPENDiscriminator(**config.discriminator_kwargs()), "random"
    elif discriminator.config.size != config.size:
        raise ValueError(f"{d_source}: discriminator size {discriminator.config.size} != model size "
                         f"{config.size}")
    return generator.train(), discriminator.train(), NetworkSources(g_source, d_source)
