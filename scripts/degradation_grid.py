"""Save a grid PNG comparing degradation presets: one row per sample, columns original | preset 1 | ...

docs/images/degradation_presets.png was made from the demo person's aligned 256-px crops (prepare_person):
    python scripts/degradation_grid.py --image data/demo/person_obama/.prepared/256_gpen/*/*.png \\
        --samples 4 --seed 0 --output docs/images/degradation_presets.png
Any photo works too, with a rough face box: --image data/demo/person_obama/000.jpg --crop 260 50 620 410
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from gpen_fewshot.data.degradations import build_degradation, sample_rng
from gpen_fewshot.evaluation.grids import labelled_grid
from gpen_fewshot.utils.image import read_image, to_float, to_uint8, write_image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", nargs="+", required=True, help="face image(s); rows cycle through them")
    parser.add_argument(
        "--crop", nargs=4, type=int, metavar=("X1", "Y1", "X2", "Y2"), help="crop box (pixels)"
    )
    parser.add_argument("--presets", nargs="+", default=["mild", "moderate", "severe"], help="preset names")
    parser.add_argument("--samples", type=int, default=3, help="rows (independent random draws)")
    parser.add_argument("--size", type=int, default=256, help="side of each tile (pixels)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument("--output", type=Path, default=Path("docs/images/degradation_presets.png"))
    return parser.parse_args(argv)


def load_tile(path: str, crop: list[int] | None, size: int) -> np.ndarray:
    """float32 RGB (size, size, 3) [0, 1]: the (optionally cropped) image resized with area interpolation."""
    image = read_image(path)
    if crop is not None:
        x1, y1, x2, y2 = crop
        image = image[y1:y2, x1:x2]
    return to_float(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))


def build_grid(tiles: list[np.ndarray], presets: list[str], samples: int, seed: int) -> np.ndarray:
    """uint8 RGB grid: ``samples`` rows x (1 + len(presets)) columns under labels."""
    degradations = [build_degradation(name) for name in presets]
    columns: dict[str, list[np.ndarray]] = {"original": [], **{name: [] for name in presets}}
    for row in range(samples):
        clean = tiles[row % len(tiles)]
        columns["original"].append(to_uint8(clean))
        for col, (name, degradation) in enumerate(zip(presets, degradations, strict=True)):
            lq = degradation(clean, sample_rng(seed, row, col))
            lq = cv2.resize(lq, clean.shape[1::-1], interpolation=cv2.INTER_NEAREST)  # scale > 1 presets
            columns[name].append(to_uint8(lq))
    return labelled_grid(columns)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tiles = [load_tile(path, args.crop, args.size) for path in args.image]
    grid = build_grid(tiles, args.presets, args.samples, args.seed)
    write_image(args.output, grid)
    print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
