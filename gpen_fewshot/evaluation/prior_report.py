"""The report of ``scripts/evaluate_prior.py``: a prior on its held-out pretraining faces, against bicubic.

:mod:`gpen_fewshot.evaluation.prior_eval` builds the inputs and scores the images; this module runs the
models over them and writes report.md, metrics.json, per_image.csv and the grids (``grid.png`` for the first
level, ``grid_<level>.png`` for the others, ``*_zoom.png`` with the face centres enlarged). Every score is
paired with the bicubic baseline (the models' own input), ± standard error over the faces.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gpen_fewshot.evaluation import prior_eval as pe
from gpen_fewshot.evaluation.grids import labelled_grid
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD
from gpen_fewshot.restore.models import run_model
from gpen_fewshot.utils.atomic import atomic_write_json, atomic_write_text
from gpen_fewshot.utils.device import resolve_device
from gpen_fewshot.utils.image import write_image
from gpen_fewshot.utils.jsonfile import jsonable

log = logging.getLogger(__name__)
MIN_TILE = 128  # grid tiles of smaller crops are enlarged so that their labels fit
GRID_ROWS = 8


@dataclass(frozen=True)
class PriorEvalSettings:
    """What to evaluate: the pretraining run's held-out faces (its data settings) and the models.

    ``models`` are ``[LABEL=]SPEC`` strings: Lightning checkpoints (EMA generator preferred), weight files,
    export folders or registry names.
    """

    faces_dirs: Sequence[Path]
    models: Sequence[str]
    out: Path
    cache_dir: Path | None = None
    val_count: int = 200
    size: int = 256
    template: str = "gpen"
    levels: Sequence[str] = ("moderate",)
    copies: int = 1
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    limit: int | None = None
    zoom: int = 1


# ----------------------------------------------------------------------------------------------- models
def model_labels(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, spec)`` per ``--model``: ``LABEL=SPEC``, else a short name (run/last for checkpoints)."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        label, sep, rest = spec.partition("=")
        if sep and label and "/" not in label and not Path(spec).exists():
            spec = rest
        else:
            path = Path(spec)
            label = (f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "checkpoints"
                     else path.stem if path.is_file() else path.name if path.is_dir() else spec)
        taken = {name for name, _ in out} | {pe.BICUBIC, pe.GROUND_TRUTH}
        unique, k = label, 2
        while unique in taken:
            unique, k = f"{label}#{k}", k + 1
        out.append((unique, spec))
    return out


def portable_path(path: str | Path) -> str:
    """A path as it may appear in a shared report: relative to the working folder when inside it, else its
    last two components (``pretrain/congress``), so that no machine's absolute paths end up in committed
    results. Registry names pass through."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        return str(path)  # a registry name or a relative path
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*resolved.parts[-2:]))


def load_checked(spec: str, size: int) -> tuple[torch.nn.Module, dict]:
    """Load a generator (eval mode) and check that it restores ``size`` px faces; returns (model, info)."""
    generator = load_generator(spec)
    if generator.config.size != size:
        raise ValueError(f"{spec}: the model restores {generator.config.size} px faces, "
                         f"the faces are {size} px "
                         "(--size must be the model's size and the pretraining crop size)")
    info = {"spec": portable_path(spec), "config": asdict(generator.config),
            "parameters": sum(p.numel() for p in generator.parameters())}
    return generator.eval(), info


