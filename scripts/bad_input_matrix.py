"""Bad-input / fault matrix of issue 15: run train.py and restore.py on bad, odd and interrupted input and
classify each case against the three rules of the README's *Reliability* section.

    python scripts/bad_input_matrix.py [--work /tmp/matrix] [--only REGEX]

Every input is built under ``--work`` (wiped first); runs go there too (``paths.log_dir``), and persons are
looked up in ``<work>/persons`` (``GPEN_FEWSHOT_PERSONS_DIR``), so the repository is not written to. Each case
is one subprocess (two for the concurrency case) with a timeout, run one at a time, single-threaded.

Result of a case:
  clean      bad input: non-zero exit, a diagnostic line naming the file or value (``error: ...``; for a
             failed photo of a restore batch the documented ``<photo>: <reason>`` line), no traceback, nothing
             written or lost; good-but-odd input: success, the documented handling, nothing lost
  traceback  a Python traceback was printed
  wrong      anything else (exit 0 on bad input, no diagnostic line, data lost or overwritten, output missing,
             ...)

Prints a markdown table per case and a summary per category; logs of every case are kept in ``<work>/logs``.

Why one file over 400 lines: it is a table of about a hundred scripted bad-input cases (each a few lines of
setup and the expected one-line outcome) with a small runner; the cases are data, read top to bottom.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("GPEN_MATRIX_DEMO", "/work/shared/data/demo"))
PY = sys.executable
TRAIN = [PY, "train.py"]
RESTORE = [PY, "restore.py"]
SMOKE = ["experiment=smoke", "iterations=2", "val_every=2", "extras.print_config=false"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

WORK = Path("/tmp/matrix")  # set by main()
ENV: dict[str, str] = {}


# --------------------------------------------------------------------------------------------------- running


@dataclass
class Run:
    rc: int | None  # None: timed out
    out: str  # stdout + stderr
    seconds: float


@dataclass
class Result:
    category: str
    case: str
    expected: str
    rc: str
    result: str
    note: str
    seconds: float


def log_path(case: str) -> Path:
    return WORK / "logs" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', case)}.log"


def run(case: str, args: list[str], timeout: float = 240, env: dict[str, str] | None = None,
        cwd: Path = REPO) -> Run:
    """Run ``args`` to completion (or the timeout); the output is kept in the case's log."""
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        rc, out, err = None, expired.stdout or b"", expired.stderr or b""
    text = out.decode(errors="replace") + "\n" + err.decode(errors="replace")
    with log_path(case).open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(args)}\n(cwd {cwd}; exit {rc})\n{text}\n")
    return Run(rc, text, time.monotonic() - start)


