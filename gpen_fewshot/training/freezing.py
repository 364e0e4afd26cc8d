"""Staged freezing: which parameter groups of G and D train at which iteration.

A :class:`FreezingSchedule` is a list of stages; each stage starts at an iteration (or a fraction of the run)
and names the trainable parameter groups of the generator and the discriminator (the groups of
``GPENGenerator.parameter_groups()`` / ``GPENDiscriminator.parameter_groups()``). Everything not named is
frozen (``requires_grad=False``). Optimisers are built once over all parameters; a frozen parameter never gets
a gradient, and Adam skips parameters whose ``.grad`` is ``None``, so it stays bit-identical and the Adam
state of the others is untouched by stage changes.

Group patterns:
    ``"all"``                        every group;
    a group name (``"encoder"``, ``"d_head"``, ``"d_block_16"``);
    a glob (``"decoder_*"``, ``"d_block_*"``);
    ``"d_lowres:K"``                 the K lowest-resolution discriminator blocks (``d_block_8``,
                                     ``d_block_16``, ...), whatever the model size.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

GENERATOR_GROUPS = ("encoder", "mapping", "decoder_coarse", "decoder_middle", "decoder_fine", "to_rgb",
                    "noise")
_LOWRES = re.compile(r"^d_lowres:(\d+)$")
_D_BLOCK = re.compile(r"^d_block_(\d+)$")


@dataclass(frozen=True)
class Stage:
    """One freezing stage.

    Attributes:
        name: label logged as the active stage.
        start: first iteration of the stage: an ``int`` is an iteration, a ``float`` in [0, 1] a fraction of
            the run's total iterations (``0.4`` = 40 %).
        generator: trainable generator group patterns.
        discriminator: trainable discriminator group patterns.
    """

    name: str
    start: int | float
    generator: tuple[str, ...] = ()
    discriminator: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "generator", tuple(self.generator))
        object.__setattr__(self, "discriminator", tuple(self.discriminator))
        if isinstance(self.start, bool) or self.start < 0 or (isinstance(self.start, float) and
                                                              self.start > 1):
            raise ValueError(f"stage {self.name!r}: start must be an iteration >= 0 or a fraction in [0, 1], "
                             f"got {self.start!r}")

    def start_iteration(self, total_iters: int) -> int:
        """The stage's first iteration in a run of ``total_iters`` iterations."""
        if isinstance(self.start, float):
            return round(self.start * total_iters)
        return int(self.start)


@dataclass(frozen=True)
class ResolvedStage:
    """A stage with its start iteration and the concrete trainable parameter names."""

    index: int
    name: str
    start: int
    generator_params: frozenset[str]
    discriminator_params: frozenset[str]


@dataclass(frozen=True)
class FreezingSchedule:
    """Named sequence of stages (see the module docstring). Stages are given in order of their start."""

    name: str
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, Stage) else Stage(**dict(s)) for s in self.stages)
        if not stages:
            raise ValueError(f"freezing schedule {self.name!r} has no stages")
        object.__setattr__(self, "stages", stages)

    def resolve(self, total_iters: int, generator_groups: Mapping[str, Sequence[str]],
                discriminator_groups: Mapping[str, Sequence[str]]) -> list[ResolvedStage]:
        """Turn patterns into parameter names and starts into iterations.

        Raises:
            ValueError: a pattern matches no known group, starts are not increasing, or the first stage does
                not start at iteration 0.
        """
        resolved = []
        for index, stage in enumerate(self.stages):
            g_groups = expand_patterns(stage.generator, generator_groups, GENERATOR_GROUPS, self.name)
            d_groups = expand_patterns(stage.discriminator, discriminator_groups, (), self.name)
            resolved.append(ResolvedStage(
                index, stage.name, stage.start_iteration(total_iters),
                frozenset(n for g in g_groups for n in generator_groups.get(g, ())),
                frozenset(n for g in d_groups for n in discriminator_groups.get(g, ())),
            ))
        starts = [s.start for s in resolved]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"freezing schedule {self.name!r}: stage starts must begin at 0 and increase, "
                             f"got iterations {starts} for a {total_iters}-iteration run")
        return resolved


def stage_at(stages: Sequence[ResolvedStage], iteration: int) -> ResolvedStage:
    """The stage active at ``iteration`` (the last one whose start is <= iteration)."""
    active = stages[0]
    for stage in stages:
        if stage.start <= iteration:
            active = stage
    return active


def _lowres_blocks(groups: Mapping[str, Sequence[str]], count: int) -> list[str]:
    blocks = sorted((int(m.group(1)), name) for name in groups if (m := _D_BLOCK.match(name)))
    return [name for _, name in blocks[:count]]


def expand_patterns(patterns: Sequence[str], groups: Mapping[str, Sequence[str]], vocabulary: Sequence[str],
                    schedule: str) -> list[str]:
    """Group names selected by ``patterns`` (see the module docstring), in ``groups`` order.

    ``vocabulary`` lists names that are valid even when absent from ``groups`` (a 64-px generator has an
    empty ``decoder_fine``).

    Raises:
        ValueError: a pattern selects nothing and is not in ``vocabulary``.
    """
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == "all":
            hits = list(groups)
        elif match := _LOWRES.match(pattern):
            hits = _lowres_blocks(groups, int(match.group(1)))
        else:
            hits = fnmatch.filter(groups, pattern)
        if not hits and pattern not in vocabulary:
            raise ValueError(f"freezing schedule {schedule!r}: pattern {pattern!r} matches no parameter "
                             f"group; groups are {sorted(groups)}")
        chosen.update(hits)
    return [name for name in groups if name in chosen]


def set_trainable(module: nn.Module, trainable: frozenset[str]) -> tuple[int, int]:
    """Set ``requires_grad`` of every parameter of ``module``: True iff its name is in ``trainable``.

    Gradients of newly frozen parameters are dropped (``grad = None``) so no optimiser can step them.

    Returns:
        ``(trainable_count, frozen_count)`` in number of tensor elements.
    """
    counts = [0, 0]
    for name, param in module.named_parameters():
        flag = name in trainable
        param.requires_grad_(flag)
        if not flag:
            param.grad = None
        counts[0 if flag else 1] += param.numel()
    return counts[0], counts[1]
