"""Evaluate face priors on the held-out faces of their own pretraining data, against bicubic.

    python scripts/evaluate_prior.py --faces-dir /data/faces_a --faces-dir /data/faces_b --val-count 200 \\
        --model outputs/prior_compact_256/<run>/checkpoints/last.ckpt --out outputs/prior_eval

The faces are exactly the crops ``FacesFolderDataModule`` held out for validation: give the folders, size,
template, ``--val-count`` and ``--cache-dir`` the pretraining run got (``data.faces_dir=[A,B]
data.val_count=200 ...``). Each is degraded with the preset (``--level``, default moderate) at its scale
factor (moderate: sf=2, a 128 px image for 256 px crops) and upsampled back with bicubic interpolation
(cv2.INTER_CUBIC): that image is the **bicubic baseline and also the models' input**, so a model "beats
bicubic" when it improves the image it was given. Seeds follow the evaluation protocol (``--seed``, draw k of
``--copies``, keyed by each crop's sha256, as the training run's validation set), so the low-resolution images
are those behind the run's validation inputs; see ``gpen_fewshot/evaluation/prior_eval.py``. Run it once the
pretraining's data preparation has finished: it reads (and would otherwise help build) the same crop cache.

Scores per image: PSNR (RGB, Y), SSIM, dlib identity distance to the ground truth (mean, median, fraction
under 0.6), and whether dlib's HOG detector finds a face (counted and reported; no image is dropped), plus per
model the fraction of faces where it beats bicubic on PSNR and on identity distance.

Writes (atomically) to ``--out``: report.md, metrics.json, per_image.csv, grid.png (8 faces: bicubic input |
each model | ground truth; other levels: grid_<level>.png). Models (``--model``, repeatable, ``LABEL=SPEC``
to name one): Lightning checkpoints (EMA generator preferred), weight files, export folders, registry names.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

from gpen_fewshot.data.degradations import PRESETS
from gpen_fewshot.evaluation import prior_eval as pe
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD
from gpen_fewshot.restore.models import run_model
from gpen_fewshot.utils.atomic import atomic_write_json, atomic_write_text
from gpen_fewshot.utils.device import resolve_device
from gpen_fewshot.utils.drawing import draw_text, text_width
from gpen_fewshot.utils.image import write_image

FONT_SIZE, LINE_HEIGHT = 17, 22  # px; capital letters about 13 px tall
MIN_TILE = 128  # grid tiles of smaller crops are enlarged so that their labels fit
GRID_ROWS = 8


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--faces-dir", type=Path, action="append", required=True,
        help="pretraining photo folder (repeatable)")
    add("--cache-dir", type=Path, default=None, help="pretraining data.cache_dir (default: none)")
    add("--val-count", type=int, default=200, help="pretraining data.val_count")
    add("--size", type=int, default=256, help="crop side (the model's size)")
    add("--template", default="gpen", choices=("gpen", "ffhq"), help="alignment template")
    add("--model", action="append", required=True, help="[LABEL=]checkpoint / export dir / registry name")
    add("--level", action="append", choices=sorted(PRESETS), help="degradation preset (repeatable; moderate)")
    add("--copies", type=int, default=1, help="degradation draws per face and level")
    add("--seed", type=int, default=0, help="protocol seed (the run's data.val_seed)")
    add("--out", type=Path, required=True, help="output folder")
    add("--batch-size", type=int, default=8, help="faces per forward pass")
    add("--device", default="auto", help="auto | cpu | cuda[:i]")
    add("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add("--limit", type=int, default=None, help="evaluate only the first N held-out faces (tests)")
    add("--zoom", type=int, default=1,
        help="also write grid*_zoom.png: the central 1/ZOOM of every tile enlarged ZOOM x (pixel copies)")
    args = parser.parse_args(argv)
    args.level = list(dict.fromkeys(args.level or ["moderate"]))
    if args.copies < 1 or args.batch_size < 1 or args.zoom < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--copies, --batch-size, --zoom and --limit must be >= 1")
    return args


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


# ------------------------------------------------------------------------------------------------ grid
def _text_width(text: str) -> int:
    return text_width(text, FONT_SIZE)


def wrap_label(text: str, width: int) -> list[str]:
    """Lines of ``text`` each narrower than ``width`` px, broken after / _ - . or space if possible."""
    lines = [""]
    for token in re.findall(r"[^/_\-. ]+[/_\-. ]*|[/_\-. ]+", text):
        if _text_width(lines[-1] + token) <= width:
            lines[-1] += token
            continue
        if lines[-1]:
            lines.append("")
        for char in token:  # a token wider than the tile: break anywhere
            if lines[-1] and _text_width(lines[-1] + char) > width:
                lines.append("")
            lines[-1] += char
    return lines


def label_strip(texts: Sequence[str], tile: int) -> np.ndarray:
    """White strip with each text centred over its ``tile``-wide column (wrapped, never cut)."""
    wrapped = [wrap_label(text, tile - 8) for text in texts]
    height = 8 + LINE_HEIGHT * max(len(lines) for lines in wrapped)
    strip = np.full((height, tile * len(texts), 3), 255, np.uint8)
    for col, lines in enumerate(wrapped):
        for row, line in enumerate(lines):
            x = col * tile + max(4, (tile - _text_width(line)) // 2)
            draw_text(strip, line, (x, 4 + LINE_HEIGHT * (row + 1) - 6), FONT_SIZE)
    return strip


def zoom_centre(image: np.ndarray, zoom: int) -> np.ndarray:
    """The central (side / zoom) square of a (side, side, 3) image enlarged ``zoom`` x by pixel copies."""
    side = image.shape[0]
    crop = side // zoom
    start = (side - crop) // 2
    centre = image[start:start + crop, start:start + crop]
    return cv2.resize(centre, (crop * zoom, crop * zoom), interpolation=cv2.INTER_NEAREST)


def render_grid(columns: Mapping[str, Sequence[np.ndarray]], title: str, zoom: int = 1) -> np.ndarray:
    """uint8 RGB grid: a title, the column labels, one row of tiles per face (crops enlarged to >= 128 px).

    With ``zoom`` > 1 every tile shows the central 1/zoom of its face enlarged zoom x (eyes, nose and mouth of
    an aligned crop at 2), so that noise, blur and artefacts are visible at README size.
    """
    if zoom > 1:
        columns = {label: [zoom_centre(t, zoom) for t in tiles] for label, tiles in columns.items()}
        title = f"{title}; centre of each face at {zoom}x"
    labels = list(columns)
    side = columns[labels[0]][0].shape[0]
    tile = max(side, MIN_TILE)
    rows = []
    for r in range(len(columns[labels[0]])):
        tiles = [columns[label][r] for label in labels]
        if tile != side:
            tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST) for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    title_strip = label_strip([title], tile * len(labels))
    return np.concatenate([title_strip, label_strip(labels, tile), *rows], axis=0)


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 3) -> str:
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


def _jsonable(obj: object) -> object:
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------- main
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


def _score_all(args: argparse.Namespace, inputs: pe.InputSet, generators: list, device: torch.device,
               timings: dict[str, float]) -> tuple[dict, np.ndarray, dict]:
    """Scores per row (bicubic first, then each model), dlib face found per ground truth, grid columns."""
    scorer = pe.Scorer(args.template)
    grid_index = {level: pe.grid_rows(inputs, level, GRID_ROWS) for level in args.level}
    grids = {level: {pe.BICUBIC: [inputs.bicubic[i] for i in idx]} for level, idx in grid_index.items()}
    t = time.perf_counter()
    scores = {pe.BICUBIC: scorer.score(inputs.bicubic, inputs.gt)}
    gt_face = np.array([scorer.face_found(g) for g in inputs.gt], np.float64)
    timings["score bicubic"] = time.perf_counter() - t
    for label, generator, _ in generators:
        t = time.perf_counter()
        outputs = run_model(generator.to(device), inputs.bicubic, device, args.batch_size)
        timings[f"restore {label}"] = time.perf_counter() - t
        t = time.perf_counter()
        scores[label] = scorer.score(outputs, inputs.gt)
        timings[f"score {label}"] = time.perf_counter() - t
        for level, idx in grid_index.items():
            grids[level][label] = [outputs[i] for i in idx]
        print(f"{label}: restored and scored {len(outputs)} faces", file=sys.stderr)
    for level, idx in grid_index.items():
        grids[level][pe.GROUND_TRUTH] = [inputs.gt[i] for i in idx]
    return scores, gt_face, grids


def evaluate(args: argparse.Namespace) -> dict:
    """Run everything and write the outputs; returns the metrics dict (as in metrics.json)."""
    timings, start = {}, time.perf_counter()
    device = resolve_device(args.device)
    generators = [(label, *load_checked(spec, args.size)) for label, spec in model_labels(args.model)]
    crops = pe.held_out_crops(args.faces_dir, args.size, args.template, args.val_count, args.cache_dir)
    crops = crops[: args.limit]
    inputs = pe.build_inputs(crops, args.size, args.level, args.copies, args.seed)
    timings["inputs"] = time.perf_counter() - start
    scores, gt_face, grids = _score_all(args, inputs, generators, device, timings)
    levels = {level: _level_result(level, inputs, scores, gt_face, args.size,
                                   "grid.png" if k == 0 else f"grid_{level}.png")
              for k, level in enumerate(args.level)}
    settings = {"faces_dirs": [portable_path(d) for d in args.faces_dir],
                "cache_dir": portable_path(args.cache_dir) if args.cache_dir else "",
                **{k: getattr(args, k) for k in ("val_count", "size", "template", "copies", "seed", "limit")},
                "levels": args.level, "device": str(device), "threshold": SAME_PERSON_THRESHOLD,
                "baseline": "preset at its scale factor, bicubic back to the crop size = the models' input"}
    timings["total"] = time.perf_counter() - start
    metrics = {"settings": settings, "num_faces": len(crops), "faces": [c.name for c in crops],
               "models": [{"label": label, **info} for label, _, info in generators], "levels": levels,
               "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    _write(args.out, metrics, inputs, scores, gt_face, grids, args.zoom)
    return metrics


def _write(out: Path, metrics: dict, inputs: pe.InputSet, scores: Mapping, gt_face: np.ndarray,
           grids: Mapping, zoom: int = 1) -> None:
    for level, columns in grids.items():
        title, name = metrics["levels"][level]["baseline"], Path(metrics["levels"][level]["grid"])
        write_image(out / name, render_grid(columns, title))
        if zoom > 1:
            write_image(out / f"{name.stem}_zoom{name.suffix}", render_grid(columns, title, zoom))
    atomic_write_text(out / "per_image.csv", per_image_csv(inputs, scores, gt_face))
    atomic_write_json(out / "metrics.json", _jsonable(metrics))
    atomic_write_text(out / "report.md", markdown_report(metrics))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        metrics = evaluate(args)
    except (ValueError, FileNotFoundError, ImportError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    for level, result in metrics["levels"].items():
        print("\n".join(level_tables(level, result)))
    print(f"wrote {args.out / 'report.md'}, metrics.json, per_image.csv, grid.png "
          f"({metrics['timings_s']['total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