def _default_sigint() -> None:
    """A case must see Ctrl-C as a terminal would deliver it, even when this script runs in the background
    (a shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(case: str, args: list[str], tag: str = "") -> tuple[subprocess.Popen, Path]:
    """Start ``args`` in its own session (so a signal can go to its whole group, as Ctrl-C does)."""
    path = log_path(case + tag)
    handle = path.open("wb")
    handle.write(f"$ {shlex.join(args)}\n".encode())
    handle.flush()
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_default_sigint)
    handle.close()
    return proc, path


def finish(proc: subprocess.Popen, path: Path, timeout: float) -> Run:
    start_time = time.monotonic()
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    return Run(rc, path.read_text(encoding="utf-8", errors="replace"), time.monotonic() - start_time)


# -------------------------------------------------------------------------------------------- classification

TRACEBACK = "Traceback (most recent call last)"
ERROR_LINE = re.compile(r"^\s*(?:[\w.-]+: )?error:", re.IGNORECASE)  # "error: ..." or "prog: error: ..."


def short(text: str, width: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def traceback_note(out: str) -> str:
    """The exception line that ends the (last) traceback."""
    lines = out[out.rfind(TRACEBACK):].splitlines()
    for line in lines[1:]:
        if line and not line.startswith((" ", "\t")):
            return short(line)
    return "traceback"


def last_lines(out: str, count: int = 3) -> str:
    lines = [line for line in out.splitlines()
             if line.strip() and "it/s]" not in line and "s/it]" not in line]
    return short(" / ".join(lines[-count:]))


def judge_bad(out: str, rc: int | None, mentions: list[str], expected_rc: int | None = None,
              line: re.Pattern | None = None) -> tuple[str, str]:
    """Bad input: non-zero exit (``expected_rc`` where documented), a diagnostic line containing every string
    of ``mentions``, no traceback."""
    if rc is None:
        return "wrong", "timed out"
    if TRACEBACK in out:
        return "traceback", traceback_note(out)
    if rc == 0:
        return "wrong", "exit 0 on bad input; " + last_lines(out)
    pattern = line or ERROR_LINE
    diagnostics = [text.strip() for text in out.splitlines() if pattern.search(text)]
    if not diagnostics:
        naming = [text.strip() for text in out.splitlines() if mentions and mentions[0] in text]
        shown = " / ".join(naming[:3]) if naming else "output ends: " + last_lines(out, 6)
        return "wrong", short(f"no 'error:' line ({len(out.strip().splitlines())} lines); {shown}")
    naming = [text for text in diagnostics if all(m in text for m in mentions)]
    if not naming:
        return "wrong", f"error line does not name {mentions}: " + short(diagnostics[0])
    if expected_rc is not None and rc != expected_rc:
        return "wrong", f"exit {rc}, documented {expected_rc}: " + short(naming[0])
    note = short(naming[0])
    if len(diagnostics) > 1:
        note += f" (+{len(diagnostics) - 1} more error line(s))"
    return "clean", note


def judge_ok(out: str, rc: int | None, checks: list[tuple[bool, str]]) -> tuple[str, str]:
    """Good-but-odd input: exit 0, no traceback, every check true (the first failing one is the note)."""
    if rc is None:
        return "wrong", "timed out"
    if TRACEBACK in out:
        return "traceback", traceback_note(out)
    if rc != 0:
        errors = [text for text in out.splitlines() if ERROR_LINE.search(text)]
        return "wrong", f"exit {rc}: " + (short(errors[0]) if errors else last_lines(out))
    for ok, message in checks:
        if not ok:
            return "wrong", message
    return "clean", ""


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` outside ``.prepared`` (what the user had)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and ".prepared" not in path.parts:
            files[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def lost(before: dict[str, str], folder: Path) -> str:
    """'' when every file of ``before`` is still there with the same bytes, else what changed."""
    after = snapshot(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    return f"user files changed or lost: {changed}" if changed else ""


def checkpoints_below(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.ckpt")) if folder.exists() else []


def image_complete(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------- inputs


def demo_photo(index: int) -> Path:
    return DEMO / "person_obama" / f"{index:03d}.jpg"


def copy_photo(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def person_folder(name: str, photos: tuple[int, ...] = (0, 1, 2, 3)) -> Path:
    folder = WORK / "persons" / name
    folder.mkdir(parents=True, exist_ok=True)
    for index in photos:
        copy_photo(demo_photo(index), folder / f"{index:03d}.jpg")
    return folder


def no_face_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A smooth random landscape-like RGB image without a face."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def rgb(index: int) -> np.ndarray:
    return np.asarray(Image.open(demo_photo(index)).convert("RGB"))


def write_corrupt_jpeg(path: Path) -> None:
    data = demo_photo(3).read_bytes()
    path.write_bytes(data[:3000])  # header and the start of the scan: truncated


def write_rgba_png(path: Path, index: int = 3) -> np.ndarray:
    image = rgb(index)
    alpha = np.tile(np.linspace(40, 255, image.shape[1], dtype=np.uint8), (image.shape[0], 1))
    Image.fromarray(np.dstack([image, alpha]), "RGBA").save(path)
    return alpha


def write_png16(path: Path, index: int = 3) -> None:
    image = rgb(index).astype(np.uint16) * 257
    cv2.imwrite(str(path), image[:, :, ::-1])


def write_huge_jpeg(path: Path) -> None:
    Image.new("RGB", (17000, 12000), (120, 130, 140)).save(path, quality=10)


class _Payload:
    """Unpickling this creates the marker file (proof that pickled code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------------------------------- cases

RESULTS: list[Result] = []
CASES: list[tuple[str, str, str, Callable[[str], tuple[str, str, str]]]] = []


def case(category: str, name: str, expected: str):
    def register(function: Callable[[str], tuple[str, str, str]]):
        CASES.append((category, name, expected, function))
        return function

    return register


def rc_text(*codes: int | None) -> str:
    return ",".join("timeout" if c is None else str(c) for c in codes)


def logdir(name: str) -> Path:
    return WORK / "runs" / name


def train_args(name: str, *overrides: str, person: str | None = "good") -> list[str]:
    args = [*TRAIN, *SMOKE, f"paths.log_dir={logdir(name)}"]
    if person is not None:
        args.append(f"person={person}")
    return [*args, *overrides]


# -- photos (train.py person=...)

def photo_case(name: str, odd_file: str, make: Callable[[Path], None], used: bool,
               photos: tuple[int, ...] = (0, 1, 2, 3)) -> tuple[str, str, str]:
    """A person folder of demo photos plus one odd file; the run must succeed and the odd file must be used
    (``used``) or listed as dropped with its reason."""
    person = f"p_{name}"
    folder = person_folder(person, photos)
    make(folder / odd_file)
    before = snapshot(folder)
    result = run(name, train_args(name, person=person), timeout=300)
    manifest_path = folder / ".prepared" / "32_gpen" / "manifest.json"
    decision, reason = None, ""
    if manifest_path.is_file():
        for record in json.loads(manifest_path.read_text())["photos"]:
            if record["file"] == odd_file:
                decision, reason = record["decision"], record.get("reason", "")
    listed = [line.strip() for line in result.out.splitlines() if line.strip().startswith(odd_file + ":")]
    exports = list(logdir(name).glob(f"{person}/*/export/config.json"))
    if used:
        checks = [(decision == "used", f"{odd_file}: decision {decision!r} ({reason})")]
        note = f"{odd_file}: {decision} ({short(reason, 70)})"
    else:
        checks = [(decision not in (None, "used"), f"{odd_file}: decision {decision!r}, expected dropped"),
                  (bool(listed), f"{odd_file} not listed among the dropped photos")]
        note = listed[0] if listed else ""
    checks += [(bool(exports), "no export written"), (not lost(before, folder), lost(before, folder))]
    verdict, why = judge_ok(result.out, result.rc, checks)
    return rc_text(result.rc), verdict, short(why or note)


@case("photos", "corrupt (truncated) JPEG among 4 good", "run ok, listed as unreadable")
def _(name):
    return photo_case(name, "corrupt.jpg", write_corrupt_jpeg, used=False)


@case("photos", "zero-byte .jpg among 4 good", "run ok, listed as unreadable")
def _(name):
    return photo_case(name, "zero.jpg", lambda p: p.write_bytes(b""), used=False)


@case("photos", "text file named .jpg among 4 good", "run ok, listed as unreadable")
def _(name):
    return photo_case(name, "notes.jpg", lambda p: p.write_text("not a photo\n"), used=False)


@case("photos", "photo without a face among 4 good", "run ok, listed as no_face")
def _(name):
    return photo_case(name, "landscape.jpg", lambda p: Image.fromarray(no_face_image()).save(p), used=False)


@case("photos", "tiny 20x20 face among 4 good", "run ok, listed as dropped with its reason")
def _(name):
    def make(path: Path) -> None:
        Image.open(demo_photo(3)).crop((372, 79, 616, 436)).resize((20, 20)).save(path)

    return photo_case(name, "tiny.png", make, used=False)


@case("photos", "grayscale PNG face (+3 good)", "run ok, photo used")
def _(name):
    return photo_case(name, "gray.png", lambda p: Image.open(demo_photo(3)).convert("L").save(p), used=True,
                      photos=(0, 1, 2))


@case("photos", "RGBA PNG face (+3 good)", "run ok, photo used")
def _(name):
    return photo_case(name, "rgba.png", write_rgba_png, used=True, photos=(0, 1, 2))


@case("photos", "16-bit RGB PNG face (+3 good)", "run ok, photo used")
def _(name):
    return photo_case(name, "deep16.png", write_png16, used=True, photos=(0, 1, 2))


@case("photos", "17000x12000 solid JPEG (q10) among 4 good", "run ok, listed (no_face), no crash")
def _(name):
    return photo_case(name, "huge.jpg", write_huge_jpeg, used=False)


def train_bad(name: str, overrides: list[str], mentions: list[str], person: str | None = "good",
              extra: Callable[[], str] | None = None, timeout: float = 240) -> tuple[str, str, str]:
    """train.py on bad input: exit 1, one error line naming it, no checkpoint written."""
    result = run(name, train_args(name, *overrides, person=person), timeout=timeout)
    verdict, note = judge_bad(result.out, result.rc, mentions, expected_rc=1)
    written = checkpoints_below(logdir(name))
    if verdict == "clean" and written:
        verdict, note = "wrong", f"checkpoint written: {written[0]}"
    problem = extra() if extra else ""
    if verdict == "clean" and problem:
        verdict, note = "wrong", problem
    return rc_text(result.rc), verdict, note


@case("photos", "empty person folder", "exit 1, error names the folder/person")
def _(name):
    (WORK / "persons" / "empty").mkdir(parents=True, exist_ok=True)
    return train_bad(name, [], ["empty"], person="empty")


@case("photos", "person folder with only bad files", "exit 1, error lists each photo's reason")
def _(name):
    folder = WORK / "persons" / "allbad"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo\n")
    Image.fromarray(no_face_image()).save(folder / "landscape.jpg")
    result = run(name, train_args(name, person="allbad"))
    verdict, note = judge_bad(result.out, result.rc, [], expected_rc=1)
    if verdict == "clean":
        missing = [f for f in ("zero.jpg", "notes.jpg", "landscape.jpg") if f not in result.out]
        if missing:
            verdict, note = "wrong", f"reasons not listed for {missing}: {note}"
    return rc_text(result.rc), verdict, note


@case("photos", "missing person (person=nobody)", "exit 1, error names the person/folder")
def _(name):
    return train_bad(name, [], ["nobody"], person="nobody")


def escaped(name: str) -> Callable[[], str]:
    """No folder may be created for a refused person name: not the log dir, not where ``../../x`` points."""

    def check() -> str:
        created = [str(p) for p in (logdir(name), WORK / "x", WORK / "runs" / "x") if p.exists()]
        return f"created {created}" if created else ""

    return check


@case("photos", "unsafe name person=../../x", "exit 1, error names it, no folder created")
def _(name):
    return train_bad(name, [], ["../../x"], person="../../x", extra=escaped(name))


@case("photos", "empty name person=", "exit 1, error says invalid name, no folder created")
def _(name):
    return train_bad(name, [], ["invalid person name"], person="", extra=escaped(name))


@case("photos", "name with spaces person='my person'", "exit 1, error names it (spaces not allowed)")
def _(name):
    person_folder("my person")
    return train_bad(name, [], ["my person"], person="my person", extra=escaped(name))


# -- checkpoints (train.py ckpt_path=...)

def baseline_ckpt() -> Path:
    found = sorted(logdir("setup").glob("good/*/checkpoints/last.ckpt"))
    if not found:
        raise RuntimeError("setup run wrote no last.ckpt")
    return found[0]


def ckpt_case(name: str, make: Callable[[Path], None] | None, filename: str = "bad.ckpt",
              overrides: tuple[str, ...] = ()) -> tuple[str, str, str]:
    path = WORK / "ckpts" / name / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if make:
        make(path)
    return train_bad(name, [f"ckpt_path={path}", *overrides], [str(path)])


@case("checkpoints", "ckpt_path= truncated checkpoint", "exit 1, error names the file")
def _(name):
    return ckpt_case(name, lambda p: p.write_bytes(baseline_ckpt().read_bytes()[:200_000]))


@case("checkpoints", "ckpt_path= random bytes", "exit 1, error names the file")
def _(name):
    return ckpt_case(name, lambda p: p.write_bytes(np.random.default_rng(1).bytes(100_000)))


@case("checkpoints", "ckpt_path= empty file", "exit 1, error names the file")
def _(name):
    return ckpt_case(name, lambda p: p.write_bytes(b""))


@case("checkpoints", "ckpt_path= pickle of an object (code on load)",
      "exit 1, error names the file, code not run")
def _(name):
    marker = WORK / "ckpts" / name / "PICKLE_CODE_RAN"
    rc, verdict, note = ckpt_case(name, lambda p: p.write_bytes(pickle.dumps(_Payload(marker))))
    if marker.exists():
        verdict, note = "wrong", "the pickled code ran (marker file created)"
    return rc, verdict, note


@case("checkpoints", "ckpt_path= non-existent path", "exit 1, error names the path")
def _(name):
    return ckpt_case(name, None, filename="missing.ckpt")


@case("checkpoints", "ckpt_path= valid ckpt of another architecture (model.narrow=0.25)",
      "exit 1, error names model.narrow, nothing written")
def _(name):
    result = run(name, train_args(name, f"ckpt_path={baseline_ckpt()}", "model.narrow=0.25"))
    verdict, note = judge_bad(result.out, result.rc, ["model.narrow"], expected_rc=1)
    if verdict == "clean" and checkpoints_below(logdir(name)):
        verdict, note = "wrong", "checkpoint written"
    return rc_text(result.rc), verdict, note


# -- weights (restore.py --weights ...)

def baseline_export() -> Path:
    found = sorted(logdir("setup").glob("good/*/export"))
    if not found:
        raise RuntimeError("setup run wrote no export")
    return found[0]


def face_input() -> Path:
    path = WORK / "inputs" / "face.jpg"
    if not path.exists():
        copy_photo(demo_photo(3), path)
    return path


def weights_case(name: str, change: Callable[[Path], None] | None, mentions: list[str],
                 folder: Path | None = None) -> tuple[str, str, str]:
    if folder is None:
        folder = WORK / "weights" / name
        shutil.copytree(baseline_export(), folder)
        if change:
            change(folder)
    out = WORK / "restore" / name / "out.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(name, [*RESTORE, "-q", "-i", str(face_input()), "-o", str(out), "--weights", str(folder)],
                 timeout=120)
    verdict, note = judge_bad(result.out, result.rc, mentions, expected_rc=2)
    if verdict == "clean" and out.exists():
        verdict, note = "wrong", "an output was written"
    return rc_text(result.rc), verdict, note


