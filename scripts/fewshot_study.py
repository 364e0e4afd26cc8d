"""Does few-shot personalisation on this prior work? Train and evaluate one model per person, then tabulate.

    python scripts/fewshot_study.py --persons-root /data/persons --out studies/prior_v1 \\
        --train-override model.generator_weights=/runs/prior_v1/export
    python scripts/fewshot_study.py --persons-root /data/persons --names alice,bob --train-photos 3 --out s2

For each person (the first ``--persons`` folders of ``--persons-root`` in sorted order, or ``--names``):

1. vet the photos once (``prepare_person``) to learn how many are usable; ``--train-photos`` of them train and
   every other usable photo is held out (``holdout = usable - train_photos``, passed to both scripts);
2. ``python train.py person=<name>``: the default training run, with overrides only for paths (the person's
   folder, the run and cache folders inside ``--out``, registration of the export under ``--out/registry``)
   and the holdout, plus any ``--train-override``; its wall time is measured;
3. ``python evaluate.py`` on that run: base vs tuned on the held-out photos at ``--levels``, and on
   ``--others-count`` other identities of ``--persons-root`` (specificity), plus any ``--eval-override``.

Then study.md / study.json / study.csv in ``--out``: per person x level base → tuned (Δ) of the identity
similarity to the ground truth, the verified fractions, PSNR and SSIM, the specificity rows, and mean ± std
over persons (``gpen_fewshot.evaluation.study``). A person that fails (too few usable photos, a failed run) is
recorded with the reason and the study goes on. Re-running with the same ``--out`` resumes: persons whose
training and evaluation finished with the same settings are skipped, a finished training is not repeated.
Per person everything lives in ``--out/persons/<name>/`` (run/, eval/, train.log, eval.log, result.json).

Why one file over 400 lines: the study's orchestration (vetting, one training and one evaluation subprocess
per person, resumption) is one sequence; its tables live in ``gpen_fewshot.evaluation.study``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.cli.resolvers import register_resolvers
from gpen_fewshot.evaluation.study import StudyError, merge_studies, person_rows, write_study
from gpen_fewshot.utils.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


class StepError(RuntimeError):
    """A training or evaluation subprocess failed (the message holds its error line and log file)."""


@dataclass(frozen=True)
class TrainSettings:
    """What the study needs to know of the composed training config."""

    size: int
    template: str
    min_photos: int
    generator_weights: str | None
    init: str
    download: bool


@dataclass(frozen=True)
class Study:
    """The resolved study: where things are and how every person is trained and evaluated."""

    root: Path
    out: Path
    persons: tuple[str, ...]
    others: tuple[Path, ...]
    train_photos: int
    levels: tuple[str, ...]
    train_overrides: tuple[str, ...]
    eval_overrides: tuple[str, ...]
    train: TrainSettings

    def settings(self) -> dict[str, Any]:
        """The settings stored in study.json and shown in study.md."""
        return {"persons_root": str(self.root), "persons": list(self.persons),
                "train_photos": self.train_photos, "levels": list(self.levels),
                "others": [p.name for p in self.others], "train_overrides": list(self.train_overrides),
                "eval_overrides": list(self.eval_overrides), "model_size": self.train.size,
                "template": self.train.template, "prior": self.train.generator_weights}


# --------------------------------------------------------------------------------------------- set-up
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons-root", type=Path, default=None,
                        help="folder of person folders (read-only is fine); default "
                             "$GPEN_FEWSHOT_PERSONS_DIR or data/persons")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--persons", type=int, default=5, help="study the first N person folders (sorted names)")
    who.add_argument("--names", default=None, help="comma-separated person folder names instead of --persons")
    parser.add_argument("--train-photos", type=int, default=5, help="photos per person used for training; "
                        "all other usable photos are held out")
    parser.add_argument("--levels", default="moderate,severe", help="comma-separated degradation presets")
    parser.add_argument("--others-count", type=int, default=3,
                        help="other identities of --persons-root for the specificity check (0 = none)")
    parser.add_argument("--out", type=Path, required=True, help="study folder (resumed when it exists)")
    parser.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Hydra override of train.py (repeatable)")
    parser.add_argument("--eval-override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Hydra override of evaluate.py (repeatable)")
    parser.add_argument("--merge", action="append", default=[], type=Path, metavar="STUDY_DIR",
                        help="no training: write one table in --out from finished studies of the same recipe "
                             "(persons split over parallel runs); repeatable")
    return parser.parse_args(argv)


def _check_overrides(overrides: Sequence[str], flag: str) -> tuple[str, ...]:
    for item in overrides:
        if "=" not in item:
            raise StudyError(f"{flag} {item!r}: expected KEY=VALUE (a Hydra override)")
    return tuple(overrides)


def _person_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise StudyError(f"--persons-root {root}: not a folder")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def select_persons(root: Path, count: int, names: str | None) -> tuple[str, ...]:
    """The studied person folder names: ``names`` (each must exist) or the first ``count`` sorted folders."""
    folders = _person_folders(root)
    if names is not None:
        chosen = [n.strip() for n in names.split(",") if n.strip()]
        missing = [n for n in chosen if n not in folders]
        if missing or not chosen:
            raise StudyError(f"--names: no folder {missing or names!r} in {root}")
        return tuple(dict.fromkeys(chosen))
    if count < 1 or not folders:
        raise StudyError(f"--persons {count}: need at least 1 person folder ({root} has {len(folders)})")
    return tuple(folders[:count])


def select_others(root: Path, studied: Sequence[str], count: int) -> tuple[Path, ...]:
    """``count`` other identities with photos: the folders after the last studied one (sorted), then the
    rest."""
    from gpen_fewshot.utils.image import list_images

    last = max(studied)
    rest = [n for n in _person_folders(root) if n not in studied and list_images(root / n)]
    ordered = [n for n in rest if n > last] + [n for n in rest if n < last]
    return tuple(root / n for n in ordered[:max(count, 0)])


def compose_train_settings(overrides: Sequence[str]) -> TrainSettings:
    """Compose ``configs/train.yaml`` with the overrides, exactly as train.py will, and read what the study
    needs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()  # the configs' ${...} resolvers, as train.py registers them

    os.environ.setdefault("GPEN_FEWSHOT_ROOT", str(REPO))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
    except Exception as error:  # Hydra's own errors say what is wrong with the override
        raise StudyError(f"--train-override: {error}") from None
    finally:
        GlobalHydra.instance().clear()
    model, data = cfg.model, cfg.data
    return TrainSettings(int(data.get("size", model.size)), str(data.get("template", "gpen")),
                         int(data.get("min_photos") or 3), model.get("generator_weights"),
                         str(model.get("init", "auto")), bool(model.get("download", True)))


