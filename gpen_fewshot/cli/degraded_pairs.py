"""Create (ground truth, degraded) image pairs from a folder of clean images.

    python scripts/create_degraded_pairs.py --input_dir DIR --output_dir OUT --degradation bsrgan \\
        --preset moderate --scale 1 --copies 2 --num_workers 4 --seed 0

Writes ``OUT/GT/<name>.png`` and ``OUT/LR/<name>.png`` with matching names (``<stem>.png``, or
``<stem>_<k>.png`` with ``--copies`` > 1) and ``OUT/pairs.json`` (config, seed, written and skipped files).
The output depends only on the seed, the degradation and the file names, not on ``--num_workers``: each image
copy draws from its own generator seeded by ``(seed, crc32(file name), copy)``. With ``--scale`` > 1 the
ground truth is cropped (top-left) to a multiple of the scale so that LR is exactly GT / scale. Unreadable or
too small images are skipped with a one-line reason; the exit status is 0 when at least one pair was written.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.data.degradations import (
    PRESETS,
    DegradationConfig,
    build_degradation,
    config_from_dict,
    config_to_dict,
    get_preset,
    sample_rng,
)
from gpen_fewshot.utils.atomic import atomic_write_json
from gpen_fewshot.utils.image import ImageReadError, list_images, read_image, to_float, to_uint8, write_image

_KINDS = ("bsrgan", "first_order", "none")


@dataclass(frozen=True)
class PairTask:
    """One input image and everything needed to write its pairs (picklable for worker processes)."""

    path: Path
    output_dir: Path
    config: DegradationConfig
    seed: int
    copies: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input_dir", type=Path, required=True, help="folder of clean images (not recursive)"
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="gets GT/, LR/ and pairs.json")
    parser.add_argument(
        "--degradation",
        choices=_KINDS,
        default=None,
        help="degradation model (default: the preset's, else bsrgan)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="named preset (default: the model's reference settings)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML degradation config (configs/degradation/)"
    )
    parser.add_argument("--scale", type=int, default=None, help="LR = GT / scale (default: the config's, 1)")
    parser.add_argument("--copies", type=int, default=1, help="degraded copies per input image")
    parser.add_argument("--num_workers", type=int, default=0, help="worker processes (0: in this process)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    if args.copies < 1 or args.num_workers < 0 or (args.scale is not None and args.scale < 1):
        parser.error("--copies and --scale must be >= 1, --num_workers >= 0")
    if args.config is not None and args.preset is not None:
        parser.error("give either --config or --preset, not both")
    return args


def resolve_degradation(
    kind: str | None, preset: str | None, config_path: Path | None, scale: int | None
) -> DegradationConfig:
    """The degradation config chosen on the command line.

    Raises:
        ValueError: the preset/config is of another kind than ``kind``, or the YAML file is unusable.
    """
    if config_path is not None:
        config = config_from_dict(_read_yaml(config_path))
    else:
        config = get_preset(preset or kind or "bsrgan")
    if kind is not None and config.kind != kind:
        raise ValueError(
            f"--degradation {kind} does not match the {config.kind} config {preset or config_path}"
        )
    return dataclasses.replace(config, scale=scale) if scale is not None else config


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read degradation config ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a degradation config must be a mapping")
    return data


def output_name(path: Path, copy: int, copies: int) -> str:
    """File name of one output pair: ``<stem>.png`` or, with several copies, ``<stem>_<copy:03d>.png``."""
    return f"{path.stem}.png" if copies == 1 else f"{path.stem}_{copy:03d}.png"


def process_image(task: PairTask) -> tuple[Path, list[str], str | None]:
    """Degrade one image ``copies`` times and write its pairs.

    Returns:
        (input path, names written, error message or None).
    """
    try:
        clean = to_float(read_image(task.path))
        degradation = build_degradation(task.config)
        written = []
        for copy in range(task.copies):
            rng = sample_rng(task.seed, zlib.crc32(task.path.name.encode("utf-8")), copy)
            gt, lq = degradation.pair(clean, rng)
            name = output_name(task.path, copy, task.copies)
            write_image(task.output_dir / "GT" / name, to_uint8(gt))
            write_image(task.output_dir / "LR" / name, to_uint8(lq))
            written.append(name)
        return task.path, written, None
    except (ImageReadError, ValueError) as err:
        message = str(err) if str(task.path) in str(err) else f"{task.path}: {err}"
        return task.path, [], message


def run_tasks(tasks: list[PairTask], num_workers: int) -> Iterator[tuple[Path, list[str], str | None]]:
    """Process tasks in order, in this process or a pool of ``num_workers`` processes."""
    if num_workers == 0:
        yield from map(process_image, tasks)
        return
    # no cv2.setNumThreads in the workers: after a fork it can deadlock on the parent's OpenCV thread pool
    with multiprocessing.get_context().Pool(num_workers) as pool:
        yield from pool.imap(process_image, tasks)


def split_collisions(paths: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """Inputs with unique stems, and a reason for each one whose output name would overwrite another's."""
    seen: dict[str, Path] = {}
    kept, skipped = [], {}
    for path in paths:
        if path.stem in seen:
            skipped[path.name] = f"{path}: same output name as {seen[path.stem].name}; skipped"
        else:
            seen[path.stem] = path
            kept.append(path)
    return kept, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = resolve_degradation(args.degradation, args.preset, args.config, args.scale)
    except (KeyError, ValueError, TypeError) as err:
        return user_error(err, 2)
    if not args.input_dir.is_dir():
        return user_error(f"{args.input_dir}: not a folder", 2)
    paths, skipped = split_collisions(list_images(args.input_dir))
    if not paths:
        reasons = ", ".join(sorted(skipped)) or "folder is empty"
        return user_error(f"{args.input_dir}: no images ({reasons})", 2)
    for message in skipped.values():
        print(f"skipped {message}", file=sys.stderr)
    tasks = [PairTask(p, args.output_dir, config, args.seed, args.copies) for p in paths]
    written: list[str] = []
    for path, names, error in tqdm(run_tasks(tasks, args.num_workers), total=len(tasks), unit="img"):
        if error is not None:
            skipped[path.name] = error
            tqdm.write(f"skipped {error}", file=sys.stderr)
        written.extend(names)
    atomic_write_json(
        args.output_dir / "pairs.json",
        {
            "degradation": config_to_dict(config),
            "seed": args.seed,
            "copies": args.copies,
            "written": written,
            "skipped": skipped,
        },
    )
    print(f"{len(written)} pairs written to {args.output_dir}; {len(skipped)} input(s) skipped")
    return 0 if written else 1
