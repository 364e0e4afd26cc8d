"""Find, align and vet one person's photos before fine-tuning.

    python scripts/prepare_person.py PERSON_DIR_OR_NAME [--size 256] [--template gpen] [--holdout N|FRACTION]
        [--min-photos 3] [--out DIR]

PERSON may be a folder or a person name looked up under data/persons/. Prints one line per photo (decision
and reason) and where the crops, manifest.json and contact_sheet.png went. Problems with single photos are
reported in the table, never as a traceback; the exit status is non-zero only for fatal problems (no such
folder, invalid name, too few usable photos, detector weights missing), each with a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.data.person import NotEnoughPhotosError, prepare_person
from gpen_fewshot.data.photo_vetting import VettingSettings
from gpen_fewshot.faces.alignment import TEMPLATES
from gpen_fewshot.persons import resolve_person_dir


class _DefaultsWhereMeaningful(argparse.HelpFormatter):
    """Appends ``(default: X)`` to options with a real default value (not None, not a store_true flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("(default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def _holdout(text: str) -> int | float | None:
    """'auto' -> None, '2' -> 2, '0.2' -> 0.2."""
    if text.lower() in ("auto", "default", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count, a fraction or 'auto', got {text!r}") from None
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or a fraction in (0, 1), got {text!r}")
    return int(value) if value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_person", description=__doc__.split("\n")[0],
        formatter_class=_DefaultsWhereMeaningful,
    )
    parser.add_argument("person", help="folder of the person's photos, or a person name under data/persons/")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (256, 512, 1024)")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="gpen", help="alignment template")
    parser.add_argument("--holdout", type=_holdout, default=None, metavar="N|FRACTION|auto",
                        help="photos held out for validation: a count, a fraction, or auto "
                             "(1 when >= 4 usable) (default: auto)")
    parser.add_argument("--min-photos", type=int, default=3, help="fewest usable photos accepted")
    parser.add_argument("--out", type=Path, default=None,
                        help="root of the outputs, written to OUT/<size>_<template>/ "
                             "(default: <person>/.prepared, or the user cache when that folder is read-only)")
    parser.add_argument("--detector", choices=("auto", "resnet50", "mobilenet0.25"), default="auto",
                        help="RetinaFace backbone ('auto': ResNet-50 if its weights are present)")
    parser.add_argument("--min-face-scale", type=float, default=VettingSettings.min_face_scale,
                        help="reject faces with eye distance below this fraction of the template's")
    parser.add_argument("--min-sharpness", type=float, default=VettingSettings.min_sharpness,
                        help="reject faces whose Laplacian variance is below this")
    parser.add_argument("--no-identity", action="store_true",
                        help="do not compare identities (group photos then use the largest face) "
                             "(default: compare)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (default: progress shown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 fatal problem, 2 bad arguments)."""
    args = build_parser().parse_args(argv)

    try:
        person_dir = resolve_person_dir(args.person)
    except (ValueError, FileNotFoundError) as err:
        return user_error(err, 2)
    options = {"min_face_scale": args.min_face_scale, "min_sharpness": args.min_sharpness}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        prepared = prepare_person(
            person_dir, size=args.size, template=args.template, cache_dir=args.out, holdout=args.holdout,
            min_photos=args.min_photos, detector=args.detector, use_identity=not args.no_identity,
            progress=None if args.quiet else _progress, **options,
        )
    except NotEnoughPhotosError as err:
        if err.records:
            _print_table(err.records)
            print(f"contact sheet: {err.root / 'contact_sheet.png'}")
        return user_error(f"{err.summary} (reasons above and in manifest.json)", 1)
    except (ValueError, OSError) as err:  # bad settings, missing detector weights, unwritable output
        return user_error(err, 1)
    _print_table(prepared.records)
    _print_outputs(prepared)
    return 0


def _progress(index: int, total: int, name: str) -> None:
    print(f"[{index + 1}/{total}] {name}", file=sys.stderr, flush=True)


def _print_table(records: Sequence) -> None:
    width = max([len(r.file) for r in records] + [4])
    print(f"{'file':<{width}}  {'decision':<10}  {'split':<7}  reason")
    for r in records:
        print(f"{r.file:<{width}}  {r.decision:<10}  {r.split or '-':<7}  {r.reason}")


def _print_outputs(prepared) -> None:
    rejected = sum(r.decision != "used" for r in prepared.records)
    cached = " (unchanged: reused the previous preparation)" if prepared.from_cache else ""
    print(f"\nperson {prepared.name!r}: {len(prepared.train_crops)} train, "
          f"{len(prepared.holdout_crops)} holdout, {rejected} rejected{cached}")
    print(f"crops:         {prepared.root / 'train'}  {prepared.root / 'holdout'}")
    print(f"manifest:      {prepared.manifest_path}")
    print(f"contact sheet: {prepared.contact_sheet}")


if __name__ == "__main__":
    raise SystemExit(main())