def edit_config(**values) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(values)
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    return change


def edit_generator(**values) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["generator"].update(values)
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    return change


@case("weights", "--weights config.json generator.size \"big\"", "exit 2, error names size")
def _(name):
    return weights_case(name, edit_generator(size="big"), ["size"])


@case("weights", "--weights config.json generator.size 300", "exit 2, error names size")
def _(name):
    return weights_case(name, edit_generator(size=300), ["size"])


@case("weights", "--weights config.json top-level \"size\": \"big\"", "exit 2, error names size")
def _(name):
    return weights_case(name, edit_config(size="big"), ["size"])


@case("weights", "--weights config.json top-level \"size\": 300", "exit 2, error names size")
def _(name):
    return weights_case(name, edit_config(size=300), ["size"])


@case("weights", "--weights folder without model.safetensors", "exit 2, error names model.safetensors")
def _(name):
    return weights_case(name, lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"])


@case("weights", "--weights truncated model.safetensors", "exit 2, error names model.safetensors")
def _(name):
    def truncate(folder: Path) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return weights_case(name, truncate, ["model.safetensors"])


@case("weights", "--weights config.json not JSON", "exit 2, error names config.json")
def _(name):
    return weights_case(name, lambda f: (f / "config.json").write_text("{size: 32,"), ["config.json"])


@case("weights", "--weights non-existent folder", "exit 2, error names the path")
def _(name):
    missing = WORK / "weights" / "does-not-exist"
    return weights_case(name, None, [str(missing)], folder=missing)


# -- overrides (train.py)

@case("overrides", "iterations=abc", "exit 1, error names iterations")
def _(name):
    return train_bad(name, ["iterations=abc"], ["iterations"])


@case("overrides", "data.batch_size=two", "exit 1, error names data.batch_size")
def _(name):
    return train_bad(name, ["data.batch_size=two"], ["data.batch_size"])


@case("overrides", "unknown key foo=1", "exit 1, error names foo")
def _(name):
    return train_bad(name, ["foo=1"], ["foo"])


@case("overrides", "model=doesnotexist", "exit 1, error names the option")
def _(name):
    return train_bad(name, ["model=doesnotexist"], ["doesnotexist"])


@case("overrides", "iterations=0", "exit 1, error names iterations")
def _(name):
    return train_bad(name, ["iterations=0"], ["iterations"])


@case("overrides", "resume=<non-existent run dir>", "exit 1, error names the folder")
def _(name):
    missing = WORK / "runs" / "no-such-run"
    return train_bad(name, [f"resume={missing}"], [str(missing)])


@case("overrides", "resume=true with no earlier run", "exit 1 with an error naming it, or a fresh run")
def _(name):
    result = run(name, train_args(name, "resume=true"))
    if result.rc == 0 and TRACEBACK not in result.out:
        exports = list(logdir(name).glob("good/*/export/config.json"))
        return (rc_text(result.rc), "clean" if exports else "wrong",
                "started a fresh run" if exports else "no export")
    verdict, note = judge_bad(result.out, result.rc, ["resume"], expected_rc=1)
    return rc_text(result.rc), verdict, note


@case("overrides", "unquoted unicode path override paths.log_dir=.../ü", "exit 1, error names the override")
def _(name):
    args = [*TRAIN, *SMOKE, "person=good", f"paths.log_dir={WORK / 'runs' / 'unicode ü'}"]
    result = run(name, args)
    verdict, note = judge_bad(result.out, result.rc, ["paths.log_dir"], expected_rc=1)
    return rc_text(result.rc), verdict, note


# -- interruption

def interrupted_training(name: str, signum: int, log_root: Path, log_override: str) -> tuple[str, str, str]:
    """Train 200 iterations, send ``signum`` once checkpoints are being written, run the printed command.

    The resumed run gets a run folder of its own (every run does); it must load the interrupted run's
    last.ckpt and finish the 200 iterations.
    """
    args = [*TRAIN, "experiment=smoke", "iterations=200", "val_every=50",
            "callbacks.checkpoint.every_n_iters=5", "person=good", log_override, "extras.print_config=false"]
    proc, path = start(name, args)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if list(log_root.glob("good/*/checkpoints/last.ckpt")):
            break
        time.sleep(0.2)
    time.sleep(1.0)  # a few more iterations
    if proc.poll() is not None:
        first = finish(proc, path, 5)
        return rc_text(first.rc), "wrong", "run ended before the signal: " + last_lines(first.out)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # what Ctrl-C in a terminal does
    else:
        os.kill(proc.pid, signum)  # `kill PID`
    first = finish(proc, path, 120)
    runs = sorted(log_root.glob("good/*"))
    if first.rc is None:
        return "timeout", "wrong", "did not stop within 120 s of the signal"
    if TRACEBACK in first.out:
        return rc_text(first.rc), "traceback", traceback_note(first.out)
    if first.rc != 128 + signum:  # 130 / 143: shells and schedulers must see an interrupted job
        return rc_text(first.rc), "wrong", f"exit {first.rc} after the signal, expected {128 + signum}"
    run_dir = runs[0] if len(runs) == 1 else None
    ckpt = run_dir / "checkpoints" / "last.ckpt" if run_dir else None
    if ckpt is None or not ckpt.is_file():
        return rc_text(first.rc), "wrong", f"no last.ckpt after the interruption (run folders: {runs})"
    if (run_dir / "export").exists():
        return rc_text(first.rc), "wrong", "an interrupted run wrote an export"
    saved = re.search(r"(stopped at iteration \d+ of \d+|checkpoint of iteration \d+ saved)", first.out)
    at = saved.group(1) if saved else "stopped"
    printed = re.search(r"continue with: (.+)", first.out)
    if not printed:
        # diagnosis only: would the checkpoint have resumed with the command the product should have printed?
        words = [*args[1:-2], log_override, f"resume={run_dir}"] if "'" not in log_override else None
        probe = ""
        if words is not None:
            second = run(name + "_manual_resume", [PY, *words], timeout=480)
            probe = (f"; a manual `resume=<run dir>` then exits {second.rc}"
                     + (" and finishes" if re.search(r"iteration 200\)", second.out) else ""))
        return (rc_text(first.rc), "wrong",
                f"{at}, last.ckpt written, interrupted run exit {first.rc}, but no 'continue with:' "
                f"line{probe}")
    words = shlex.split(printed.group(1))
    second = run(name + "_resume", words, timeout=480)
    codes = rc_text(first.rc, second.rc)
    note = f"{at}; interrupted run exit {first.rc}; printed: `{short(printed.group(1), 400)}`"
    if TRACEBACK in second.out:
        return codes, "traceback", "resume: " + traceback_note(second.out)
    if second.rc != 0:
        return codes, "wrong", f"resume command exit {second.rc}: " + last_lines(second.out, 4)
    resumed = re.search(r"resuming from (.+)", second.out)
    if not resumed or resumed.group(1).strip() != str(ckpt):
        return (codes, "wrong",
                f"the resume command did not load {ckpt} ({resumed and resumed.group(1)}); " + note)
    iteration = re.search(r"Exported the model .*\(EMA generator, iteration (\d+)\)", second.out)
    export = re.search(r"run export: (.+)", second.out)
    export_dir = Path(export.group(1).strip()) if export else None
    if (not iteration or iteration.group(1) != "200" or not export_dir or
            not (export_dir / "config.json").is_file()):
        return codes, "wrong", "resumed run did not finish and export 200 iterations; " + note
    first_iter = re.search(r"iteration (\d+): stage", second.out)
    return codes, "clean", (note + f"; resumed from iteration {first_iter.group(1) if first_iter else '?'} "
                            f"in a new run folder {export_dir.parent.name}, finished 200 "
                            f"({second.seconds:.0f} s)")


@case("interruption", "train.py SIGINT (Ctrl-C to the process group), run the printed command",
      "last.ckpt, 'continue with:', that command finishes the run")
def _(name):
    root = logdir(name)
    return interrupted_training(name, signal.SIGINT, root, f"paths.log_dir={root}")


@case("interruption", "train.py SIGINT, log dir with spaces+unicode (quoted), run the printed command",
      "last.ckpt, shell-quoted 'continue with:', that command finishes the run")
def _(name):
    root = WORK / "runs" / "ctrl c ü"
    return interrupted_training(name, signal.SIGINT, root, f"paths.log_dir='{root}'")


@case("interruption", "train.py SIGTERM (kill PID), run the printed command",
      "last.ckpt, 'continue with:', that command finishes the run")
def _(name):
    root = logdir(name)
    return interrupted_training(name, signal.SIGTERM, root, f"paths.log_dir={root}")


@case("interruption", "restore.py SIGINT on a folder of 6 photos",
      "exit 130, 'interrupted: N of M', outputs complete")
def _(name):
    folder = WORK / "inputs" / "batch"
    for index in range(4):
        copy_photo(demo_photo(index), folder / f"{index:03d}.jpg")
    copy_photo(DEMO / "group" / "obama_and_biden.jpg", folder / "004.jpg")
    copy_photo(DEMO / "group" / "Solvay_conference_1927.png", folder / "005.png")
    before = snapshot(folder)
    out = WORK / "restore" / name
    names = {p.name for p in folder.iterdir()}
    proc, path = start(name, [*RESTORE, "-i", str(folder), "-o", str(out) + "/"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(p.name in names for p in out.iterdir()):
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        result = finish(proc, path, 5)
        return rc_text(result.rc), "wrong", "finished before the signal could be sent"
    os.killpg(proc.pid, signal.SIGINT)
    result = finish(proc, path, 60)
    if result.rc is None:
        return "timeout", "wrong", "did not stop within 60 s"
    if TRACEBACK in result.out:
        return rc_text(result.rc), "traceback", traceback_note(result.out)
    said = re.search(r"interrupted: (\d+) of (\d+) written", result.out)
    files = sorted(out.iterdir()) if out.is_dir() else []
    images = [p for p in files if p.name in names]
    extra = [p.name for p in files if p.name not in names and not (p.suffix == ".json" and p.stem in names)]
    broken = [p.name for p in images if not image_complete(p)]
    sidecars_bad = [p.name for p in images if not _json_ok(p.with_name(p.name + ".json"))]
    checks = [
        (result.rc == 130, f"exit {result.rc}, expected 130"),
        (said is not None, "no 'interrupted: N of M written' line"),
        (said is None or int(said.group(1)) == len(images),
         f"said {said and said.group(0)}, found {len(images)}"),
        (not broken, f"incomplete outputs: {broken}"),
        (not extra, f"stray files in the output folder: {extra}"),
        (not sidecars_bad, f"missing/broken sidecars: {sidecars_bad}"),
        (not lost(before, folder), lost(before, folder)),
    ]
    for ok, message in checks:
        if not ok:
            return rc_text(result.rc), "wrong", message
    return rc_text(result.rc), "clean", f"{said.group(0)}; {len(images)} complete output(s), no stray files"


def _json_ok(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except Exception:
        return False


# -- restore inputs

def restore_dir(name: str) -> Path:
    folder = WORK / "restore" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@case("restore", "-i x.jpg -o x.jpg", "exit 2, refused, original untouched")
def _(name):
    folder = restore_dir(name)
    photo = copy_photo(demo_photo(3), folder / "x.jpg")
    before = snapshot(folder)
    result = run(name, [*RESTORE, "-q", "-i", str(photo), "-o", str(photo)], timeout=120)
    verdict, note = judge_bad(result.out, result.rc, ["x.jpg"], expected_rc=2)
    problem = lost(before, folder) or (f"new files {sorted(set(snapshot(folder)) - set(before))}"
                                       if set(snapshot(folder)) != set(before) else "")
    if verdict == "clean" and problem:
        verdict, note = "wrong", problem
    return rc_text(result.rc), verdict, note


@case("restore", "-i dir -o dir (same folder)", "exit 2, refused, folder untouched")
def _(name):
    folder = restore_dir(name) / "photos"
    copy_photo(demo_photo(2), folder / "a.jpg")
    copy_photo(demo_photo(3), folder / "b.jpg")
    before = snapshot(folder)
    result = run(name, [*RESTORE, "-q", "-i", str(folder), "-o", str(folder)], timeout=120)
    verdict, note = judge_bad(result.out, result.rc, [], expected_rc=2)
    problem = lost(before, folder) or ("new files" if set(snapshot(folder)) != set(before) else "")
    if verdict == "clean" and problem:
        verdict, note = "wrong", problem
    return rc_text(result.rc), verdict, note


@case("restore", "-o hard link to the input", "exit 2, refused, original untouched")
def _(name):
    folder = restore_dir(name)
    photo = copy_photo(demo_photo(3), folder / "x.jpg")
    (folder / "link.jpg").hardlink_to(photo)
    before = snapshot(folder)
    result = run(name, [*RESTORE, "-q", "-i", str(photo), "-o", str(folder / "link.jpg")], timeout=120)
    verdict, note = judge_bad(result.out, result.rc, [], expected_rc=2)
    if verdict == "clean" and lost(before, folder):
        verdict, note = "wrong", lost(before, folder)
    return rc_text(result.rc), verdict, note


@case("restore", "-o out.gif (unsupported extension)", "exit 2, error names .gif, nothing written")
def _(name):
    folder = restore_dir(name)
    result = run(name, [*RESTORE, "-q", "-i", str(face_input()), "-o", str(folder / "out.gif")], timeout=120)
    verdict, note = judge_bad(result.out, result.rc, [".gif"], expected_rc=2)
    if verdict == "clean" and (folder / "out.gif").exists():
        verdict, note = "wrong", "out.gif written"
    return rc_text(result.rc), verdict, note


@case("restore", "folder with .heic, .txt, broken symlink + 1 photo",
      "exit 0, each listed as skipped, photo restored")
def _(name):
    folder = restore_dir(name) / "in"
    copy_photo(demo_photo(3), folder / "a.jpg")
    (folder / "b.heic").write_bytes(b"\0\0\0\x18ftypheic")
    (folder / "notes.txt").write_text("hello\n")
    (folder / "c.jpg").symlink_to(folder / "missing.jpg")
    out = restore_dir(name) / "out"
    result = run(name, [*RESTORE, "-q", "-i", str(folder), "-o", str(out) + "/"], timeout=120)
    skipped = [line for line in result.out.splitlines() if line.startswith("skipped")]
    checks = [(any(n in line for line in skipped), f"{n} not listed as skipped")
              for n in ("b.heic", "notes.txt", "c.jpg")]
    checks.append((image_complete(out / "a.jpg"), "a.jpg not restored"))
    verdict, note = judge_ok(result.out, result.rc, checks)
    return rc_text(result.rc), verdict, note or short(" / ".join(skipped))


@case("restore", "non-existent input", "non-zero exit, error names the path")
def _(name):
    missing = WORK / "inputs" / "nope.jpg"
    result = run(name, [*RESTORE, "-q", "-i", str(missing), "-o", str(restore_dir(name) / "o.png")],
                 timeout=120)
    verdict, note = judge_bad(result.out, result.rc, ["nope.jpg"])
    return rc_text(result.rc), verdict, note


@case("restore", "RGBA PNG input -> PNG", "exit 0, alpha kept unchanged")
def _(name):
    folder = restore_dir(name)
    alpha = write_rgba_png(folder / "in.png")
    out = folder / "out.png"
    result = run(name, [*RESTORE, "-q", "-i", str(folder / "in.png"), "-o", str(out)], timeout=120)
    mode, same = None, False
    if image_complete(out):
        image = Image.open(out)
        mode = image.mode
        same = mode == "RGBA" and np.array_equal(np.asarray(image)[:, :, 3], alpha)
    verdict, note = judge_ok(result.out, result.rc, [(mode == "RGBA", f"output mode {mode}"),
                                                     (same, "alpha channel changed")])
    return rc_text(result.rc), verdict, note or f"output {mode}, alpha identical"


@case("restore", "RGBA PNG input -> JPEG", "exit 0 with a warning that alpha is dropped")
def _(name):
    folder = restore_dir(name)
    write_rgba_png(folder / "in.png")
    result = run(name, [*RESTORE, "-q", "-i", str(folder / "in.png"), "-o", str(folder / "out.jpg")],
                 timeout=120)
    warnings = [line.strip() for line in result.out.splitlines()
                if "warning" in line.lower() and "alpha" in line]
    verdict, note = judge_ok(result.out, result.rc, [(image_complete(folder / "out.jpg"), "no output"),
                                                     (bool(warnings), "no warning about the alpha channel")])
    return rc_text(result.rc), verdict, note or short(warnings[0])


@case("restore", "16-bit RGB PNG input -> PNG", "exit 0, 16-bit output")
def _(name):
    folder = restore_dir(name)
    write_png16(folder / "in.png")
    out = folder / "out.png"
    result = run(name, [*RESTORE, "-q", "-i", str(folder / "in.png"), "-o", str(out)], timeout=120)
    array = cv2.imread(str(out), cv2.IMREAD_UNCHANGED) if out.exists() else None
    dtype = None if array is None else f"{array.dtype}{list(array.shape)}"
    verdict, note = judge_ok(result.out, result.rc, [(array is not None and array.dtype == np.uint16,
                                                      f"output {dtype}")])
    return rc_text(result.rc), verdict, note or f"output {dtype}"


@case("restore", "folder with a corrupt JPEG + 1 photo",
      "exit 1, one line naming the corrupt file, photo restored")
def _(name):
    folder = restore_dir(name) / "in"
    copy_photo(demo_photo(3), folder / "a.jpg")
    write_corrupt_jpeg(folder / "broken.jpg")
    out = restore_dir(name) / "out"
    result = run(name, [*RESTORE, "-q", "-i", str(folder), "-o", str(out) + "/"], timeout=120)
    per_photo = re.compile(r"(^\s*(?:[\w.-]+: )?error:)|(^" + re.escape(str(folder / "broken.jpg")) + ": )")
    verdict, note = judge_bad(result.out, result.rc, ["broken.jpg"], expected_rc=1, line=per_photo)
    if verdict == "clean" and not image_complete(out / "a.jpg"):
        verdict, note = "wrong", "the good photo was not restored"
    if verdict == "clean" and (out / "broken.jpg").exists():
        verdict, note = "wrong", "an output was written for the corrupt photo"
    return rc_text(result.rc), verdict, note


@case("restore", "photo without a face", "exit 1, one line naming the photo (no face)")
def _(name):
    folder = restore_dir(name)
    Image.fromarray(no_face_image()).save(folder / "landscape.jpg")
    result = run(name, [*RESTORE, "-q", "-i", str(folder / "landscape.jpg"), "-o", str(folder / "out.png")],
                 timeout=120)
    per_photo = re.compile(r"(^\s*(?:[\w.-]+: )?error:)|(^" + re.escape(str(folder / "landscape.jpg"))
                           + ": )")
    verdict, note = judge_bad(result.out, result.rc, ["landscape.jpg"], expected_rc=1, line=per_photo)
    return rc_text(result.rc), verdict, note


@case("restore", "--strength 1.5", "exit 2, error names --strength")
def _(name):
    folder = restore_dir(name)
    result = run(name,
                 [*RESTORE, "-q", "-i", str(face_input()), "-o", str(folder / "o.png"), "--strength", "1.5"],
                 timeout=120)
    verdict, note = judge_bad(result.out, result.rc, ["strength"], expected_rc=2)
    return rc_text(result.rc), verdict, note


# -- concurrency

@case("concurrency", "two train.py smoke runs started together (fresh person, shared log dir)",
      "both exit 0, different run folders, both exported")
def _(name):
    folder = person_folder("conc")
    before = snapshot(folder)
    args = train_args(name, person="conc")
    first, first_log = start(name, args, "_a")
    second, second_log = start(name, args, "_b")
    a, b = finish(first, first_log, 300), finish(second, second_log, 300)
    dirs = [re.search(r"run directory (\S+)", r.out) for r in (a, b)]
    paths = [d.group(1) if d else None for d in dirs]
    codes = rc_text(a.rc, b.rc)
    for r in (a, b):
        if TRACEBACK in r.out:
            return codes, "traceback", traceback_note(r.out)
    exports = [p is not None and (Path(p) / "export" / "config.json").is_file() for p in paths]
    checks = [(a.rc == 0 and b.rc == 0, f"exit codes {codes}: " + last_lines(a.out if a.rc else b.out, 3)),
              (None not in paths, "run directory not printed"),
              (paths[0] != paths[1], f"same run folder {paths[0]}"),
              (all(exports), f"exports present: {exports}"),
              (not lost(before, folder), lost(before, folder))]
    for ok, message in checks:
        if not ok:
            return codes, "wrong", message
    names = [Path(p).name for p in paths]
    collided = re.sub(r"_\d+$", "", names[0]) == re.sub(r"_\d+$", "", names[1])
    return codes, "clean", ("run folders: " + ", ".join(names)
                            + ("; same-second start, suffix added"
                               if collided else "; started in different seconds"))


# -- odd paths

@case("odd paths", "restore -i/-o with spaces and unicode (file)", "exit 0, output written")
def _(name):
    folder = WORK / "odd dir ü"
    photo = copy_photo(demo_photo(3), folder / "фото é 1.jpg")
    out = folder / "выход ü.png"
    result = run(name, [*RESTORE, "-q", "-i", str(photo), "-o", str(out)], timeout=120)
    verdict, note = judge_ok(result.out, result.rc, [(image_complete(out), "no output")])
    return rc_text(result.rc), verdict, note or out.name


@case("odd paths", "restore folder -> folder, spaces and unicode in all names",
      "exit 0, every output written")
def _(name):
    folder = WORK / "odd in ü"
    copy_photo(demo_photo(2), folder / "a b.jpg")
    copy_photo(demo_photo(3), folder / "ü ñ.jpg")
    out = WORK / "odd out é"
    result = run(name, [*RESTORE, "-q", "-i", str(folder), "-o", str(out) + "/"], timeout=180)
    done = [n for n in ("a b.jpg", "ü ñ.jpg") if image_complete(out / n)]
    verdict, note = judge_ok(result.out, result.rc, [(len(done) == 2, f"written: {done}")])
    return rc_text(result.rc), verdict, note or f"written: {done}"


@case("odd paths", "train with persons dir and (quoted) log dir with spaces+unicode",
      "exit 0, export in the odd log dir")
def _(name):
    persons = WORK / "odd persons é"
    target = persons / "good"
    for index in range(4):
        copy_photo(demo_photo(index), target / f"{index:03d}.jpg")
    root = WORK / "runs" / "odd runs ü"
    env = dict(ENV, GPEN_FEWSHOT_PERSONS_DIR=str(persons))
    result = run(name, [*TRAIN, *SMOKE, "person=good", f"paths.log_dir='{root}'"], env=env)
    exports = list(root.glob("good/*/export/config.json"))
    verdict, note = judge_ok(result.out, result.rc, [(bool(exports), f"no export under {root}")])
    return rc_text(result.rc), verdict, note or str(exports[0].parent.parent.relative_to(WORK))


# ------------------------------------------------------------------------------------------------------ main


def setup() -> None:
    """The valid inputs the cases derive from: a person 'good' (the demo photos) and a finished smoke run."""
    person_folder("good")
    result = run("setup", train_args("setup"))
    if result.rc != 0 or TRACEBACK in result.out:
        sys.exit(f"setup run failed (exit {result.rc}); see {log_path('setup')}")
    print(f"setup: smoke run on person 'good' ({result.seconds:.0f} s)", file=sys.stderr)


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table() -> str:
    lines = ["| category | case | expected | exit code | result | note |", "|---|---|---|---|---|---|"]
    for r in RESULTS:
        lines.append(f"| {cell(r.category)} | {cell(r.case)} | {cell(r.expected)} | {cell(r.rc)} | "
                     f"**{r.result}** | {cell(r.note)} |")
    return "\n".join(lines)


def summary() -> str:
    lines = ["| category | cases | clean | traceback | wrong |", "|---|---|---|---|---|"]
    categories = list(dict.fromkeys(r.category for r in RESULTS))
    for category in [*categories, None]:
        rows = [r for r in RESULTS if category is None or r.category == category]
        counts = [sum(r.result == kind for r in rows) for kind in ("clean", "traceback", "wrong")]
        label = "**total**" if category is None else category
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def repo_state() -> tuple[str, list[str]]:
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--",
                             "data", "outputs"], cwd=REPO, capture_output=True, text=True).stdout
    outputs = sorted(p.name for p in (REPO / "outputs").iterdir()) if (REPO / "outputs").is_dir() else []
    return status, outputs


def main() -> int:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/matrix"), help="scratch folder (wiped first)")
    parser.add_argument("--only", default=None,
                        help="run only the cases whose category or name matches this regex")
    args = parser.parse_args()
    WORK = args.work.resolve()
    if WORK == REPO or REPO in WORK.parents:
        parser.error("--work must be outside the repository")
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "logs").mkdir(parents=True)
    ENV.update(os.environ)
    ENV.pop("HYDRA_FULL_ERROR", None)
    ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GPEN_FEWSHOT_PERSONS_DIR=str(WORK / "persons"),
               WANDB_MODE="offline", PYTHONIOENCODING="utf-8")
    repo_before = repo_state()
    started = time.monotonic()
    setup()
    for index, (category, name, expected, function) in enumerate(CASES):
        if args.only and not re.search(args.only, f"{category} {name}"):
            continue
        case_id = f"{index:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', name)[:40].strip('_')}"
        case_start = time.monotonic()
        try:
            rc, result, note = function(case_id)
        except Exception as error:  # a failure of the matrix itself, not of the product
            rc, result, note = "-", "script-error", f"{type(error).__name__}: {error}"
        seconds = time.monotonic() - case_start
        RESULTS.append(Result(category, name, expected, rc, result, note, seconds))
        print(f"[{time.monotonic() - started:6.0f} s] {category} / {name}: {result} (exit {rc}, "
              f"{seconds:.0f} s)", file=sys.stderr)
    total = time.monotonic() - started
    print(f"## Bad-input / fault matrix (issue 15)\n\n{summary()}\n\n{table()}\n")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout
    print(f"total run time: {total:.0f} s ({len(RESULTS)} cases + setup) at commit {head.strip() or '?'}; "
          f"logs: {WORK / 'logs'}")
    repo_after = repo_state()
    if repo_after != repo_before:
        print(f"WARNING: the repository's data/ or outputs/ changed during the matrix: {repo_before} -> "
              f"{repo_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
