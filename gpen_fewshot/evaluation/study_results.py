"""Tables read straight from the evaluations of a few-shot study: the degraded input beside base and tuned,
and how ``restore.py``'s identity routing would treat the same faces.

Input: ``evaluate.py``'s ``metrics.json`` (``results[set][model][level][metric]``; sets ``"person"`` and, with
``others=``, ``"others"``; models ``"input"``, ``"base"`` and one tuned model), found in study folders of
``scripts/fewshot_study.py`` (``persons/<name>/eval/``, merged studies through their sources) or in plain
evaluation folders.

Routing: ``restore.py`` gives a person's weights to a face only when the dlib distance of the *input* crop
to the person's reference embedding is below the match threshold (``faces.identity.SAME_PERSON_THRESHOLD``),
which is what the input row's ``id_verified_ref`` measures. On the person's own held-out faces it is the share
the personal weights reach; on other people's faces it is the share they would wrongly reach, so the pull of a
person's weights on other people that restore.py lets through is that share times the pull when forced (the
evaluation degrades aligned crops where restore.py aligns degraded photos: the same faces up to resampling).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

PERSON_SET, OTHERS_SET, INPUT_ROW = "person", "others", "input"
INPUT_TABLE_METRICS = (("psnr", "PSNR dB", 2), ("id_similarity_gt", "ID sim GT (dlib)", 3),
                       ("mfn_similarity_gt", "ID sim GT (MobileFaceNet, trained on)", 3),
                       ("id_verified_ref", "verified ref (dlib)", 2))
ROUTED = "id_verified_ref"  # the input row's: the share of faces the routing matches to the person


def _metrics_files(folder: Path) -> list[Path]:
    """metrics.json files of a study folder (merged: its sources) or of one evaluation folder."""
    if (folder / "metrics.json").is_file():
        return [folder / "metrics.json"]
    study = folder / "study.json"
    if not study.is_file():
        return []
    sources = json.loads(study.read_text())["settings"].get("merged_from") or [folder]
    return [p for source in map(Path, sources) for p in sorted(source.glob("persons/*/eval/metrics.json"))]


def _results(path: Path) -> dict:
    """``results`` of one metrics.json; ValueError naming the file when it is not an evaluation's."""
    try:
        return json.loads(path.read_text())["results"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an evaluate.py metrics.json ({error})") from error


def evaluation_results(folders: list[Path]) -> list[dict]:
    """``results`` of every evaluation found in the folders (one per person), in folder then name order."""
    return [_results(path) for folder in folders for path in _metrics_files(folder)]


def study_person_metrics(study_dirs: list[Path]) -> list[dict]:
    """``results['person']`` of every person's metrics.json (merged studies: their source folders too)."""
    return [r[PERSON_SET] for r in evaluation_results(study_dirs)]


def _se(values: list[float]) -> float:
    """Standard error of the mean (0 for one value)."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def _mean_se_text(values: list[float], digits: int, signed: bool = False) -> str:
    """Signed: "+mean ± se" (a difference); unsigned: the mean alone (a level)."""
    mean = statistics.fmean(values)
    return f"{mean:+.{digits}f} ± {_se(values):.{digits}f}" if signed else f"{mean:.{digits}f}"


def has_base_and_tuned(results: list[dict]) -> bool:
    """Whether every person's set holds the input, the base and one tuned row (what ``input_table`` needs)."""
    return bool(results) and all(INPUT_ROW in r and "base" in r and len(r) == 3 for r in results)


def input_table(results: list[dict]) -> str:
    """Markdown: level x metric rows, input | base | tuned | tuned - base columns."""
    tuned_key = next(k for k in results[0] if k not in (INPUT_ROW, "base"))
    lines = [f"| level | metric | input | base | tuned | tuned - base (n={len(results)}) |",
             "|---|---|---|---|---|---|"]
    for level in results[0]["base"]:
        for key, label, digits in INPUT_TABLE_METRICS:
            cols = {role: [r[role if role != "tuned" else tuned_key][level][key] for r in results]
                    for role in (INPUT_ROW, "base", "tuned")}
            diff = [t - b for t, b in zip(cols["tuned"], cols["base"], strict=True)]
            lines.append(f"| {level} | {label} | {_mean_se_text(cols[INPUT_ROW], digits)} | "
                         f"{_mean_se_text(cols['base'], digits)} | {_mean_se_text(cols['tuned'], digits)} | "
                         f"{_mean_se_text(diff, digits, signed=True)} |")
    return "\n".join(lines)


def _routed(result: dict, set_name: str, level: str) -> float | None:
    """The input row's share of faces matched to the person, or None where it was not scored."""
    value = result.get(set_name, {}).get(INPUT_ROW, {}).get(level, {}).get(ROUTED)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def has_routing(results: list[dict]) -> bool:
    """Whether every evaluation scored the input row of both sets against the person's reference."""
    if not results or INPUT_ROW not in results[0].get(PERSON_SET, {}):
        return False
    levels = results[0][PERSON_SET][INPUT_ROW]
    return all(_routed(r, s, level) is not None for r in results for s in (PERSON_SET, OTHERS_SET)
               for level in levels)


def routing_table(results: list[dict]) -> str:
    """Markdown: per level, the share of the person's own and of other people's degraded faces that the
    identity routing would give the person's weights (mean ± standard error over persons, and the worst person
    for the others)."""
    lines = ["| level | own held-out faces routed to the person | other people's faces routed to the person "
             "| worst person (others) | n persons |", "|---|---|---|---|---|"]
    for level in results[0][PERSON_SET][INPUT_ROW]:
        own = [_routed(r, PERSON_SET, level) for r in results]
        others = [_routed(r, OTHERS_SET, level) for r in results]
        own_text = f"{statistics.fmean(own):.3f} ± {_se(own):.3f}"
        others_text = f"{statistics.fmean(others):.3f} ± {_se(others):.3f}"
        lines.append(f"| {level} | {own_text} | {others_text} | {max(others):.3f} | {len(results)} |")
    return "\n".join(lines)
