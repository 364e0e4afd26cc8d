"""Make the README's before/after figure of the bundled Solvay 1927 photo with the project's own restorer.

    python scripts/readme_figures.py --out docs/images/solvay_before_after.jpg [--base gpen-compact-256]

Restores the whole photo as ``python restore.py --scale 2`` does (faces at the model's resolution, background
Lanczos-upscaled), then cuts the same region out of the Lanczos-upscaled input and the result and writes them
side by side with labels (``restoration.comparison.side_by_side``), so the picture shows faces at a size where
the difference is visible. The region (``--box x1 y1 x2 y2``, in input pixels) defaults to part of the front
rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

from gpen_fewshot.cli.restore import default_input
from gpen_fewshot.faces.detection import FaceDetector
from gpen_fewshot.restore.comparison import side_by_side
from gpen_fewshot.restore.models import default_base_name, load_base_model
from gpen_fewshot.restore.pipeline import RestoreOptions, Restorer
from gpen_fewshot.utils.image import read_image, write_image

DEFAULT_BOX = (600, 130, 910, 270)  # x1 y1 x2 y2 in the 1328x568 photo: six faces of the middle rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=None, help="photo (default: the bundled Solvay 1927 photo)")
    p.add_argument("--out", type=Path, required=True, help="output image (.jpg / .png)")
    p.add_argument("--base", default=None, help="base model (default: restore.py's default)")
    p.add_argument("--scale", type=int, default=2, help="upscaling of the photo (default: %(default)s)")
    p.add_argument("--box", type=int, nargs=4, default=DEFAULT_BOX, metavar=("X1", "Y1", "X2", "Y2"))
    args = p.parse_args(argv)
    photo = read_image(args.input or default_input())
    name = args.base or str(default_base_name())
    restorer = Restorer(load_base_model(name), [],
                        options=RestoreOptions(scale=args.scale, guard_threshold=None),
                        detector=FaceDetector())
    start = time.perf_counter()
    result = restorer.restore(photo)
    x1, y1, x2, y2 = (v * args.scale for v in args.box)
    upscaled = cv2.resize(photo, result.image.shape[1::-1], interpolation=cv2.INTER_LANCZOS4)
    label = f"restored: {Path(name).stem} (x{args.scale})"
    figure = side_by_side(upscaled[y1:y2, x1:x2], result.image[y1:y2, x1:x2], ("input (Lanczos)", label))
    write_image(args.out, figure)
    print(f"{len(result.faces)} faces restored in {time.perf_counter() - start:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
