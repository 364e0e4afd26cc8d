"""scripts/fewshot_study.py --merge (gpen_fewshot.evaluation.study.merge_studies): studies of one recipe whose
persons ran in parallel processes become one table; different recipes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpen_fewshot.evaluation.study import StudyError, merge_studies, write_study
from gpen_fewshot.utils.atomic import atomic_write_json

SETTINGS = {"persons_root": "/p", "train_photos": 5, "levels": ["severe"], "train_overrides": ["a=1"],
            "eval_overrides": [], "model_size": 256, "template": "gpen", "prior": "gpen-compact-256"}


def _study(folder: Path, persons: dict[str, tuple[float, float]], others: list[str], **changes) -> Path:
    outcomes = []
    for name, (base, tuned) in persons.items():
        row = {"person": name, "set": "person", "level": "severe", "metric": "id_similarity_gt",
               "base": base, "tuned": tuned, "delta": tuned - base}
        outcome = {"name": name, "status": "ok", "reason": "", "train_wall_s": 200.0, "rows": [row]}
        atomic_write_json(folder / "persons" / name / "result.json", outcome)
        outcomes.append(outcome)
    write_study(folder, {**SETTINGS, **changes, "persons": list(persons), "others": others}, outcomes)
    return folder


def test_two_halves_make_one_table(tmp_path: Path) -> None:
    a = _study(tmp_path / "a", {"p1": (0.40, 0.42), "p2": (0.50, 0.50)}, ["o1"])
    b = _study(tmp_path / "b", {"p3": (0.30, 0.36)}, ["o2"])
    settings, outcomes = merge_studies([a, b])
    assert settings["persons"] == ["p1", "p2", "p3"] and settings["others"] == ["o1", "o2"]
    assert [o["name"] for o in outcomes] == ["p1", "p2", "p3"]
    text = write_study(tmp_path / "all", settings, outcomes)["study.md"].read_text(encoding="utf-8")
    assert "persons: 3 finished of 3" in text and "(Δ +0.027 ± 0.031)" in text  # mean of +0.02, 0, +0.06


def test_different_recipes_or_a_repeated_person_are_refused(tmp_path: Path) -> None:
    a = _study(tmp_path / "a", {"p1": (0.4, 0.4)}, [])
    other = _study(tmp_path / "b", {"p2": (0.4, 0.4)}, [], train_overrides=["a=2"])
    with pytest.raises(StudyError, match="train_overrides"):
        merge_studies([a, other])
    with pytest.raises(StudyError, match="'p1' is in two"):
        merge_studies([a, _study(tmp_path / "c", {"p1": (0.4, 0.4)}, [])])
    with pytest.raises(StudyError, match="not a finished study"):
        merge_studies([a, tmp_path / "missing"])


def test_headline_table_puts_the_input_beside_base_and_tuned(tmp_path: Path) -> None:
    from gpen_fewshot.evaluation.study_results import input_table, study_person_metrics

    def level(psnr: float, sim: float) -> dict:
        return {"psnr": psnr, "id_similarity_gt": sim, "mfn_similarity_gt": sim + 0.1, "id_verified_ref": 0.5}

    for name, tuned_psnr in (("p1", 25.0), ("p2", 27.0)):
        metrics = {"results": {"person": {"input": {"severe": level(20.0, 0.40)},
                                          "base": {"severe": level(24.0, 0.45)},
                                          "run": {"severe": level(tuned_psnr, 0.47)}}}}
        atomic_write_json(tmp_path / "s" / "persons" / name / "eval" / "metrics.json", metrics)
    atomic_write_json(tmp_path / "s" / "study.json", {"settings": {}})
    text = input_table(study_person_metrics([tmp_path / "s"]))
    assert "| severe | PSNR dB | 20.00 | 24.00 | 26.00 | +2.00 ± 1.00 |" in text  # tuned - base: +1, +3
    assert "| severe | ID sim GT (dlib) | 0.400 | 0.450 | 0.470 | +0.020 ± 0.000 |" in text


def test_routing_table_reads_evaluation_folders_and_reports_own_and_others_shares(tmp_path: Path) -> None:
    from gpen_fewshot.evaluation.study_results import (
        evaluation_results,
        has_base_and_tuned,
        has_routing,
        routing_table,
    )

    def evaluation(own: float, others: float) -> dict:
        person = {"input": {"severe": {"id_verified_ref": own}},
                  "tuned": {"severe": {"id_verified_ref": 0.9}}}
        return {"results": {"person": person, "others": {"input": {"severe": {"id_verified_ref": others}}}}}

    atomic_write_json(tmp_path / "e1" / "metrics.json", evaluation(0.50, 0.00))
    atomic_write_json(tmp_path / "e2" / "metrics.json", evaluation(0.30, 0.10))
    results = evaluation_results([tmp_path / "e1", tmp_path / "e2", tmp_path / "empty"])
    assert len(results) == 2 and has_routing(results)
    assert not has_base_and_tuned([r["person"] for r in results])  # no base row: no headline table
    assert "| severe | 0.400 ± 0.100 | 0.050 ± 0.050 | 0.100 | 2 |" in routing_table(results)
    unscored = evaluation(0.5, 0.0)["results"]
    unscored["others"]["input"]["severe"]["id_verified_ref"] = {"unavailable": "no dlib"}
    assert not has_routing([unscored])


def test_a_corrupt_metrics_file_is_named_in_the_error(tmp_path: Path) -> None:
    from gpen_fewshot.evaluation.study_results import evaluation_results

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "metrics.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"e/metrics.json: not an evaluate.py metrics.json"):
        evaluation_results([tmp_path / "e"])
