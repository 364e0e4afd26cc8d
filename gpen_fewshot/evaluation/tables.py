"""Metric tables of an evaluation: what each metric means and which direction is better, per-level tables
with the best values in bold and deltas vs the base, the mean over levels, rankings and the specificity flags.

Tables are ``results[set][model][level][metric] -> float | Unavailable`` (see ``runner.py``). "Best" is
judged among the base and tuned models (never the ``input`` row), only where at least two have a number.
The files (report.md, metrics.csv/json, grids) are written by :mod:`gpen_fewshot.evaluation.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpen_fewshot.evaluation.values import MetricValue, Unavailable

MEAN_LEVEL = "mean"


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, whether higher is better (None: not a score), decimals."""

    label: str
    higher_is_better: bool | None
    decimals: int


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("PSNR", True, 2),
    "ssim": MetricInfo("SSIM", True, 4),
    "psnr_y": MetricInfo("PSNR-Y", True, 2),
    "ssim_y": MetricInfo("SSIM-Y", True, 4),
    "lpips": MetricInfo("LPIPS", False, 4),
    "fid": MetricInfo("FID", False, 2),
    "kid": MetricInfo("KID", False, 4),
    "kid_std": MetricInfo("KID std", None, 4),
    "fid_num_images": MetricInfo("n (FID)", None, 0),
    "niqe": MetricInfo("NIQE", False, 3),
    "id_distance_gt": MetricInfo("ID dist GT", False, 3),
    "id_similarity_gt": MetricInfo("ID sim GT", True, 3),
    "id_verified_gt": MetricInfo("verified GT", True, 2),
    "id_distance_ref": MetricInfo("ID dist ref", False, 3),
    "id_similarity_ref": MetricInfo("ID sim ref", True, 3),
    "id_verified_ref": MetricInfo("verified ref", True, 2),
    "mfn_similarity_gt": MetricInfo("MFN sim GT", True, 3),
    "mfn_verified_gt": MetricInfo("MFN verified GT", True, 2),
    "mfn_similarity_ref": MetricInfo("MFN sim ref", True, 3),
    "mfn_verified_ref": MetricInfo("MFN verified ref", True, 2),
    "num_images": MetricInfo("n images", None, 0),
}
SUMMARY_METRICS = ("psnr", "ssim", "lpips", "fid", "niqe", "id_distance_gt", "id_distance_ref",
                   "id_verified_ref")
# The network behind each identity metric: a model trained with that network's identity loss optimised it.
_METRIC_NETWORKS = {"id_": "dlib", "mfn_": "mobilefacenet"}
TRAINED_ON_MARK = "†"


def metric_network(metric: str) -> str | None:
    """The identity network a metric is computed with (``"dlib"``, ``"mobilefacenet"``), None for others."""
    return next((net for prefix, net in _METRIC_NETWORKS.items() if metric.startswith(prefix)), None)


# On other people, closeness to the *evaluated person's* reference is what must NOT grow.
_OTHERS_FLIPPED = ("id_distance_ref", "id_similarity_ref", "id_verified_ref", "mfn_similarity_ref",
                   "mfn_verified_ref")


def direction(metric: str, set_name: str = "person") -> bool | None:
    """True if higher is better, False if lower is, None if not a score (unknown metrics: None)."""
    info = METRICS.get(metric)
    if info is None or info.higher_is_better is None:
        return None
    if set_name == "others" and metric in _OTHERS_FLIPPED:
        return not info.higher_is_better
    return info.higher_is_better


def _number(value: Any) -> float | None:
    return None if isinstance(value, Unavailable) or value is None else float(value)


def metric_names(table: Mapping[str, Mapping[str, Mapping[str, MetricValue]]]) -> list[str]:
    """Metrics present in a set's table, known ones in ``METRICS`` order, then others sorted."""
    present = {m for levels in table.values() for values in levels.values() for m in values}
    return [m for m in METRICS if m in present] + sorted(present - METRICS.keys())


def level_mean(levels: Mapping[str, Mapping[str, MetricValue]], metric: str,
               level_names: Sequence[str]) -> MetricValue:
    """Mean of a metric over levels; ``Unavailable`` (the first reason) if any level lacks a number."""
    values = []
    for level in level_names:
        value = levels.get(level, {}).get(metric, Unavailable(f"{metric}: not computed"))
        if isinstance(value, Unavailable):
            return value
        values.append(float(value))
    return float(np.mean(values)) if values else Unavailable(f"{metric}: no levels")


def best_models(table: Mapping[str, Mapping[str, Mapping[str, MetricValue]]], candidates: Sequence[str],
                level: str, metric: str, set_name: str = "person",
                level_names: Sequence[str] = ()) -> set[str]:
    """Models with the best value of ``metric`` at ``level`` (ties: all); empty when fewer than 2 numbers.

    ``level`` may be ``"mean"`` (mean over ``level_names``).
    """
    higher = direction(metric, set_name)
    if higher is None:
        return set()
    values = {}
    for model in candidates:
        value = (level_mean(table.get(model, {}), metric, level_names) if level == MEAN_LEVEL
                 else table.get(model, {}).get(level, {}).get(metric))
        if _number(value) is not None and not math.isnan(float(value)):
            values[model] = float(value)
    if len(values) < 2 or len(set(values.values())) == 1:  # nothing to choose between
        return set()
    target = max(values.values()) if higher else min(values.values())
    return {m for m, v in values.items() if v == target}


