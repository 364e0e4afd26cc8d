"""Few-shot study tables: base vs tuned over several persons, with the mean and standard deviation over
persons.

``scripts/fewshot_study.py`` trains and evaluates one personalised model per person; this module turns each
person's ``metrics.json`` (written by ``evaluate.py``, see ``report.py``) into comparable rows and aggregates
them. A row is one (person, set, level, metric) with the base model's and the tuned model's value; sets are
``"person"`` (the person's held-out photos) and ``"others"`` (other identities: the specificity check).
The headline table with the degraded input and the routing table read the evaluations directly
(``study_results.py``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpen_fewshot.evaluation.tables import METRICS, direction
from gpen_fewshot.evaluation.values import Unavailable
from gpen_fewshot.utils.atomic import atomic_write_json, atomic_write_text
from gpen_fewshot.utils.jsonfile import jsonable

PERSON_SET, OTHERS_SET = "person", "others"
# What "few-shot personalisation works" is judged on: identity to the ground truth (similarity and the
# fraction verified as the same person), recognition as the person (verified vs their reference), fidelity.
STUDY_METRICS = ("id_similarity_gt", "id_verified_gt", "id_verified_ref", "psnr", "ssim")
# On other identities: their distance to their own ground truth must not grow, and their distance to the
# studied person's reference must not shrink (faces pulled towards the person).
SPECIFICITY_METRICS = ("id_distance_gt", "id_distance_ref")
CSV_FIELDS = ("person", "set", "level", "metric", "base", "tuned", "delta")


class StudyError(ValueError):
    """A metrics.json the study cannot use, or settings the study cannot run with."""


@dataclass(frozen=True)
class MetricRow:
    """Base and tuned value of one metric of one person at one degradation level (None = unavailable)."""

    person: str
    set: str
    level: str
    metric: str
    base: float | None
    tuned: float | None

    @property
    def delta(self) -> float | None:
        """``tuned - base`` when both are finite, else None."""
        if self.base is None or self.tuned is None or not (math.isfinite(self.base) and
                                                           math.isfinite(self.tuned)):
            return None
        return self.tuned - self.base

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as strings, as in metrics.json)."""
        return {"person": self.person, "set": self.set, "level": self.level, "metric": self.metric,
                "base": _jsonable(self.base), "tuned": _jsonable(self.tuned), "delta": _jsonable(self.delta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricRow:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["person"]), str(data["set"]), str(data["level"]), str(data["metric"]),
                   _number(data.get("base")), _number(data.get("tuned")))


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; None for fewer than 2 values) over ``n`` persons."""

    n: int
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class SummaryRow:
    """One (set, level, metric) aggregated over persons: base, tuned and the per-person delta."""

    set: str
    level: str
    metric: str
    base: Stat
    tuned: Stat
    delta: Stat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out: dict[str, Any] = {"set": self.set, "level": self.level, "metric": self.metric, "n": self.delta.n}
        for name in ("base", "tuned", "delta"):
            stat = getattr(self, name)
            out.update({f"{name}_mean": _jsonable(stat.mean), f"{name}_std": _jsonable(stat.std)})
        return out


def _number(value: Any) -> float | None:
    """A metric value from decoded or raw metrics.json: float, None for unavailable ones."""
    if value is None or isinstance(value, (Unavailable, dict)):
        return None
    return float(value)  # raw JSON stores non-finite values as "inf" / "nan" strings


def _jsonable(value: float | None) -> float | str | None:
    """A statistic for JSON: None stays None, a number becomes a Python float (non-finite ones a string)."""
    return None if value is None else jsonable(float(value))


# ------------------------------------------------------------------------------------------- extraction
def _model_names(metrics: Mapping[str, Any], source: str) -> tuple[str, str]:
    """Names of the base row and the one tuned row of an evaluation."""
    models = metrics.get("models") or []
    bases = [m["name"] for m in models if m.get("role") == "base"]
    tuned = [m["name"] for m in models if m.get("role") == "tuned"]
    if len(bases) != 1 or len(tuned) != 1:
        raise StudyError(f"{source}: expected one base and one tuned model, found base {bases} and tuned "
                         f"{tuned}")
    return bases[0], tuned[0]


def person_rows(metrics: Mapping[str, Any], person: str, levels: Sequence[str] | None = None,
                source: str = "metrics.json") -> list[MetricRow]:
    """Study rows of one person from an ``evaluate.py`` metrics.json (raw JSON or ``report.read_json``).

    Args:
        metrics: the parsed metrics.json (``models``, ``levels``, ``results[set][model][level][metric]``).
        person: name written into the rows.
        levels: levels to take (default: the evaluation's own ``levels``).
        source: file name used in error messages.

    Raises:
        StudyError: no single base and tuned model, or a level missing from the person's results.
    """
    base, tuned = _model_names(metrics, source)
    results = metrics.get("results") or {}
    levels = list(levels or metrics.get("levels") or [])
    rows = []
    for set_name, names in ((PERSON_SET, STUDY_METRICS), (OTHERS_SET, SPECIFICITY_METRICS)):
        table = results.get(set_name)
        if table is None:
            if set_name == PERSON_SET:
                raise StudyError(f"{source}: no results on the person's held-out photos")
            continue
        for level in levels:
            if level not in table.get(base, {}) or level not in table.get(tuned, {}):
                raise StudyError(f"{source}: level {level!r} missing from the {set_name!r} results")
            rows += [MetricRow(person, set_name, level, metric, _number(table[base][level].get(metric)),
                               _number(table[tuned][level].get(metric))) for metric in names]
    return rows


# ------------------------------------------------------------------------------------------ aggregation
def stat(values: Iterable[float | None]) -> Stat:
    """Mean and sample standard deviation of the finite values (unavailable / non-finite ones left out)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return Stat(0, None, None)
    return Stat(len(kept), statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else None)


def summarize(rows: Sequence[MetricRow]) -> list[SummaryRow]:
    """Mean ± std over persons of every (set, level, metric), in first-seen order."""
    groups: dict[tuple[str, str, str], list[MetricRow]] = {}
    for row in rows:
        groups.setdefault((row.set, row.level, row.metric), []).append(row)
    return [SummaryRow(s, lv, m, stat(r.base for r in group), stat(r.tuned for r in group),
                       stat(r.delta for r in group)) for (s, lv, m), group in groups.items()]


def wall_time_stat(outcomes: Sequence[Mapping[str, Any]], key: str = "train_wall_s") -> Stat:
    """Mean ± std of a wall time over the persons that finished."""
    return stat(o.get(key) for o in outcomes if o.get("status") == "ok")


# ----------------------------------------------------------------------------------------------- output
def _label(metric: str, set_name: str) -> str:
    arrow = {True: " ↑", False: " ↓", None: ""}[direction(metric, set_name)]
    return (METRICS[metric].label if metric in METRICS else metric) + arrow


def _fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    decimals = METRICS[metric].decimals if metric in METRICS else 4
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _fmt_stat(value: Stat, metric: str, signed: bool = False) -> str:
    text = _fmt(value.mean, metric, signed)
    return text if value.std is None else f"{text} ± {_fmt(value.std, metric)}"


def _row_cell(row: MetricRow | None) -> str:
    if row is None:
        return ""
    change = "" if row.delta is None else f" ({_fmt(row.delta, row.metric, signed=True)})"
    return f"{_fmt(row.base, row.metric)} → {_fmt(row.tuned, row.metric)}{change}"


def _summary_cell(row: SummaryRow | None) -> str:
    if row is None:
        return ""
    return (f"{_fmt_stat(row.base, row.metric)} → {_fmt_stat(row.tuned, row.metric)} "
            f"(Δ {_fmt_stat(row.delta, row.metric, signed=True)})")


def markdown_table(rows: Sequence[MetricRow], summary: Sequence[SummaryRow], set_name: str,
                   metrics: Sequence[str], levels: Sequence[str]) -> str:
    """Rows = person x level, then one "mean ± std" row per level; cells ``base → tuned (Δ)``."""
    lines = ["| person | level | " + " | ".join(_label(m, set_name) for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    cells = {(r.person, r.level, r.metric): r for r in rows if r.set == set_name}
    persons = list(dict.fromkeys(r.person for r in rows if r.set == set_name))
    for person in persons:
        for level in levels:
            lines.append(f"| {person} | {level} | "
                         + " | ".join(_row_cell(cells.get((person, level, m))) for m in metrics) + " |")
    agg = {(s.level, s.metric): s for s in summary if s.set == set_name}
    for level in levels:
        n = max((agg[(level, m)].delta.n for m in metrics if (level, m) in agg), default=0)
        lines.append(f"| **mean ± std** (n={n}) | {level} | "
                     + " | ".join(_summary_cell(agg.get((level, m))) for m in metrics) + " |")
    return "\n".join(lines)


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _wall_text(value: Stat) -> str:
    if value.mean is None:
        return "n/a"
    return f"{value.mean:.1f} s" if value.std is None else f"{value.mean:.1f} ± {value.std:.1f} s"


def persons_table(outcomes: Sequence[Mapping[str, Any]]) -> str:
    """Per person: status, photo counts, wall times, failure reason."""
    lines = ["| person | status | usable photos | train | held out | train wall s | eval wall s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        reason = " ".join(str(o.get("reason") or "").split())[:300].replace("|", "/")
        lines.append(f"| {o['name']} | {o['status']} | {o.get('usable_photos', '') or ''} | "
                     f"{o.get('train_photos') or ''} | {o.get('holdout_photos') or ''} | "
                     f"{_seconds(o.get('train_wall_s'))} | {_seconds(o.get('eval_wall_s'))} | {reason} |")
    return "\n".join(lines)


def study_markdown(settings: Mapping[str, Any], outcomes: Sequence[Mapping[str, Any]],
                   rows: Sequence[MetricRow], summary: Sequence[SummaryRow]) -> str:
    """The study.md text."""
    levels = list(settings.get("levels") or [])
    ok = [o for o in outcomes if o["status"] == "ok"]
    wall = wall_time_stat(outcomes)
    lines = ["# Few-shot study: base prior vs personalised model", "",
             f"- persons: {len(ok)} finished of {len(outcomes)} ({settings.get('persons_root', '')})",
             f"- training photos per person: {settings.get('train_photos')}; every other usable photo is "
             "held out",
             f"- degradation levels: {', '.join(levels)}",
             f"- specificity identities: {', '.join(settings.get('others') or []) or 'none'}",
             "- training overrides: "
             f"`{' '.join(settings.get('train_overrides') or []) or '(none: the default run)'}`",
             f"- evaluation overrides: `{' '.join(settings.get('eval_overrides') or []) or '(none)'}`",
             f"- training wall time per person: {_wall_text(wall)} (n={wall.n}; the whole `train.py` "
             "process: start-up, face preparation, validation and export included)", "",
             "Cells: base → tuned (tuned - base); mean ± std = mean and sample standard deviation over "
             "persons.", "",
             "## Held-out photos of each person", "",
             markdown_table(rows, summary, PERSON_SET, STUDY_METRICS, levels), ""]
    if any(r.set == OTHERS_SET for r in rows):
        lines += ["## Specificity: other identities", "",
                  "ID dist GT: other people's distance to their own ground truth (must not grow). ID dist "
                  "ref: their distance to the studied person's reference (must not shrink).", "",
                  markdown_table(rows, summary, OTHERS_SET, SPECIFICITY_METRICS, levels), ""]
    lines += ["## Persons", "", persons_table(outcomes), ""]
    return "\n".join(lines)


def study_csv(rows: Sequence[MetricRow], summary: Sequence[SummaryRow]) -> str:
    """Long format: one line per person row, then ``mean`` and ``std`` lines per (set, level, metric)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})
    for agg in summary:
        for kind in ("mean", "std"):
            values = {name: getattr(getattr(agg, name), kind) for name in ("base", "tuned", "delta")}
            writer.writerow({"person": kind, "set": agg.set, "level": agg.level, "metric": agg.metric,
                             **{k: "" if v is None else _jsonable(v) for k, v in values.items()}})
    return buffer.getvalue()


def write_study(out_dir: str | Path, settings: Mapping[str, Any],
                outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Write study.md, study.json and study.csv (atomically) from the persons' outcomes.

    Args:
        out_dir: the study folder.
        settings: the study's settings (``levels``, ``train_photos``, overrides, ...), stored in study.json.
        outcomes: one dict per person: ``name``, ``status`` ("ok"/"failed"), ``reason``, photo counts, wall
            times and ``rows`` (``MetricRow.to_dict()`` dicts; empty for failed persons).

    Returns:
        name -> path of the three files.
    """
    out = Path(out_dir)
    rows = [MetricRow.from_dict(r) for o in outcomes if o["status"] == "ok" for r in o.get("rows", [])]
    summary = summarize(rows)
    wall = wall_time_stat(outcomes)
    paths = {name: out / name for name in ("study.md", "study.json", "study.csv")}
    atomic_write_json(paths["study.json"], {
        "settings": dict(settings),
        "persons": [{k: v for k, v in o.items() if k not in ("rows", "key")} for o in outcomes],
        "rows": [r.to_dict() for r in rows], "summary": [s.to_dict() for s in summary],
        "train_wall_s": {"n": wall.n, "mean": _jsonable(wall.mean), "std": _jsonable(wall.std)},
    })
    atomic_write_text(paths["study.csv"], study_csv(rows, summary))
    atomic_write_text(paths["study.md"], study_markdown(settings, outcomes, rows, summary))
    return paths


_MERGE_MUST_AGREE = ("train_photos", "levels", "train_overrides", "eval_overrides", "model_size", "template",
                     "prior")


def merge_studies(study_dirs: Sequence[str | Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Settings and outcomes of several finished studies of the same recipe, as one study.

    Used when the persons of one study were split over parallel processes. Each folder holds the
    ``study.json`` and ``persons/<name>/result.json`` files the study script writes; the persons and the
    specificity identities are concatenated (a person in two studies is an error).

    Raises:
        StudyError: a folder without study.json, or studies whose recipe or protocol differ (names the key).
    """
    settings: dict[str, Any] = {}
    outcomes: list[dict[str, Any]] = []
    for folder in map(Path, study_dirs):
        try:
            data = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise StudyError(f"{folder}: not a finished study (study.json: {error})") from None
        current = dict(data.get("settings") or {})
        if not settings:
            settings = {**current, "persons": [], "others": [], "merged_from": []}
        for key in _MERGE_MUST_AGREE:
            if current.get(key) != settings.get(key):
                raise StudyError(f"{folder}: {key} {current.get(key)!r} differs from the first study's "
                                 f"{settings.get(key)!r}; only studies of the same recipe can be merged")
        for name in current.get("persons") or []:
            if name in settings["persons"]:
                raise StudyError(f"{folder}: person {name!r} is in two of the merged studies")
            settings["persons"].append(name)
            result = folder / "persons" / name / "result.json"
            outcomes.append(json.loads(result.read_text(encoding="utf-8")) if result.is_file()
                            else {"name": name, "status": "failed", "reason": "no result.json", "rows": []})
        settings["others"] += [o for o in current.get("others") or [] if o not in settings["others"]]
        settings["merged_from"].append(str(folder))
    return settings, outcomes
