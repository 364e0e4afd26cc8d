"""Evaluation outputs: report.md (tables, best values in bold, deltas vs base, ranking), metrics.csv,
metrics.json (both parse back with ``read_csv`` / ``read_json``) and one comparison grid PNG per set and
level.

Tables are ``results[set][model][level][metric] -> float | Unavailable`` (see ``runner.py``). "Best" is
judged among the base and tuned models (never the ``input`` row), only where at least two have a number.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gpen_fewshot.evaluation.grids import labelled_grid
from gpen_fewshot.evaluation.tables import (
    MEAN_LEVEL,
    SUMMARY_METRICS,
    TRAINED_ON_MARK,
    TableContext,
    best_models,
    context_from_models,
    delta,
    format_value,
    level_table,
    metric_names,
    ranking,
    specificity_flags,
)
from gpen_fewshot.evaluation.values import MetricValue, Unavailable
from gpen_fewshot.utils.atomic import atomic_write_json, atomic_write_text
from gpen_fewshot.utils.image import write_image

CSV_FIELDS = ("set", "model", "level", "metric", "value", "delta_vs_base", "best", "unavailable")

def unavailable_reasons(results: Mapping[str, Any]) -> list[str]:
    """Distinct reasons of every ``Unavailable`` value, in first-seen order."""
    seen: dict[str, None] = {}
    for models in results.values():
        for levels in models.values():
            for values in levels.values():
                for value in values.values():
                    if isinstance(value, Unavailable):
                        seen.setdefault(value.reason, None)
    return list(seen)


# ---------------------------------------------------------------------------------- csv / json round trip
def _encode(value: MetricValue) -> Any:
    if isinstance(value, Unavailable):
        return {"unavailable": value.reason}
    number = float(value)
    return number if math.isfinite(number) else str(number)


def _decode(value: Any) -> MetricValue:
    if isinstance(value, dict):
        return Unavailable(str(value["unavailable"]))
    return float(value)


def results_to_json(results: Mapping[str, Any]) -> dict:
    """``results`` with numbers as JSON numbers (non-finite as strings) and ``{"unavailable": reason}``."""
    return {s: {m: {lv: {k: _encode(v) for k, v in vals.items()} for lv, vals in levels.items()}
                for m, levels in models.items()} for s, models in results.items()}


def results_from_json(data: Mapping[str, Any]) -> dict:
    """Inverse of ``results_to_json``."""
    return {s: {m: {lv: {k: _decode(v) for k, v in vals.items()} for lv, vals in levels.items()}
                for m, levels in models.items()} for s, models in data.items()}


def read_json(path: str | Path) -> dict:
    """metrics.json with its ``results`` decoded (floats and ``Unavailable``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data["results"] = results_from_json(data["results"])
    return data


def csv_text(results: Mapping[str, Any], ctxs: Mapping[str, TableContext]) -> str:
    """Long-format CSV: one row per (set, model, level, metric) with the delta vs base and a best flag."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for set_name, models in results.items():
        ctx = ctxs[set_name]
        for model, levels in models.items():
            for level, values in levels.items():
                for metric, value in values.items():
                    base = ctx.base_of.get(model)
                    diff = (delta(value, models.get(base, {}).get(level, {}).get(metric), metric) if base
                            else None)
                    best = model in best_models(models, ctx.candidates, level, metric, set_name, ctx.levels)
                    writer.writerow({"set": set_name, "model": model, "level": level, "metric": metric,
                                     "value": "" if isinstance(value, Unavailable) else repr(float(value)),
                                     "delta_vs_base": "" if diff is None else repr(diff), "best": int(best),
                                     "unavailable": value.reason if isinstance(value, Unavailable) else ""})
    return buffer.getvalue()


def read_csv(path: str | Path) -> dict:
    """metrics.csv back into ``results[set][model][level][metric]`` (floats and ``Unavailable``)."""
    results: dict = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            value = Unavailable(row["unavailable"]) if row["unavailable"] else float(row["value"])
            results.setdefault(row["set"], {}).setdefault(row["model"], {}).setdefault(row["level"], {})[
                row["metric"]] = value
    return results


# ------------------------------------------------------------------------------------------------ grids
def write_grids(grids: Mapping[str, Mapping[str, Mapping[str, Sequence[np.ndarray]]]],
                out_dir: Path) -> list[Path]:
    """``grid_<set>_<level>.png`` per set and level (input | models... | ground truth)."""
    paths = []
    for set_name, levels in grids.items():
        for level, columns in levels.items():
            order = ["input", *[c for c in columns if c not in ("input", "ground truth")], "ground truth"]
            if not columns.get("input"):
                continue
            path = out_dir / f"grid_{set_name}_{level}.png"
            write_image(path, labelled_grid(columns, order))
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class ReportSettings:
    """Ranking and specificity settings of the report."""

    rank_by: str = "psnr"
    rank_level: str = MEAN_LEVEL
    tolerance: float = 0.03


def write_report(evaluation: Any, out_dir: str | Path, settings: ReportSettings = ReportSettings(),
                 protocol: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write report.md, metrics.csv, metrics.json and the grids of an ``EvalResults`` into ``out_dir``.

    Returns:
        name -> path of everything written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = [asdict(m) for m in evaluation.models]
    ctxs = {s: context_from_models([m for m in models if m["name"] in evaluation.results[s]],
                                   evaluation.levels)
            for s in evaluation.results}
    person_ctx = ctxs.get("person")
    tuned = [m["name"] for m in models if m["role"] == "tuned"]
    ranked = (ranking(evaluation.results["person"], tuned, settings.rank_by, settings.rank_level,
                      evaluation.levels)
              if person_ctx and len(tuned) > 1 else [])
    flags = (specificity_flags(evaluation.results["others"], ctxs["others"], settings.tolerance,
                               evaluation.person)
             if "others" in evaluation.results else [])
    grids = write_grids(evaluation.grids, out)
    paths = {"grids": out, "metrics.csv": out / "metrics.csv", "metrics.json": out / "metrics.json",
             "report.md": out / "report.md"}
    atomic_write_text(paths["metrics.csv"], csv_text(evaluation.results, ctxs))
    atomic_write_json(paths["metrics.json"], {
        "person": evaluation.person, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "levels": evaluation.levels, "protocol": dict(protocol or {}), "models": models,
        "results": results_to_json(evaluation.results),
        "ranking": {"metric": settings.rank_by, "level": settings.rank_level,
                    "order": [{"model": m, "value": v} for m, v in ranked]},
        "specificity_flags": flags, "unavailable": unavailable_reasons(evaluation.results),
        "grid_rows": evaluation.grid_rows, "grids": [p.name for p in grids], "notes": evaluation.notes,
    })
    atomic_write_text(paths["report.md"], markdown_report(evaluation, models, ctxs, ranked, flags, grids,
                                                          settings, protocol or {}))
    _write_per_image(evaluation.per_image, out / "per_image.csv")
    return paths


def _write_per_image(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("n/a" if isinstance(v, Unavailable) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


# -------------------------------------------------------------------------------------------- markdown
_SET_TITLES = {"person": "Held-out photos of {person}", "others": "Specificity: other people's photos"}


def _models_table(models: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| model | role | size | template | parameters | source | base | identity loss | sweep "
             "overrides |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        params = f"{m['parameters'] / 1e6:.2f} M" if m["parameters"] else ""
        identity = m.get("identity_loss") or ("none" if m["role"] != "input" else "")
        lines.append(f"| {m['name']} | {m['role']} | {m['size']} | {m['template']} | {params} | "
                     f"`{m['source']}` | {m['base'] or ''} | {identity} | {' '.join(m['overrides'])} |")
    if any(m.get("identity_loss") for m in models):
        lines += ["",
                  f"{TRAINED_ON_MARK} = trained on this metric: the model's training loss read the same "
                  "identity network (optimising a metric inflates it); judge its identity by the other "
                  "network's columns (ID = dlib, MFN = MobileFaceNet)."]
    return lines


def _photo_counts(per_image: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    counts: dict[str, set[str]] = {}
    for row in per_image:
        counts.setdefault(row["set"], set()).add(row["photo"])
    return counts


def _set_section(evaluation: Any, set_name: str, ctx: TableContext, rows: list[str]) -> list[str]:
    table = evaluation.results[set_name]
    lines = [f"## {_SET_TITLES.get(set_name, set_name).format(person=evaluation.person)}", ""]
    if set_name == "others":
        lines += [f"Distances to *their own* ground truth must not grow; \"ID dist ref\" is the distance to "
                  f"{evaluation.person}'s reference and must not shrink (higher is better here).", ""]
    summary = [m for m in SUMMARY_METRICS if m in metric_names(table)]
    lines += ["### Mean over levels", "", level_table(table, rows, MEAN_LEVEL, ctx, set_name, summary), ""]
    for level in evaluation.levels:
        lines += [f"### {level}", "", level_table(table, rows, level, ctx, set_name), ""]
    return lines


def markdown_report(evaluation: Any, models: Sequence[Mapping[str, Any]], ctxs: Mapping[str, TableContext],
                    ranked: Sequence[tuple[str, float | None]], flags: Sequence[str], grids: Sequence[Path],
                    settings: ReportSettings, protocol: Mapping[str, Any]) -> str:
    """The report.md text (see ``write_report``)."""
    photos = _photo_counts(evaluation.per_image)
    lines = [f"# Evaluation: {evaluation.person}", "",
             f"Created {datetime.now(timezone.utc).isoformat(timespec='seconds')}. Cells: value (delta vs "
             "base); **bold** = best among base and tuned models; ↑/↓ = higher/lower is better.", "",
             "## Protocol", "",
             f"- degradation levels: {', '.join(evaluation.levels)}; {protocol.get('copies', '?')} draw(s) "
             f"per photo and level, seed {protocol.get('seed', '?')} (same inputs for every model and run)"]
    for set_name, ids in photos.items():
        groups = sorted({i.split('/')[0] for i in ids})
        lines.append(f"- {set_name}: {len(ids)} photo(s) of {len(groups)} person(s) ({', '.join(groups)})")
    lines += [f"- note: {note}" for note in evaluation.notes]
    lines += ["", "## Models", "", *_models_table(models), ""]
    for set_name, ctx in ctxs.items():
        rows = [m["name"] for m in models if m["name"] in evaluation.results[set_name]]
        lines += _set_section(evaluation, set_name, ctx, rows)
        if set_name == "others":
            lines += ["### Specificity flags", ""] + ([f"- FLAG: {f}" for f in flags] or
                                                      [f"- none (tolerance {settings.tolerance:g})"]) + [""]
    if ranked:
        level = "mean over levels" if settings.rank_level == MEAN_LEVEL else settings.rank_level
        lines += [f"## Ranking by {settings.rank_by} ({level}, held-out photos)", "",
                  "| rank | model | value | overrides |", "|---|---|---|---|"]
        overrides = {m["name"]: " ".join(m["overrides"]) for m in models}
        lines += [f"| {i} | {m} | {format_value(v, settings.rank_by)} | {overrides.get(m, '')} |"
                  for i, (m, v) in enumerate(ranked, start=1)] + [""]
    reasons = unavailable_reasons(evaluation.results)
    if reasons:
        lines += ["## Unavailable metrics", ""] + [f"- unavailable: {r}" for r in reasons] + [""]
    if grids:
        lines += ["## Comparison grids", "",
                  "Rows = photos (first draw), columns = input | models | ground truth.", ""]
        lines += [f"![{p.stem}]({p.name})" for p in grids] + [""]
    return "\n".join(lines)
