"""Evaluation report: best-value marking, deltas vs base, ranking, specificity flags, csv/json round trip,
grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gpen_fewshot.evaluation.grids import labelled_grid
from gpen_fewshot.evaluation.report import (
    ReportSettings,
    csv_text,
    read_csv,
    read_json,
    results_from_json,
    results_to_json,
    write_report,
)
from gpen_fewshot.evaluation.runner import EvalResults, ModelInfo
from gpen_fewshot.evaluation.tables import (
    TableContext,
    best_models,
    context_from_models,
    delta,
    format_cell,
    level_mean,
    level_table,
    ranking,
    specificity_flags,
)
from gpen_fewshot.evaluation.values import Unavailable
from gpen_fewshot.utils.image import read_image

LEVELS = ["mild", "severe"]
NO_LPIPS = Unavailable("lpips: needs alexnet-owt-7be5be79.pth in /x (download https://y)")


def _table() -> dict:
    """Hand-made person table: tuned_a wins PSNR at mild, tuned_b at severe; input is best but never
    marked."""
    return {
        "input": {"mild": {"psnr": 40.0, "lpips": NO_LPIPS, "id_distance_ref": 0.10, "fid_num_images": 4},
                  "severe": {"psnr": 30.0, "lpips": NO_LPIPS, "id_distance_ref": 0.20, "fid_num_images": 4}},
        "base": {"mild": {"psnr": 25.0, "lpips": NO_LPIPS, "id_distance_ref": 0.50, "fid_num_images": 4},
                 "severe": {"psnr": 20.0, "lpips": NO_LPIPS, "id_distance_ref": 0.60, "fid_num_images": 4}},
        "tuned_a": {"mild": {"psnr": 27.5, "lpips": NO_LPIPS, "id_distance_ref": 0.40, "fid_num_images": 4},
                    "severe": {"psnr": 21.0, "lpips": NO_LPIPS, "id_distance_ref": 0.40,
                               "fid_num_images": 4}},
        "tuned_b": {"mild": {"psnr": 26.0, "lpips": NO_LPIPS, "id_distance_ref": 0.45, "fid_num_images": 4},
                    "severe": {"psnr": 23.0, "lpips": NO_LPIPS, "id_distance_ref": 0.40,
                               "fid_num_images": 4}},
    }


MODELS = [{"name": "input", "role": "input"}, {"name": "base", "role": "base"},
          {"name": "tuned_a", "role": "tuned"}, {"name": "tuned_b", "role": "tuned"}]


def _ctx() -> TableContext:
    return context_from_models(MODELS, LEVELS)


def test_best_marking_excludes_input_handles_ties_direction_and_unavailable() -> None:
    table, ctx = _table(), _ctx()
    assert ctx.candidates == ("base", "tuned_a", "tuned_b") and ctx.base_of["tuned_a"] == "base"
    # input's 40 dB is not a candidate
    assert best_models(table, ctx.candidates, "mild", "psnr") == {"tuned_a"}
    assert best_models(table, ctx.candidates, "severe", "psnr") == {"tuned_b"}
    assert best_models(table, ctx.candidates, "mild", "id_distance_ref") == {"tuned_a"}  # lower is better
    assert best_models(table, ctx.candidates, "severe", "id_distance_ref") == {"tuned_a", "tuned_b"}  # tie
    assert best_models(table, ctx.candidates, "mild", "lpips") == set()  # no numbers
    assert best_models(table, ctx.candidates, "mild", "fid_num_images") == set()  # not a score
    # mean over levels: a = 24.25, b = 24.5
    assert best_models(table, ctx.candidates, "mean", "psnr", level_names=LEVELS) == {"tuned_b"}
    # on other people, distance to the person's reference must NOT shrink: higher is better there
    assert best_models(table, ctx.candidates, "mild", "id_distance_ref", "others") == {"base"}
    same = {m: {"mild": {"psnr": 1.0}} for m in ctx.candidates}
    assert best_models(same, ctx.candidates, "mild", "psnr") == set()  # all equal: nothing to mark


def test_deltas_and_cells() -> None:
    assert delta(27.5, 25.0) == pytest.approx(2.5)
    assert delta(NO_LPIPS, 0.3) is None and delta(0.3, None) is None and delta(math.inf, 3.0) is None
    assert delta(4, 4, "fid_num_images") is None  # counts get no delta
    assert format_cell(27.5, "psnr", True, 2.5) == "**27.50** (+2.50)"
    assert format_cell(0.4, "id_distance_ref", False, -0.1) == "0.400 (-0.100)"
    assert format_cell(NO_LPIPS, "lpips", False, None) == "n/a"
    assert level_mean(_table()["tuned_a"], "psnr", LEVELS) == pytest.approx(24.25)
    assert isinstance(level_mean(_table()["tuned_a"], "lpips", LEVELS), Unavailable)


def test_level_table_marks_best_and_shows_deltas_vs_base() -> None:
    text = level_table(_table(), [m["name"] for m in MODELS], "mild", _ctx(), "person",
                       ["psnr", "id_distance_ref"])
    lines = text.splitlines()
    assert lines[0] == "| model | PSNR ↑ | ID dist ref ↓ |"
    assert lines[2] == "| input | 40.00 | 0.100 |"
    assert lines[3] == "| base | 25.00 | 0.500 |"
    assert lines[4] == "| tuned_a | **27.50** (+2.50) | **0.400** (-0.100) |"
    assert lines[5] == "| tuned_b | 26.00 (+1.00) | 0.450 (-0.050) |"


def test_ranking_orders_by_metric_and_direction() -> None:
    table = _table()
    assert ([m for m, _ in ranking(table, ["tuned_a", "tuned_b"], "psnr", "mild", LEVELS)] ==
            ["tuned_a", "tuned_b"])
    ranked = ranking(table, ["tuned_a", "tuned_b"], "psnr", "mean", LEVELS)
    assert ranked[0] == ("tuned_b", pytest.approx(24.5))
    by_id = ranking(table, ["tuned_b", "tuned_a"], "id_distance_ref", "mild", LEVELS)
    assert [m for m, _ in by_id] == ["tuned_a", "tuned_b"]
    unavailable = ranking(table, ["tuned_a", "tuned_b"], "lpips", "mild", LEVELS)
    assert [v for _, v in unavailable] == [None, None]
    with pytest.raises(ValueError, match="not a score"):
        ranking(table, ["tuned_a"], "fid_num_images", "mild", LEVELS)


def test_specificity_flags() -> None:
    others = {"base": {"mild": {"id_distance_gt": 0.40, "id_distance_ref": 0.90}},
              "tuned_a": {"mild": {"id_distance_gt": 0.50, "id_distance_ref": 0.70}},
              "tuned_b": {"mild": {"id_distance_gt": 0.41, "id_distance_ref": 0.89}}}
    ctx = TableContext(("base", "tuned_a", "tuned_b"), {"base": None, "tuned_a": "base", "tuned_b": "base"},
                       ("mild",))
    flags = specificity_flags(others, ctx, 0.03, "alice")
    assert len(flags) == 2 and all(f.startswith("tuned_a @ mild") for f in flags)
    assert "identity drops" in flags[0] and "+0.100" in flags[0]
    assert "pulled towards alice" in flags[1] and "-0.200" in flags[1]


def test_json_and_csv_round_trip(tmp_path: Path) -> None:
    results = {"person": _table()}
    results["person"]["base"]["mild"]["psnr_y"] = math.inf
    assert results_from_json(results_to_json(results)) == results
    path = tmp_path / "metrics.csv"
    path.write_text(csv_text(results, {"person": _ctx()}))
    assert read_csv(path) == results
    rows = path.read_text().splitlines()
    assert rows[0] == "set,model,level,metric,value,delta_vs_base,best,unavailable"
    assert "person,tuned_a,mild,psnr,27.5,2.5,1," in rows
    assert "person,tuned_b,mild,psnr,26.0,1.0,0," in rows
    assert any(r.startswith("person,base,mild,lpips,,,0,lpips: needs alexnet") for r in rows)


def _results() -> EvalResults:
    images = [np.full((16, 16, 3), v, np.uint8) for v in (0, 80, 160)]
    models = [ModelInfo("input", "input", "degraded input", 16, "gpen"),
              ModelInfo("base", "base", "b.pth", 16, "gpen", parameters=1000),
              ModelInfo("tuned_a", "tuned", "a", 16, "gpen", "b.pth", "sweep", ("lr=1",)),
              ModelInfo("tuned_b", "tuned", "b", 16, "gpen", "b.pth", "sweep", ("lr=2",))]
    grid = {"input": images[:2], "base": images[1:], "tuned_a": images[:2], "tuned_b": images[1:],
            "ground truth": images[:2]}
    return EvalResults("alice", LEVELS, models, {"person": _table()},
                       [{"set": "person", "model": "base", "level": "mild", "photo": "alice/p0", "copy": 0,
                         "psnr": 25.0}], {"person": {"mild": grid}}, {"person": ["alice/p0", "alice/p1"]})


def test_write_report_files_parse_back(tmp_path: Path) -> None:
    evaluation = _results()
    paths = write_report(evaluation, tmp_path, ReportSettings("psnr", "severe"), {"copies": 2, "seed": 0})
    assert read_csv(paths["metrics.csv"]) == evaluation.results
    data = read_json(paths["metrics.json"])
    assert data["results"] == evaluation.results
    assert [r["model"] for r in data["ranking"]["order"]] == ["tuned_b", "tuned_a"]
    assert data["unavailable"] == [NO_LPIPS.reason] and data["models"][2]["overrides"] == ["lr=1"]
    report = paths["report.md"].read_text()
    assert "| tuned_a | **27.50** (+2.50) |" in report
    assert ("## Ranking by psnr (severe, held-out photos)" in report and
            "| 1 | tuned_b | 23.00 | lr=2 |" in report)
    assert f"- unavailable: {NO_LPIPS.reason}" in report
    assert "![grid_person_mild](grid_person_mild.png)" in report
    grid = read_image(tmp_path / "grid_person_mild.png")
    header = grid.shape[0] - 2 * 16
    assert grid.shape[1] == 5 * 16 and header >= 20
    assert np.array_equal(grid[header:header + 16, :16], np.zeros((16, 16, 3), np.uint8))  # input, row 0
    assert np.array_equal(grid[header:header + 16, 16:32], np.full((16, 16, 3), 80, np.uint8))  # base, row 0


def test_labelled_grid_labels_and_resizes() -> None:
    big = [np.zeros((32, 32, 3), np.uint8)]
    small = [np.full((16, 16, 3), 255, np.uint8)]
    grid = labelled_grid({"input": big, "other size": small, "ground truth": big},
                           ["input", "other size", "ground truth"])
    header = grid.shape[0] - 32
    assert grid.shape[1] == 96 and header >= 30 and (header - 8) % 22 == 0  # whole wrapped label lines
    assert (grid[:header] < 128).any()  # some label text was drawn
    assert (grid[header:, 32:64] == 255).all()  # the 16-px image was resized to the column size


def test_metrics_of_the_network_a_model_trained_with_are_marked_trained_on() -> None:
    """A model whose loss read MobileFaceNet has its MFN cells marked, its dlib (ID) cells not; the models
    table names the network and explains the mark."""
    from gpen_fewshot.evaluation.report import _models_table
    from gpen_fewshot.evaluation.tables import TRAINED_ON_MARK, metric_network

    assert (metric_network("mfn_similarity_gt") == "mobilefacenet" and
            metric_network("id_distance_gt") == "dlib")
    assert metric_network("psnr") is None
    table = {name: {"mild": {"psnr": 25.0, "id_distance_gt": 0.4, "mfn_similarity_gt": 0.8}}
             for name in ("base", "tuned")}
    models = [{"name": "base", "role": "base"},
              {"name": "tuned", "role": "tuned", "identity_loss": "mobilefacenet"}]
    ctx = context_from_models(models, ["mild"])
    rows = level_table(table, ["base", "tuned"], "mild", ctx, "person").splitlines()
    assert TRAINED_ON_MARK not in rows[2]  # base: no identity loss
    tuned_cells = rows[3].split("|")[2:-1]
    assert [TRAINED_ON_MARK in c for c in tuned_cells] == [False, False, True]  # psnr, ID dist, MFN sim
    full = [{**m, "size": 256, "template": "gpen", "parameters": 0, "source": "x", "base": None,
             "overrides": ()}
            for m in models]
    text = "\n".join(_models_table(full))
    assert "| mobilefacenet |" in text and "| none |" in text and "trained on this metric" in text
    plain = "\n".join(_models_table([{**full[0]}]))
    assert "trained on this metric" not in plain