def delta(value: MetricValue | None, base: MetricValue | None, metric: str | None = None) -> float | None:
    """``value - base`` when both are finite numbers (and ``metric``, if named, is a score), else None."""
    if metric is not None and direction(metric) is None:
        return None
    a, b = _number(value), _number(base)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a - b


def format_value(value: MetricValue | None, metric: str) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    if not math.isfinite(number):
        return str(number)
    return f"{number:.{METRICS[metric].decimals if metric in METRICS else 4}f}"


def _fmt_delta(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    return f" ({value:+.{METRICS[metric].decimals if metric in METRICS else 4}f})"


def format_cell(value: MetricValue | None, metric: str, is_best: bool, diff: float | None) -> str:
    """Markdown cell: value (bold when best) and the delta vs base in parentheses."""
    text = format_value(value, metric)
    return (f"**{text}**" if is_best else text) + _fmt_delta(diff, metric)


# -------------------------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class TableContext:
    """Roles needed to mark a table: the candidates for "best" and each model's base row (or None)."""

    candidates: tuple[str, ...]
    base_of: Mapping[str, str | None]
    levels: tuple[str, ...]
    trained_on: Mapping[str, str | None] = field(default_factory=dict)  # model -> its identity-loss network


def context_from_models(models: Sequence[Mapping[str, Any]], levels: Sequence[str]) -> TableContext:
    """Candidates = base and tuned rows; every tuned row's base is the ``base`` row when there is one."""
    names = [m["name"] for m in models if m["role"] != "input"]
    base = next((m["name"] for m in models if m["role"] == "base"), None)
    base_of = {m["name"]: (base if m["role"] == "tuned" else None) for m in models}
    trained_on = {m["name"]: m.get("identity_loss") for m in models}
    return TableContext(tuple(names), base_of, tuple(levels), trained_on)


def level_table(table: Mapping[str, Mapping[str, Mapping[str, MetricValue]]], rows: Sequence[str], level: str,
                ctx: TableContext, set_name: str, metrics: Sequence[str] | None = None) -> str:
    """Markdown table of one level (or ``"mean"``): rows = models, columns = metrics."""
    metrics = list(metrics or metric_names(table))
    arrows = {True: " ↑", False: " ↓", None: ""}
    header = "| model | " + " | ".join(METRICS[m].label + arrows[direction(m, set_name)]
                                       if m in METRICS else m
                                       for m in metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    best = {m: best_models(table, ctx.candidates, level, m, set_name, ctx.levels) for m in metrics}
    for model in rows:
        cells = []
        for metric in metrics:
            value = _value(table, model, level, metric, ctx.levels)
            base = ctx.base_of.get(model)
            diff = delta(value, _value(table, base, level, metric, ctx.levels), metric) if base else None
            cell = format_cell(value, metric, model in best[metric], diff)
            trained = (metric_network(metric) is not None and
                       metric_network(metric) == ctx.trained_on.get(model))
            cells.append(f"{cell} {TRAINED_ON_MARK}" if trained else cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _value(table: Mapping, model: str | None, level: str, metric: str,
           levels: Sequence[str]) -> MetricValue | None:
    if model is None or model not in table:
        return None
    if level == MEAN_LEVEL:
        return level_mean(table[model], metric, levels)
    return table[model].get(level, {}).get(metric)


def ranking(table: Mapping[str, Mapping[str, Mapping[str, MetricValue]]], models: Sequence[str], metric: str,
            level: str, levels: Sequence[str], set_name: str = "person") -> list[tuple[str, float | None]]:
    """Models ordered best first by ``metric`` at ``level`` (or ``"mean"``); models without a number last."""
    higher = direction(metric, set_name)
    if higher is None:
        raise ValueError(f"rank_by={metric!r} is not a score; choose one of "
                         f"{[m for m in METRICS if METRICS[m].higher_is_better is not None]}")
    scored = [(m, _number(_value(table, m, level, metric, levels))) for m in models]
    have = sorted((s for s in scored if s[1] is not None), key=lambda s: s[1], reverse=higher)
    return have + [s for s in scored if s[1] is None]


def specificity_flags(others: Mapping[str, Mapping[str, Mapping[str, MetricValue]]], ctx: TableContext,
                      tolerance: float, person: str) -> list[str]:
    """Warnings where a tuned model hurts other people's identity compared with its base.

    Flags: mean distance to their own ground truth grows by more than ``tolerance``, or their distance to the
    person's reference shrinks by more than ``tolerance`` (faces pulled towards the person).
    """
    flags = []
    for model, base in ctx.base_of.items():
        if base is None or model not in others or base not in others:
            continue
        for level in ctx.levels:
            mine, theirs = others[model].get(level, {}), others[base].get(level, {})
            own = delta(mine.get("id_distance_gt"), theirs.get("id_distance_gt"))
            ref = delta(mine.get("id_distance_ref"), theirs.get("id_distance_ref"))
            if own is not None and own > tolerance:
                flags.append(f"{model} @ {level}: other people's identity drops: distance to their own "
                             f"ground truth {own:+.3f} vs {base} (tolerance {tolerance:g})")
            if ref is not None and ref < -tolerance:
                flags.append(f"{model} @ {level}: other people are pulled towards {person}: distance to "
                             f"{person}'s reference {ref:+.3f} vs {base} (tolerance {tolerance:g})")
    return flags
