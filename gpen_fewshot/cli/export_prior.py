"""Export a pretrained prior (EMA generator + discriminator) from a training run as bundled safetensors files.

    python scripts/export_prior.py outputs/prior_compact_256/<run> --name gpen-compact-256 \\
        --out gpen_fewshot/assets/weights
    python scripts/export_prior.py run/checkpoints/best.ckpt --name my-prior --out /tmp/w --dtype float32

Reads ``<run>/checkpoints/last.ckpt`` (``--checkpoint best`` for ``best.ckpt``; or the ``.ckpt`` given),
writes ``<out>/<name>.safetensors`` (EMA generator) and ``<out>/<name>-D.safetensors`` (discriminator) in
float16 (default) with provenance metadata, reloads both strictly and compares the generator with the
float32 EMA generator on a fixed random input (max abs difference printed; error above ``--tolerance``).
Then prints each file's size and sha256, the constants that pin them in ``gpen_fewshot/weights.py`` and the
equivalent ``WeightSpec`` entries. Files appear only when verified (``gpen_fewshot.export.prior``).
Exit status: 0 on success, 2 with one error line otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.export.common import ExportError
from gpen_fewshot.export.prior import (
    CHECKPOINTS,
    DEFAULT_TOLERANCE,
    DTYPES,
    PriorExport,
    constant_lines,
    export_prior,
    registry_lines,
)
from gpen_fewshot.weights import COMPACT_256_LICENCE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="pretraining run directory or a .ckpt file of one")
    parser.add_argument("--name", default="gpen-compact-256", help="registry name (files <name>.safetensors "
                        "and <name>-D.safetensors; default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("gpen_fewshot/assets/weights"),
                        help="destination folder (default: %(default)s)")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                        help="which checkpoint of a run directory (default: %(default)s)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16",
                        help="storage (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="max abs generator difference vs float32, images in [-1, 1] "
                        "(default: %(default)s)")
    return parser.parse_args(argv)


def report(result: PriorExport) -> str:
    """What the script prints after a successful export."""
    lines = [f"source:  {result.source.path} (iteration {result.source.iteration})",
             f"max abs diff vs float32 EMA generator: {result.generator_max_abs_diff:.3e} "
             f"(images in [-1, 1]); discriminator logits: {result.discriminator_max_abs_diff:.3e}"]
    for file in (result.generator, result.discriminator):
        lines += [f"wrote   {file.path}", f"  size   {file.size:,} bytes", f"  sha256 {file.sha256}"]
    lines += ["", "# pin them in gpen_fewshot/weights.py (top of the file, replacing the placeholders):",
              constant_lines(result), "", "# equivalent registry entries (gpen_fewshot/weights.py REGISTRY):",
              registry_lines(result, COMPACT_256_LICENCE)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = export_prior(args.source, args.name, args.out, args.checkpoint, args.dtype, args.tolerance)
    except (ExportError, FileNotFoundError, ValueError) as error:
        return user_error(error, 2)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