def check_prior(train: TrainSettings, eval_overrides: Sequence[str]) -> None:
    """Fail before any training when there is no prior to compare with (the study would be meaningless).

    Raises:
        StudyError: random initialisation, or prior weights that are not available (``model.init=auto``
            would silently fall back to random weights).
    """
    from gpen_fewshot.training.networks import locate_weights

    if any(o.split("=", 1)[0].lstrip("+~") == "base" for o in eval_overrides):
        return  # the user names the base model explicitly
    hint = "pass --train-override model.generator_weights=PATH (or --eval-override base=PATH)"
    if train.init == "random" or not train.generator_weights:
        raise StudyError(f"the training config starts from random weights (model.init={train.init}, "
                         f"model.generator_weights={train.generator_weights}): there is no prior to compare; "
                         f"{hint}")
    try:
        locate_weights(str(train.generator_weights), train.download)
    except (FileNotFoundError, KeyError) as error:
        raise StudyError(f"the prior {train.generator_weights!r} is not available, so train.py would start "
                         f"from random weights: {str(error).splitlines()[0]}; {hint}") from None


def build_study(args: argparse.Namespace) -> Study:
    """Validate the arguments and resolve persons, others and the training settings."""
    from gpen_fewshot.data.degradations import PRESETS
    from gpen_fewshot.persons import persons_root

    root = (args.persons_root or persons_root()).expanduser().resolve()
    levels = tuple(lv.strip() for lv in args.levels.split(",") if lv.strip())
    unknown = [lv for lv in levels if lv not in PRESETS]
    if unknown or not levels:
        raise StudyError(f"--levels {args.levels!r}: unknown {unknown}; choose from {sorted(PRESETS)}")
    if args.train_photos < 1:
        raise StudyError(f"--train-photos must be >= 1, got {args.train_photos}")
    persons = select_persons(root, args.persons, args.names)
    train_overrides = _check_overrides(args.train_override, "--train-override")
    eval_overrides = _check_overrides(args.eval_override, "--eval-override")
    train = compose_train_settings(train_overrides)
    check_prior(train, eval_overrides)
    return Study(root, args.out.expanduser().resolve(), persons,
                 select_others(root, persons, args.others_count),
                 args.train_photos, levels, train_overrides, eval_overrides, train)


