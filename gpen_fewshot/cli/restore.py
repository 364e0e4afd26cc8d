"""``gpen-restore`` / ``python restore.py``: restore the faces of photos, per person when registered.

Examples::

    python restore.py                                    # the bundled Solvay photo, base model
    python restore.py -i photo.jpg -o out.png --person alice
    python restore.py -i family/ -o restored/ --persons-dir data/persons --strength 0.7 --scale 2
    python restore.py -i crops/ --aligned --weights data/persons/alice/weights
    python restore.py -i old.jpg --compare               # also old_compare.jpg: input | restored, labelled
    # GFPGAN's flags
    python restore.py -i photos/ -o results/ -s 2 --ext png --suffix restored --only_center_face

Each output gets a JSON sidecar ``<output>.json`` (per face: box, person or base, identity distance, strength
used, identity-guard decisions). Exit code: 0 when every input was restored, 1 when some failed (each failure
is one line: unreadable file, no face, bad person weights), 2 when nothing could start (no base model, bad
arguments, an output that would replace an input), 130 when interrupted (Ctrl-C; finished outputs are kept,
nothing is half-written).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.cli.restore_outputs import (  # noqa: F401  (public here since issue 15)
    EXTENSIONS,
    plan_outputs,
    refuse_overwriting_inputs,
    skipped_files,
)
from gpen_fewshot.cli.restore_report import face_counts, face_lines, final_line, written_line
from gpen_fewshot.export import ExportError, discover_persons, load_person
from gpen_fewshot.faces.detection import FaceDetector
from gpen_fewshot.faces.paste import PasteConfig
from gpen_fewshot.restore import FaceModel, RestoreOptions, Restorer, load_base_model
from gpen_fewshot.restore.comparison import comparison_path, faces_dir
from gpen_fewshot.restore.models import BASE
from gpen_fewshot.restore.pipeline import BACKGROUND_UPSAMPLERS, sidecar_path
from gpen_fewshot.utils import precision as cpu_probe  # module access: tests stand in for the probe
from gpen_fewshot.utils.checkout import source_root
from gpen_fewshot.utils.device import resolve_device as torch_device

DEMO_INPUT = Path("data") / "demo" / "group" / "Solvay_conference_1927.png"
EXIT_OK, EXIT_FAILURES, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130


class Interrupted(Exception):
    """Ctrl-C during the batch; ``written`` outputs were finished before it."""

    def __init__(self, written: int) -> None:
        super().__init__(f"interrupted after {written} output(s)")
        self.written = written


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line (the usage of this many options would bury the message), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_SETUP, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (GFPGAN / CodeFormer / GPEN option names are accepted as aliases)."""
    p = OneLineParser(prog="gpen-restore", description="Restore the faces of photos.",
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", type=Path, default=None,
                   help=f"image file or folder (default: the bundled {DEMO_INPUT})")
    p.add_argument("-o", "--output", default=None,
                   help="output file (single input) or folder (an existing folder, a path ending in '/' or "
                        "without an extension; default: output_<name> in the current folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output to replace one of the input files (refused otherwise)")
    p.add_argument("--ext", default="auto", choices=EXTENSIONS,
                   help="format of the outputs named here (auto: the input's; default: %(default)s)")
    p.add_argument("--suffix", default="",
                   help="appended to the output names after '_' (a.jpg -> a_SUFFIX.jpg)")
    p.add_argument("--compare", action="store_true",
                   help="also write <output stem>_compare.<ext> (input | restored, labelled) and the face "
                        "pairs of --save-faces")
    who = p.add_argument_group("models")
    who.add_argument("--base", default=None,
                     help="base model: weights name, checkpoint file or export directory (default: the base "
                          "the first --person was trained from, else GPEN-BFR-512 if present, "
                          "else gpen-compact-256)")
    who.add_argument("--person", action="append", default=[], metavar="NAME",
                     help="register a person (name or export path; repeatable); "
                          "faces are matched by identity")
    who.add_argument("--persons-dir", type=Path, default=None,
                     help="where person names are looked up; without --person, register every person in it")
    who.add_argument("--weights", type=Path, default=None,
                     help="a person export applied to EVERY face (no identity matching)")
    who.add_argument("--strength", type=float, default=1.0,
                     help="person weights: 0 = the base's, 1 = the person's, interpolated between (default: "
                          "%(default)s)")
    who.add_argument("--alpha", type=float, default=1.0,
                     help="GPEN's --alpha: blend each restored face with its input face, alpha * restored + "
                          "(1 - alpha) * input (pixels, every face; --strength mixes weights; "
                          "default: %(default)s)")
    who.add_argument("--match-threshold", type=float, default=None,
                     help="identity distance below which a face is a registered person (default: dlib's 0.6)")
    guard = who.add_mutually_exclusive_group()
    guard.add_argument("--guard-threshold", type=float, default=0.6,
                       help="identity drift above which a result is retried weaker / with the base / dropped "
                            "(default: %(default)s)")
    guard.add_argument("--no-guard", action="store_true", help="disable the identity guard")
    faces = p.add_argument_group("faces")
    faces.add_argument("-s", "--scale", "--upscale", dest="scale", type=int, default=1,
                       help="upscale the whole photo by this integer factor (default: %(default)s)")
    faces.add_argument("--bg_upsampler", "--bg-upsampler", dest="bg_upsampler", default="lanczos",
                       help="background upscaling when --scale > 1: lanczos or none (the same here: OpenCV "
                            "Lanczos, no super-resolution model; default: %(default)s)")
    faces.add_argument("--aligned", "--has_aligned", dest="aligned", action="store_true",
                       help="inputs are aligned face crops")
    faces.add_argument("--save-faces", action="store_true",
                       help="also write input|restored crop pairs to <output stem>_faces/")
    faces.add_argument("--only-center-face", "--only_center_face", dest="only_center_face",
                       action="store_true", help="restore only the face nearest the image centre")
    faces.add_argument("--min-face-size", type=float, default=0.0, help="skip faces smaller than this (px)")
    faces.add_argument("--detector", default="auto", choices=("auto", "resnet50", "mobilenet0.25"))
    faces.add_argument("--no-color-match", action="store_true", help="paste without seam colour matching")
    run = p.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                     help="auto: bf16 on a CPU with native bf16 units (AVX512-BF16 / AMX), else fp32; "
                          "bf16 (CPU or CUDA) and fp16 (CUDA) run under autocast")
    run.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                     help="same as --precision fp16 (CUDA only)")
    run.add_argument("--batch-size", type=int, default=4,
                     help="faces per forward pass (default: %(default)s)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="only the last line (and errors): no model, per-photo or per-face lines, "
                          "no progress bars")
    run.add_argument("--debug", action="store_true",
                     help="show the full traceback of errors (for bug reports)")
    return p