# ----------------------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "n/a"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def level_tables(level: str, result: Mapping) -> list[str]:
    """Markdown tables of one level: the rows, then each model against bicubic."""
    lines = [f"## {level}", "", f"Baseline and model input: {result['baseline']}.", "",
             "| row | n | PSNR | PSNR-Y | SSIM | ID dist mean | ID dist median | ID < 0.6 | no dlib face |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row, s in result["rows"].items():
        lines.append(f"| {row} | {s['n']} | {_fmt(s['psnr'], 2)} | {_fmt(s['psnr_y'], 2)} | "
                     f"{_fmt(s['ssim'])} | {_fmt(s['id_distance_mean'])} | {_fmt(s['id_distance_median'])} | "
                     f"{s['id_verified']:.1%} | {s['no_face']} |")
    lines += ["", "| model vs bicubic | PSNR gain (dB) ± s.e. | faces with higher PSNR | "
              "ID distance gain ± s.e. | faces closer in identity | beats bicubic (PSNR / identity) |",
              "|---|---|---|---|---|---|"]
    for model, p in result["paired"].items():
        verdict = f"{'yes' if p['beats_psnr'] else 'NO'} / {'yes' if p['beats_identity'] else 'NO'}"
        lines.append(f"| {model} | {_fmt(p['psnr_gain'], 2)} ± {_fmt(p['psnr_gain_se'], 2)} | "
                     f"{p['psnr_win']:.1%} | {_fmt(p['id_gain'])} ± {_fmt(p['id_gain_se'])} | "
                     f"{p['id_win']:.1%} | {verdict} |")
    lines += ["", f"dlib's HOG detector finds no face in {result['gt_no_face']} of {result['num_samples']} "
              "ground-truth crops (the identity distances use the fixed face box of aligned crops, so every "
              "image is scored; the no-face counts are a sanity check, nothing is dropped).", ""]
    return lines


def markdown_report(metrics: Mapping) -> str:
    s = metrics["settings"]
    lines = ["# Face prior on held-out pretraining faces", "",
             f"- faces: {metrics['num_faces']} of the {s['val_count']} crops FacesFolderDataModule holds out "
             f"for validation ({', '.join(map(str, s['faces_dirs']))}; {s['size']} px, "
             f"template {s['template']}"
             f"{'; --limit ' + str(s['limit']) if s['limit'] else ''})",
             f"- degradation: {', '.join(s['levels'])}; {s['copies']} draw(s) per face, "
             f"protocol seed {s['seed']}",
             "- identity: dlib 128-d distance to the ground truth crop (same person below 0.6)",
             "", "| model | spec | parameters |", "|---|---|---|"]
    lines += [f"| {m['label']} | `{m['spec']}` | {m['parameters'] / 1e6:.2f} M |" for m in metrics["models"]]
    lines.append("")
    for level, result in metrics["levels"].items():
        lines += level_tables(level, result)
        lines += [f"![{level}]({result['grid']})", ""]
    return "\n".join(lines)


def per_image_csv(inputs: pe.InputSet, scores: Mapping[str, Mapping[str, np.ndarray]],
                  gt_face: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["level", "face", "copy", "row", *pe.SCORES, "gt_dlib_face"])
    for i, sample in enumerate(inputs.samples):
        for row, values in scores.items():
            cells = [f"{values[name][i]:.6g}" for name in pe.SCORES]
            writer.writerow([sample.level, sample.face, sample.copy, row, *cells, int(gt_face[i])])
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------- run
def _level_result(level: str, inputs: pe.InputSet, scores: Mapping, gt_face: np.ndarray, size: int,
                  grid: str) -> dict:
    index = inputs.indices(level)
    base = scores[pe.BICUBIC]
    result = {"baseline": pe.baseline_description(level, size), "lr_size": inputs.lr_sizes[level],
              "num_samples": len(index), "gt_no_face": int(np.sum(gt_face[index] == 0)),
              "rows": {row: pe.summarize(values, index) for row, values in scores.items()}, "paired": {},
              "grid": grid}
    for row in list(scores)[1:]:
        p = pe.paired(scores[row], base, index)
        rows = result["rows"]
        p["beats_psnr"] = rows[row]["psnr"] > rows[pe.BICUBIC]["psnr"]
        p["beats_identity"] = rows[row]["id_distance_mean"] < rows[pe.BICUBIC]["id_distance_mean"]
        result["paired"][row] = p
    return result


def _score_all(settings: PriorEvalSettings, inputs: pe.InputSet, generators: list, device: torch.device,
               timings: dict[str, float]) -> tuple[dict, np.ndarray, dict]:
    """Scores per row (bicubic first, then each model), dlib face found per ground truth, grid columns."""
    scorer = pe.Scorer(settings.template)
    grid_index = {level: pe.grid_rows(inputs, level, GRID_ROWS) for level in settings.levels}
    grids = {level: {pe.BICUBIC: [inputs.bicubic[i] for i in idx]} for level, idx in grid_index.items()}
    t = time.perf_counter()
    scores = {pe.BICUBIC: scorer.score(inputs.bicubic, inputs.gt)}
    gt_face = np.array([scorer.face_found(g) for g in inputs.gt], np.float64)
    timings["score bicubic"] = time.perf_counter() - t
    for label, generator, _ in generators:
        t = time.perf_counter()
        outputs = run_model(generator.to(device), inputs.bicubic, device, settings.batch_size)
        timings[f"restore {label}"] = time.perf_counter() - t
        t = time.perf_counter()
        scores[label] = scorer.score(outputs, inputs.gt)
        timings[f"score {label}"] = time.perf_counter() - t
        for level, idx in grid_index.items():
            grids[level][label] = [outputs[i] for i in idx]
        log.info("%s: restored and scored %d faces", label, len(outputs))
    for level, idx in grid_index.items():
        grids[level][pe.GROUND_TRUTH] = [inputs.gt[i] for i in idx]
    return scores, gt_face, grids


def evaluate_prior(settings: PriorEvalSettings) -> dict:
    """Run everything and write the outputs into ``settings.out``; returns the metrics (as in metrics.json).

    Raises:
        ValueError, FileNotFoundError, ImportError: a model that does not load or restores another size,
            faces that cannot be prepared (each message names the culprit). Nothing is written then.
    """
    timings, start = {}, time.perf_counter()
    device = resolve_device(settings.device)
    generators = [(label, *load_checked(spec, settings.size))
                  for label, spec in model_labels(settings.models)]
    crops = pe.held_out_crops(settings.faces_dirs, settings.size, settings.template, settings.val_count,
                              settings.cache_dir)[: settings.limit]
    inputs = pe.build_inputs(crops, settings.size, settings.levels, settings.copies, settings.seed)
    timings["inputs"] = time.perf_counter() - start
    scores, gt_face, grids = _score_all(settings, inputs, generators, device, timings)
    levels = {level: _level_result(level, inputs, scores, gt_face, settings.size,
                                   "grid.png" if k == 0 else f"grid_{level}.png")
              for k, level in enumerate(settings.levels)}
    recorded = {"faces_dirs": [portable_path(d) for d in settings.faces_dirs],
                "cache_dir": portable_path(settings.cache_dir) if settings.cache_dir else "",
                **{k: getattr(settings, k)
                   for k in ("val_count", "size", "template", "copies", "seed", "limit")},
                "levels": list(settings.levels), "device": str(device), "threshold": SAME_PERSON_THRESHOLD,
                "baseline": "preset at its scale factor, bicubic back to the crop size = the models' input"}
    timings["total"] = time.perf_counter() - start
    metrics = {"settings": recorded, "num_faces": len(crops), "faces": [c.name for c in crops],
               "models": [{"label": label, **info} for label, _, info in generators], "levels": levels,
               "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    _write(Path(settings.out), metrics, inputs, scores, gt_face, grids, settings.zoom)
    return metrics


def _write(out: Path, metrics: dict, inputs: pe.InputSet, scores: Mapping, gt_face: np.ndarray,
           grids: Mapping, zoom: int = 1) -> None:
    for level, columns in grids.items():
        title, name = metrics["levels"][level]["baseline"], Path(metrics["levels"][level]["grid"])
        write_image(out / name, labelled_grid(columns, title=title, min_tile=MIN_TILE))
        if zoom > 1:
            write_image(out / f"{name.stem}_zoom{name.suffix}",
                        labelled_grid(columns, title=title, min_tile=MIN_TILE, zoom=zoom))
    atomic_write_text(out / "per_image.csv", per_image_csv(inputs, scores, gt_face))
    atomic_write_json(out / "metrics.json", jsonable(metrics))
    atomic_write_text(out / "report.md", markdown_report(metrics))
