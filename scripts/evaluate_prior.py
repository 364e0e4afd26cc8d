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
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.data.degradations import PRESETS
from gpen_fewshot.evaluation.prior_report import PriorEvalSettings, evaluate_prior, level_tables


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines on stderr
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = PriorEvalSettings(
        faces_dirs=args.faces_dir, models=args.model, out=args.out, cache_dir=args.cache_dir,
        val_count=args.val_count, size=args.size, template=args.template, levels=args.level,
        copies=args.copies, seed=args.seed, batch_size=args.batch_size, device=args.device, limit=args.limit,
        zoom=args.zoom)
    try:
        metrics = evaluate_prior(settings)
    except (ValueError, FileNotFoundError, ImportError) as err:  # CheckpointError is a ValueError
        return user_error(err, 2)
    for level, result in metrics["levels"].items():
        print("\n".join(level_tables(level, result)))
    print(f"wrote {args.out / 'report.md'}, metrics.json, per_image.csv, grid.png "
          f"({metrics['timings_s']['total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