def default_input() -> Path:
    """The bundled demo photo (looked up in the current folder, then in the source checkout)."""
    for root in (Path.cwd(), *filter(None, [source_root()])):
        if (root / DEMO_INPUT).is_file():
            return root / DEMO_INPUT
    return Path.cwd() / DEMO_INPUT


def resolve_device(name: str, precision: str = "auto") -> tuple[torch.device, str]:
    """torch device for ``name`` ("auto" = CUDA if available) and the precision to run at there.

    ``auto`` is bf16 only on a CPU with native bf16 units (elsewhere bf16 is emulated and slower than fp32)
    and fp32 otherwise (CUDA included: fp16/bf16 there are opt-in); fp16 on a CPU falls back to fp32.
    """
    device = torch_device(name)
    if precision == "auto":
        return device, "bf16" if device.type == "cpu" and cpu_probe.cpu_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        print("warning: fp16 needs a CUDA device; running in float32 on the CPU", file=sys.stderr)
        return device, "fp32"
    return device, precision


def _load_persons(args: argparse.Namespace) -> tuple[list, int]:
    """PersonWeights for --person / --persons-dir; bad ones are reported (one line each) and skipped."""

    names: list = list(args.person)
    if not names and args.persons_dir is not None:
        try:
            names = discover_persons(args.persons_dir)
        except ExportError as err:
            return [], user_error(err, 1)
    persons, failures = [], 0
    for name in names:
        try:
            persons.append(load_person(name, args.persons_dir))
        except (ExportError, ValueError) as err:
            failures += user_error(f"person {name}: {err}", 1)
    return persons, failures


def _options(args: argparse.Namespace, precision: str):

    extra = {}
    if args.match_threshold is not None:
        extra["match_threshold"] = args.match_threshold
    return RestoreOptions(
        strength=args.strength, scale=args.scale, aligned=args.aligned,
        only_center_face=args.only_center_face, alpha=args.alpha, background=args.bg_upsampler,
        min_face_size=args.min_face_size, batch_size=args.batch_size, precision=precision,
        guard_threshold=None if args.no_guard else args.guard_threshold,
        paste=PasteConfig(color_match=not args.no_color_match), **extra,
    )


def build_restorer(args: argparse.Namespace, device: torch.device, precision: str):
    """The Restorer for the parsed arguments, and the number of persons that failed to load.

    Raises:
        FileNotFoundError / ValueError: no base model, bad --weights (the message is one line).
    """

    options = _options(args, precision)
    persons, failures, force = [], 0, None
    if args.weights is not None:
        forced = load_person(args.weights)
        persons, force = [forced], forced.name
    else:
        persons, failures = _load_persons(args)
    base = load_base_model(args.base) if args.base is not None else _default_base(persons)
    detector = None if args.aligned else FaceDetector(model=args.detector)
    restorer = Restorer(base, persons, force_person=force, options=options, detector=detector, device=device)
    return restorer, failures


