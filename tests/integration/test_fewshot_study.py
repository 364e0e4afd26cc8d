"""scripts/fewshot_study.py: the aggregation (hand-made metrics.json dicts) and a tiny study end to end.

The end-to-end test builds a persons root from the bundled photos (two usable persons, one with too few
photos, one other identity for specificity), trains the 32-px tiny model from a tiny "prior" for 2 iterations
per person with ``train.py`` and evaluates it with ``evaluate.py``, then re-runs the study to check it
resumes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.evaluation.study import (
    OTHERS_SET,
    PERSON_SET,
    SPECIFICITY_METRICS,
    STUDY_METRICS,
    StudyError,
    person_rows,
    study_markdown,
    summarize,
    write_study,
)
from gpen_fewshot.utils.image import read_image, write_image

REPO = Path(__file__).resolve().parents[2]
FACES = REPO / "tests" / "fixtures"
LEVELS = ("moderate", "severe")


# ---------------------------------------------------------------------------------------- aggregation
def _metrics_json(psnr: tuple[float, float], sim: tuple[float, float], others: bool = True) -> dict:
    """A metrics.json as evaluate.py writes it: (base, tuned) values; the other metrics derived from them."""
    def values(p: float, s: float) -> dict:
        return {"psnr": p, "ssim": p / 100, "id_similarity_gt": s, "id_verified_gt": 1.0 if s > 0.5 else 0.0,
                "id_verified_ref": {"unavailable": "identity: switched off"}, "lpips": 0.3,
                "id_distance_gt": 1 - s, "id_distance_ref": 2 - s}

    results = {PERSON_SET: {"input": {lv: values(1.0, 0.1) for lv in LEVELS},
                            "base": {lv: values(psnr[0] + i, sim[0]) for i, lv in enumerate(LEVELS)},
                            "run": {lv: values(psnr[1] + i, sim[1]) for i, lv in enumerate(LEVELS)}}}
    if others:
        results[OTHERS_SET] = {"base": {lv: values(10.0, 0.4) for lv in LEVELS},
                               "run": {lv: values(10.0, sim[1] - 0.5) for lv in LEVELS}}
    models = [{"name": "input", "role": "input"}, {"name": "base", "role": "base"},
              {"name": "run", "role": "tuned"}]
    return {"models": models, "levels": list(LEVELS), "results": results}


def test_rows_and_mean_std_over_persons(tmp_path: Path) -> None:
    rows = (person_rows(_metrics_json((20.0, 23.0), (0.4, 0.7)), "p1")
            + person_rows(_metrics_json((22.0, 24.0), (0.6, 0.65)), "p2")
            + person_rows(_metrics_json((21.0, 20.0), (0.5, 0.8), others=False), "p3"))
    assert len(rows) == 2 * len(LEVELS) * (len(STUDY_METRICS) + len(SPECIFICITY_METRICS)) + len(LEVELS) * len(
        STUDY_METRICS)
    severe = {r.person: r for r in rows if r.metric == "psnr" and r.level == "severe"}
    assert (severe["p1"].base, severe["p1"].tuned, severe["p1"].delta) == (21.0, 24.0, 3.0)
    assert severe["p3"].delta == -1.0
    unavailable = [r for r in rows if r.metric == "id_verified_ref"]
    assert unavailable and all(r.base is None and r.tuned is None and r.delta is None for r in unavailable)

    summary = {(s.set, s.level, s.metric): s for s in summarize(rows)}
    psnr = summary[(PERSON_SET, "moderate", "psnr")]
    assert (psnr.base.n, psnr.base.mean, psnr.tuned.mean) == (3, pytest.approx(21.0), pytest.approx(67 / 3))
    assert (psnr.delta.mean == pytest.approx(4 / 3) and
            psnr.delta.std == pytest.approx(statistics.stdev([3, 2, -1])))
    sim = summary[(PERSON_SET, "severe", "id_similarity_gt")]
    assert sim.delta.mean == pytest.approx(np.mean([0.3, 0.05, 0.3]))
    assert sim.base.std == pytest.approx(np.std([0.4, 0.6, 0.5], ddof=1))
    assert summary[(PERSON_SET, "moderate", "id_verified_ref")].base.n == 0  # unavailable: not averaged as 0
    spec = summary[(OTHERS_SET, "moderate", "id_distance_gt")]  # only p1 and p2 had other identities
    assert spec.delta.n == 2 and spec.delta.mean == pytest.approx(np.mean([0.8 - 0.6, 0.85 - 0.6]))
    one = summarize(rows[:1])[0]
    assert one.base.n == 1 and one.base.std is None  # no spread from one person

    outcomes = [{"name": n, "status": "ok", "train_wall_s": w,
                 "rows": [r.to_dict() for r in rows if r.person == n]}
                for n, w in (("p1", 10.0), ("p2", 14.0), ("p3", 12.0))] + [
        {"name": "p4", "status": "failed", "reason": "2 usable photo(s), need 6"}]
    settings = {"levels": list(LEVELS), "train_photos": 5}
    paths = write_study(tmp_path, settings, outcomes)
    data = json.loads(paths["study.json"].read_text())
    assert len(data["rows"]) == len(rows) and data["train_wall_s"] == {"n": 3, "mean": 12.0, "std": 2.0}
    assert [p["status"] for p in data["persons"]] == ["ok", "ok", "ok", "failed"]
    text = paths["study.md"].read_text()
    assert text == study_markdown(settings, outcomes, rows, summarize(rows))
    p1_severe = next(line for line in text.splitlines() if line.startswith("| p1 | severe | "))
    assert (p1_severe.startswith("| p1 | severe | 0.400 → 0.700 (+0.300) | ") and
            "| 21.00 → 24.00 (+3.00) |" in p1_severe)
    mean_moderate = next(line for line in text.splitlines()
                         if line.startswith("| **mean ± std** (n=3) | moderate |"))
    assert "| 21.00 ± 1.00 → 22.33 ± 2.08 (Δ +1.33 ± 2.08) |" in mean_moderate
    assert "12.0 ± 2.0 s" in text and "| p4 | failed |" in text and "need 6" in text
    lines = list(csv.DictReader(io.StringIO(paths["study.csv"].read_text())))
    mean_row = next(r for r in lines
                    if r["person"] == "mean" and r["metric"] == "psnr" and r["level"] == "moderate")
    assert float(mean_row["delta"]) == pytest.approx(4 / 3)


def test_unusable_metrics_json_is_one_clear_error() -> None:
    data = _metrics_json((20.0, 21.0), (0.5, 0.6))
    data["models"] = data["models"][:2]
    with pytest.raises(StudyError, match=r"x\.json: expected one base and one tuned model"):
        person_rows(data, "p", source="x.json")
    with pytest.raises(StudyError, match="level 'mild' missing"):
        person_rows(_metrics_json((20.0, 21.0), (0.5, 0.6)), "p", levels=["mild"])


# ----------------------------------------------------------------------------------------- end to end
def _persons_root(root: Path) -> Path:
    """alice: the 4 demo photos; bob: the same mirrored; carol: 2 photos (too few); dave: other identity."""
    demo = sorted((REPO / "data" / "demo" / "person_obama").glob("*.jpg"))
    for photo in demo:
        (root / "alice").mkdir(parents=True, exist_ok=True)
        (root / "alice" / photo.name).write_bytes(photo.read_bytes())
        write_image(root / "bob" / f"{photo.stem}.png", np.ascontiguousarray(read_image(photo)[:, ::-1]))
    for name in ("celeba_7233_001.jpg", "celeba_7233_008.jpg"):
        (root / "carol").mkdir(parents=True, exist_ok=True)
        (root / "carol" / name).write_bytes((FACES / "identity" / name).read_bytes())
    (root / "dave").mkdir()
    (root / "dave" / "0.jpg").write_bytes((FACES / "identity" / "celeba_7222_005.jpg").read_bytes())
    return root


def _tiny_prior(path: Path) -> Path:
    from gpen_fewshot.archs import GPENGenerator

    torch.manual_seed(0)
    torch.save(GPENGenerator(32, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125).state_dict(),
               path)
    return path


def _run_study(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "fewshot_study.py"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_missing_prior_stops_before_any_training(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """model.init=auto would silently train from random weights: the study refuses, naming the file."""
    root = tmp_path / "persons_root"
    (root / "alice").mkdir(parents=True)
    missing = tmp_path / "no_prior.pth"
    proc = _run_study(["--persons-root", str(root), "--out", str(tmp_path / "study"),
                       f"--train-override=model.generator_weights={missing}"], subprocess_env)
    assert proc.returncode == 1
    assert f"error: the prior '{missing}' is not available" in proc.stderr and "random weights" in proc.stderr
    assert not (tmp_path / "study").exists()


@pytest.mark.subprocess
def test_study_end_to_end_and_resume(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    root = _persons_root(tmp_path / "persons_root")
    out = tmp_path / "study"
    train = ["model=tiny", f"model.generator_weights={_tiny_prior(tmp_path / 'prior.pth')}",
             "model.init=pretrained", "logger=csv", "iterations=2", "val_every=2", "num_sample_images=2",
             "validate_before_training=false", "data.num_workers=0", "data.samples_per_epoch=4",
             "data.val_copies=1", "data.val_degradations=[severe]",
             "callbacks.checkpoint.every_n_iters=2", "trainer.enable_model_summary=false"]
    evaluate = ["metrics.lpips=false", "metrics.fid=false", "metrics.niqe=false", "protocol.copies=1",
                "save_inputs=false", "device=cpu"]
    args = ["--persons-root", str(root), "--persons", "3", "--train-photos", "2", "--others-count", "1",
            "--out", str(out), *[f"--train-override={o}" for o in train],
            *[f"--eval-override={o}" for o in evaluate]]
    proc = _run_study(args, subprocess_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| **mean ± std** (n=2) | severe |" in proc.stdout  # the table is printed

    data = json.loads((out / "study.json").read_text())
    persons = {p["name"]: p for p in data["persons"]}
    assert [persons[n]["status"] for n in ("alice", "bob", "carol")] == ["ok", "ok", "failed"]
    assert "2 usable photo(s), need 3" in persons["carol"]["reason"]
    for name in ("alice", "bob"):
        assert (persons[name]["usable_photos"], persons[name]["train_photos"],
                persons[name]["holdout_photos"]) == (4, 2, 2)
        assert persons[name]["train_wall_s"] > 0 and persons[name]["eval_wall_s"] > 0
    assert data["settings"]["others"] == ["dave"] and data["settings"]["levels"] == list(LEVELS)
    expected = {(p, PERSON_SET, lv, m) for p in ("alice", "bob") for lv in LEVELS for m in STUDY_METRICS}
    expected |= {(p, OTHERS_SET, lv, m) for p in ("alice", "bob") for lv in LEVELS
                 for m in SPECIFICITY_METRICS}
    assert {(r["person"], r["set"], r["level"], r["metric"]) for r in data["rows"]} == expected
    for row in data["rows"]:
        # dlib ran, nothing missing
        assert isinstance(row["base"], float) and isinstance(row["tuned"], float), row
        assert math.isfinite(row["base"]) and math.isfinite(row["tuned"]), row
        assert row["delta"] == pytest.approx(row["tuned"] - row["base"])
    psnr = [r for r in data["rows"] if r["metric"] == "psnr"]
    # the run changed the model
    assert all(5 < r["base"] < 60 for r in psnr) and any(r["delta"] != 0 for r in psnr)
    summary = {(s["set"], s["level"], s["metric"]): s for s in data["summary"]}
    for (set_name, level, metric), agg in summary.items():
        values = [r["delta"] for r in data["rows"]
                  if (r["set"], r["level"], r["metric"]) == (set_name, level, metric)]
        assert agg["n"] == 2 and agg["delta_mean"] == pytest.approx(np.mean(values))
        assert agg["delta_std"] == pytest.approx(np.std(values, ddof=1))
    assert (out / "persons" / "alice" / "eval" / "report.md").is_file() and (out / "study.csv").is_file()
    # registered in the study, not the repo
    assert (out / "registry" / "alice" / "weights" / "person.json").is_file()

    export = out / "persons" / "bob" / "run" / "export" / "person.json"
    stamp = export.stat().st_mtime_ns
    again = _run_study(args, subprocess_env)  # resume: nothing is trained or evaluated again
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished earlier: skipped") == 2 and "training (" not in again.stdout
    assert export.stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["rows"] == data["rows"]