# ------------------------------------------------------------------------------------------ one person
def _quote(value: Path | str) -> str:
    """A path as a quoted Hydra override value (commas, spaces and brackets stay literal)."""
    text = str(value)
    if "'" in text or "\\" in text:
        raise StudyError(f"{text}: paths with quotes or backslashes cannot be passed to Hydra")
    return f"'{text}'"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _error_summary(log_path: Path) -> str:
    """The subprocess's ``error: ...`` line, else its last non-empty lines."""
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "Error:" in ln]
    return (errors[-1] if errors else " / ".join(lines[-3:]))[:600]


def run_step(cmd: Sequence[str], log_path: Path, what: str) -> float:
    """Run a subprocess with its output in ``log_path``; returns its wall time in seconds.

    Raises:
        StepError: non-zero exit status (message: the error line and the log file).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        code = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise StepError(f"{what} failed (exit {code}): {_error_summary(log_path)} (log: {log_path})")
    return wall


def count_usable(person_dir: Path, train: TrainSettings, cache_dir: Path) -> tuple[int, Path]:
    """Usable photos of a person under the training crop size/template, and the manifest with every
    decision."""
    from gpen_fewshot.data.person import NotEnoughPhotosError, prepare_person

    try:
        prepared = prepare_person(person_dir, size=train.size, template=train.template, cache_dir=cache_dir,
                                  holdout=0, min_photos=1)
        records, manifest = prepared.records, prepared.manifest_path
    except NotEnoughPhotosError as error:
        records, manifest = error.records, (error.root or cache_dir) / "manifest.json"
    return sum(r.decision == "used" for r in records), manifest


def _keys(study: Study, name: str) -> tuple[dict, dict]:
    """What a finished training / evaluation of ``name`` depends on (a resume reuses it only when equal)."""
    train = {"person_dir": str(study.root / name), "train_photos": study.train_photos,
             "train_overrides": list(study.train_overrides)}
    return train, {**train, "levels": list(study.levels), "others": [str(p) for p in study.others],
                   "eval_overrides": list(study.eval_overrides)}


def train_person(study: Study, name: str, work: Path, holdout: int) -> float:
    """``train.py`` for one person (reused when it finished earlier with the same settings); wall time in
    s."""
    run_dir, marker = work / "run", work / "train.json"
    key = {**_keys(study, name)[0], "holdout": holdout}
    record = _read_json(marker)
    if record and record.get("key") == key and (run_dir / "export" / "person.json").is_file():
        print(f"  training finished earlier ({record['wall_s']:.1f} s): {run_dir}")
        return float(record["wall_s"])
    if run_dir.exists():  # interrupted or outdated: start over, so the wall time is that of one whole run
        shutil.rmtree(run_dir)
    cmd = [sys.executable, str(REPO / "train.py"), f"person={name}",
           f"person_dir={_quote(study.root / name)}", f"data.holdout={holdout}",
           f"data.cache_dir={_quote(work / 'prepared')}",
           f"hydra.run.dir={_quote(run_dir)}", f"paths.persons_dir={_quote(study.out / 'registry')}",
           *study.train_overrides]
    print(f"  training ({work / 'train.log'}) ...", flush=True)
    wall = run_step(cmd, work / "train.log", "train.py")
    if not (run_dir / "export" / "person.json").is_file():
        raise StepError(f"train.py exited without a person export in {run_dir / 'export'} (log: "
                        f"{work / 'train.log'})")
    atomic_write_json(marker, {"key": key, "wall_s": wall, "command": cmd})
    print(f"  trained in {wall:.1f} s")
    return wall


def evaluate_person(study: Study, name: str, work: Path, holdout: int) -> float:
    """``evaluate.py`` on the person's run (base vs tuned, held-out photos and others); wall time in s."""
    eval_dir = work / "eval"
    if eval_dir.exists():  # leftovers of an interrupted evaluation
        shutil.rmtree(eval_dir)
    others = "[" + ",".join(_quote(p) for p in study.others) + "]" if study.others else "null"
    cmd = [sys.executable, str(REPO / "evaluate.py"), f"person={name}",
           f"person_dir={_quote(study.root / name)}", f"ckpt={_quote(work / 'run')}",
           f"out_dir={_quote(eval_dir)}", f"holdout={holdout}",
           f"cache_dir={_quote(work / 'prepared')}", f"protocol.levels=[{','.join(study.levels)}]",
           f"others={others}", "progress=false", *study.eval_overrides]
    print(f"  evaluating ({work / 'eval.log'}) ...", flush=True)
    wall = run_step(cmd, work / "eval.log", "evaluate.py")
    print(f"  evaluated in {wall:.1f} s")
    return wall