def _default_base(persons: list):
    """Without --base: the base model the (first) person was trained from, so that strength 0 reproduces it
    and a person tuned from GPEN-BFR-256 works without GPEN-BFR-512; else the default base model."""

    for person in persons:
        if person.has_base:
            model = FaceModel(person.build_generator(0.0), person.size, BASE, person.template)
            model.source = f"base of {person.name}"
            base = person.base
            model.label = base.name if base is not None else f"base of {person.name}"
            model.origin = (f"the base {person.name} was tuned from"
                            + (f": {base.path}" if base is not None else ""))
            return model
    return load_base_model(None)


def _restore_all(restorer, pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> int:
    """Restore every pair, with progress bars (stderr) over the photos and over each photo's faces; returns
    the number of failed inputs.

    Raises:
        Interrupted: Ctrl-C; carries how many outputs were written (each one atomically, so none is partial).
    """
    from tqdm.auto import tqdm

    failures = written = 0
    nested = len(pairs) > 1
    try:
        for source, target in tqdm(pairs, desc="photos", unit="photo",
                                   disable=not nested or args.quiet or None):
            started = time.perf_counter()
            faces_bar = tqdm(desc="detecting faces", unit="face", leave=False, position=int(nested),
                             disable=args.quiet or None)
            try:
                result = restorer.restore_file(source, target, save_faces=args.save_faces or args.compare,
                                               compare=args.compare, progress=_face_progress(faces_bar))
            except Exception as err:  # one bad input must not stop a batch: report it in one line, go on
                if args.debug:
                    raise
                tqdm.write(f"{source}: {_one_line(err, source)}", file=sys.stderr)
                failures += 1
                continue
            finally:
                faces_bar.close()
            written += 1
            if not args.quiet:
                _report(source, target, result, time.perf_counter() - started, args, tqdm.write)
    except KeyboardInterrupt:
        raise Interrupted(written) from None
    return failures


def _face_progress(bar):
    """``progress(finished, total)`` for the pipeline, driving ``bar`` (which waits through detection)."""

    def update(finished: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
            bar.set_description("restoring faces")
        bar.update(finished - bar.n)

    return update


def _report(source: Path, target: Path, result, seconds: float, args: argparse.Namespace, write) -> None:
    """The photo's lines: faces found / restored / skipped, one line per outcome, the files written."""

    write(f"{source.name}: {face_counts(result.faces)} ({seconds:.1f} s)")
    for line in face_lines(result.faces, result.info.get("base_label", "base")):
        write(f"  {line}")
    extras = [sidecar_path(target)]
    if args.compare:
        extras.append(comparison_path(target))
    if args.save_faces or args.compare:
        extras.append(faces_dir(target))
    write(f"  {written_line(target, extras)}")


def _one_line(err: Exception, source: Path) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    prefix = f"{source}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 some inputs failed, 2 could not start, 130 interrupted)."""
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    problem = _check(args)
    if problem:
        parser.error(problem)
    pairs: list[tuple[Path, Path]] = []
    try:
        return _run(args, pairs, started)
    except KeyboardInterrupt:  # before the batch started (loading models): nothing was written
        written = 0
    except Interrupted as stop:
        written = stop.written
    print(f"\ninterrupted: {written} of {len(pairs)} written", file=sys.stderr)
    return EXIT_INTERRUPTED


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the option values, in one line, or None."""

    if not 0.0 <= args.strength <= 1.0:
        return f"--strength must be in [0, 1], got {args.strength}"
    if not 0.0 <= args.alpha <= 1.0:
        return f"--alpha must be in [0, 1], got {args.alpha}"
    if args.scale < 1 or args.batch_size < 1:
        return "--scale and --batch-size must be >= 1"
    args.bg_upsampler = args.bg_upsampler.lower()
    if args.bg_upsampler not in BACKGROUND_UPSAMPLERS:
        return (f"--bg_upsampler {args.bg_upsampler}: not available (no super-resolution model ships with "
                f"gpen-fewshot); use one of: {', '.join(BACKGROUND_UPSAMPLERS)} (OpenCV Lanczos)")
    if any(c in args.suffix for c in "/\\"):
        return f"--suffix {args.suffix!r}: must not contain a path separator"
    return None


def _run(args: argparse.Namespace, pairs: list[tuple[Path, Path]], started: float) -> int:
    """Plan (filling ``pairs``), load the models, restore; returns the exit code."""

    input_path = args.input or default_input()
    try:
        pairs.extend(plan_outputs(input_path, args.output, args.ext, args.suffix))
        if not args.overwrite:
            refuse_overwriting_inputs(pairs)
        device, precision = resolve_device(args.device, args.precision)
        restorer, failures = build_restorer(args, device, precision)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if args.debug:
            raise
        return user_error(err, EXIT_SETUP)
    if not args.quiet:
        for line in restorer.describe():
            print(line)
    skipped = skipped_files(input_path)
    for path, reason in skipped:
        print(f"skipped {shlex.quote(str(path))}: {reason}", file=sys.stderr)
    file_failures = _restore_all(restorer, pairs, args)
    failures += file_failures
    print(final_line(len(pairs) - file_failures, len(pairs), failures, len(skipped),
                     time.perf_counter() - started, pairs))
    return EXIT_FAILURES if failures else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