def _split_counts(study: Study, name: str, work: Path, holdout: int) -> tuple[int, int]:
    """Training / held-out photos as the run used them (its cached preparation)."""
    from gpen_fewshot.data.person import prepare_person

    prepared = prepare_person(study.root / name, size=study.train.size, template=study.train.template,
                              cache_dir=work / "prepared", holdout=holdout, min_photos=study.train.min_photos)
    return len(prepared.train_crops), len(prepared.holdout_crops)


def _measure(study: Study, name: str, work: Path, outcome: dict) -> None:
    """Vet, train, evaluate and read the metrics into ``outcome`` (raises on any failure)."""
    from gpen_fewshot.evaluation.report import read_json
    from gpen_fewshot.persons import validate_person_name

    validate_person_name(name)
    usable, manifest = count_usable(study.root / name, study.train, work / "vetting")
    need = max(study.train_photos + 1, study.train.min_photos)
    outcome["usable_photos"] = usable
    if usable < need:
        raise StudyError(f"{usable} usable photo(s), need {need} ({study.train_photos} to train + at least 1 "
                         f"held out); every photo's decision: {manifest}")
    holdout = usable - study.train_photos
    print(f"  {usable} usable photos: {study.train_photos} train, {holdout} held out")
    outcome["train_wall_s"] = train_person(study, name, work, holdout)
    outcome["eval_wall_s"] = evaluate_person(study, name, work, holdout)
    outcome["train_photos"], outcome["holdout_photos"] = _split_counts(study, name, work, holdout)
    metrics_path = work / "eval" / "metrics.json"
    outcome["rows"] = [r.to_dict() for r in person_rows(read_json(metrics_path), name, study.levels,
                                                          source=str(metrics_path))]


def study_person(study: Study, name: str) -> dict[str, Any]:
    """One person's outcome (``status`` ok or failed with the reason); written to
    ``persons/<name>/result.json``."""
    work = study.out / "persons" / name
    key = _keys(study, name)[1]
    done = _read_json(work / "result.json")
    if done and done.get("status") == "ok" and done.get("key") == key:
        print("  finished earlier: skipped")
        return done
    outcome: dict[str, Any] = {"name": name, "status": "failed", "reason": "", "key": key,
                               "run_dir": str(work / "run"), "eval_dir": str(work / "eval")}
    try:
        _measure(study, name, work, outcome)
        outcome["status"] = "ok"
    except Exception as error:  # one person's failure must not end a study of many; the reason is recorded
        if not isinstance(error, (StudyError, StepError, ValueError, FileNotFoundError)):
            traceback.print_exc()
        outcome["reason"] = f"{type(error).__name__}: {error}"
        print(f"  FAILED: {outcome['reason']}")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "result.json", outcome)
    return outcome


def merge_main(study_dirs: Sequence[Path], out: Path) -> int:
    """``--merge``: one study.md / .json / .csv in ``out`` from finished studies."""
    try:
        settings, outcomes = merge_studies(study_dirs)
    except StudyError as error:
        return user_error(error, 1)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_study(out, settings, outcomes)
    print(paths["study.md"].read_text(encoding="utf-8"))
    print(f"Written: {', '.join(str(p) for p in paths.values())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; exit status 0 when at least one person finished, 1 otherwise."""
    args = parse_args(argv)
    if args.merge:
        return merge_main(args.merge, args.out)
    try:
        study = build_study(args)
    except StudyError as error:
        return user_error(error, 1)
    study.out.mkdir(parents=True, exist_ok=True)
    print(f"Study of {len(study.persons)} person(s) from {study.root} into {study.out}; specificity on "
          f"{[p.name for p in study.others] or 'nobody'}")
    outcomes: list[dict[str, Any]] = []
    for index, name in enumerate(study.persons, start=1):
        print(f"[{index}/{len(study.persons)}] {name}", flush=True)
        outcomes.append(study_person(study, name))
        paths = write_study(study.out, study.settings(), outcomes)  # partial tables survive an interruption
    print("\n" + paths["study.md"].read_text(encoding="utf-8"))
    print(f"Written: {', '.join(str(p) for p in paths.values())}")
    if not any(o["status"] == "ok" for o in outcomes):
        return user_error("no person finished (see the reasons above)", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
