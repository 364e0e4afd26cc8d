"""scripts/evaluate_prior.py: the held-out pretraining faces, the bicubic baseline, and an end-to-end run.

The faces folders are the bundled demo photos, downscaled (fast detection) and split over two folders like
``data.faces_dir=[A,B]``; crops are 64 px and the generators tiny and random (plumbing, not quality).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.data.degradations import build_degradation, get_preset
from gpen_fewshot.evaluation import prior_eval as pe
from gpen_fewshot.evaluation.grids import FONT_SIZE, wrap_label
from gpen_fewshot.evaluation.prior_report import (
    PriorEvalSettings,
    evaluate_prior,
    model_labels,
    portable_path,
)
from gpen_fewshot.evaluation.protocol import degrade, sample_rng
from gpen_fewshot.utils.drawing import text_width
from gpen_fewshot.utils.image import read_image, tensor_to_image, write_image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "evaluate_prior.py"
DEMO = REPO / "data" / "demo"
SIZE, VAL_COUNT = 64, 3
TINY = {"style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.125}


def _small(path: Path, side: int) -> np.ndarray:
    image = read_image(path)
    scale = side / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two photo folders (9 faces: the Obama photos, their mirror images, obama_and_biden), prepared once."""
    root = tmp_path_factory.mktemp("prior_faces")
    first, second = root / "faces_a", root / "faces_b"
    for path in sorted((DEMO / "person_obama").glob("*.jpg")):
        image = _small(path, 320)
        write_image(first / f"{path.stem}.png", image)
        write_image(second / f"{path.stem}_mirror.png", np.ascontiguousarray(image[:, ::-1]))
    write_image(second / "obama_and_biden.png", _small(DEMO / "group" / "obama_and_biden.jpg", 480))
    dirs, cache = [first, second], root / "cache"
    held = pe.held_out_crops(dirs, SIZE, "gpen", VAL_COUNT, cache)
    return {"dirs": dirs, "cache": cache, "held": held}


def test_held_out_crops_are_the_datamodules_validation_crops(faces: dict) -> None:
    from gpen_fewshot.data.datamodule import FacesFolderDataModule

    module = FacesFolderDataModule([str(d) for d in faces["dirs"]], size=SIZE, val_count=VAL_COUNT,
                                   cache_dir=faces["cache"], val_degradations=["moderate"], val_copies=1)
    module.setup()
    assert len(faces["held"]) == VAL_COUNT
    assert [str(p) for p in faces["held"]] == module.val_set.paths
    # same seeds as the validation set: same ground truths; the inputs equal the validation inputs exactly
    # where the preset's resize back drew bicubic, else they differ only by the interpolation (bilinear)
    inputs = pe.build_inputs(faces["held"], SIZE, ["moderate"], copies=1, seed=0)
    for i in range(VAL_COUNT):
        sample = module.val_set[i]
        assert np.array_equal(tensor_to_image(sample["gt"]), inputs.gt[i])
        diff = np.abs(tensor_to_image(sample["lq"]).astype(int) - inputs.bicubic[i])
        assert diff.mean() < 4.0


@pytest.mark.parametrize("level", ["moderate", "severe"])
def test_bicubic_input_is_the_preset_resized_back_with_bicubic(faces: dict, level: str) -> None:
    """With bicubic as the preset's only resize back, the protocol's same-size input IS our bicubic image."""
    crop = read_image(faces["held"][0])
    bicubic_only = dataclasses.replace(get_preset(level), upsample_interpolations=("bicubic",))
    factor = pe.lr_factor(level)
    gt, lq = degrade(crop, build_degradation(bicubic_only), sample_rng(0, "key", level, 0))
    low = build_degradation(dataclasses.replace(bicubic_only, scale=factor))
    gt2, lr, bicubic = pe.degrade_to_bicubic(crop, low, sample_rng(0, "key", level, 0))
    assert lr.shape == (SIZE // factor, SIZE // factor, 3) and bicubic.shape == crop.shape
    assert np.array_equal(gt, gt2) and np.array_equal(lq, bicubic)
    assert not np.array_equal(bicubic, crop)


def test_faces_dir_form_follows_the_cache_layout(tmp_path: Path) -> None:
    folder, cache = tmp_path / "photos", tmp_path / "cache"
    assert pe._faces_dir_arg([folder], cache, 256, "gpen") == folder  # data.faces_dir=DIR
    (cache / "photos" / "256_gpen").mkdir(parents=True)
    (cache / "photos" / "256_gpen" / "manifest.json").write_text("{}")
    assert pe._faces_dir_arg([folder], cache, 256, "gpen") == [folder]  # data.faces_dir=[DIR]
    assert pe._faces_dir_arg([folder, folder], None, 256, "gpen") == [folder, folder]


def test_labels_wrap_without_cutting() -> None:
    text = "outputs/prior_compact_256/2026-01-01_10-00-00/checkpoints/last"
    lines = wrap_label(text, 120)
    assert "".join(lines) == text and len(lines) > 1
    assert all(text_width(line, FONT_SIZE) <= 120 for line in lines)
    labels = [label for label, _ in model_labels(["a/checkpoints/last.ckpt", "x=GPEN-BFR-256", "bicubic"])]
    assert labels == ["a/last", "x", "bicubic#2"]


def test_bad_models_fail_fast_with_one_message(tmp_path: Path) -> None:
    small = tmp_path / "small.pth"
    torch.save(GPENGenerator(32, **TINY).state_dict(), small)
    out = tmp_path / "out"
    common = {"faces_dirs": [tmp_path / "none"], "size": SIZE, "out": out}
    with pytest.raises(ValueError, match="restores 32 px faces, the faces are 64 px"):
        evaluate_prior(PriorEvalSettings(models=[str(small)], **common))
    with pytest.raises((ValueError, FileNotFoundError), match="missing.ckpt"):
        evaluate_prior(PriorEvalSettings(models=[str(tmp_path / "missing.ckpt")], **common))
    args = [sys.executable, str(SCRIPT), "--faces-dir", str(tmp_path / "none"), "--size", str(SIZE),
            "--out", str(out), "--model", str(small)]  # the CLI: one line, exit code 2
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "restores 32 px faces" in done.stderr
    assert not out.exists()


def _models(root: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    plain = root / "prior_a.pth"
    torch.save(GPENGenerator(SIZE, **TINY).state_dict(), plain)
    torch.manual_seed(1)
    ema = GPENGenerator(SIZE, **TINY).state_dict()
    state = {f"{prefix}.{k}": v for prefix in ("generator", "generator_ema") for k, v in ema.items()}
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, ckpt)
    return plain, ckpt


def _finite_numbers(obj: object) -> list[float]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _finite_numbers(x)]
    return [float(obj)] if isinstance(obj, int | float) and not isinstance(obj, bool) else []


def test_script_end_to_end(faces: dict, tmp_path: Path) -> None:
    plain, ckpt = _models(tmp_path)
    out = tmp_path / "out"
    args = [sys.executable, str(SCRIPT), "--faces-dir", str(faces["dirs"][0]), "--faces-dir",
            str(faces["dirs"][1]), "--cache-dir", str(faces["cache"]), "--val-count", str(VAL_COUNT),
            "--size", str(SIZE), "--model", str(plain), "--model", str(ckpt), "--level", "moderate",
            "--level", "mild", "--limit", "2", "--batch-size", "2", "--zoom", "2", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| bicubic | 2 |" in done.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["faces"] == [p.name for p in faces["held"][:2]]
    for level in ("moderate", "mild"):
        result = metrics["levels"][level]
        assert list(result["rows"]) == ["bicubic", "prior_a", "run/last"]
        assert all(row["n"] == 2 for row in result["rows"].values())
        assert all(np.isfinite(v) for v in _finite_numbers(result["rows"]))
        for pair in result["paired"].values():
            assert 0.0 <= pair["psnr_win"] <= 1.0 and 0.0 <= pair["id_win"] <= 1.0
            assert pair["psnr_gain_se"] >= 0.0 and pair["id_gain_se"] >= 0.0
    moderate = metrics["levels"]["moderate"]
    assert moderate["lr_size"] == SIZE // 2 and metrics["levels"]["mild"]["lr_size"] == SIZE
    assert moderate["rows"]["bicubic"]["psnr"] < 60  # the baseline is really degraded
    assert moderate["rows"]["prior_a"]["psnr"] != moderate["rows"]["run/last"]["psnr"]

    with open(out / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 3 and {r["row"] for r in rows} == {"bicubic", "prior_a", "run/last"}
    bicubic = [r for r in rows if r["row"] == "bicubic" and r["level"] == "moderate"]
    assert np.mean([float(r["psnr"]) for r in bicubic]) == pytest.approx(moderate["rows"]["bicubic"]["psnr"],
                                                                           rel=1e-4)
    assert "bicubic" in (out / "report.md").read_text() and "± s.e." in (out / "report.md").read_text()
    _check_grid(read_image(out / "grid.png"), faces["held"][:2])
    assert (out / "grid_mild.png").is_file()
    # --zoom 2: the same grid of the faces' central halves at 2x (ground truth column checked pixel for pixel)
    zoomed, gt = read_image(out / "grid_zoom.png"), read_image(faces["held"][0])
    quarter = SIZE // 4
    expected = cv2.resize(np.repeat(np.repeat(gt[quarter:-quarter, quarter:-quarter], 2, 0), 2, 1),
                          (128, 128), interpolation=cv2.INTER_NEAREST)
    header = zoomed.shape[0] - 2 * 128
    assert np.array_equal(zoomed[header:header + 128, -128:], expected)
    assert (out / "grid_mild_zoom.png").is_file()


def _check_grid(grid: np.ndarray, crops: list[Path]) -> None:
    """4 columns of 128 px tiles (64 px crops enlarged), 2 face rows under labelled headers."""
    tile, columns, rows = 128, 4, 2
    header = grid.shape[0] - rows * tile
    assert grid.shape[1] == columns * tile and 40 <= header <= 200
    labels = grid[header - 22:header]  # the column-label line
    for c in range(columns):
        assert (labels[:, c * tile:(c + 1) * tile] < 100).any(), f"column {c} has no label"
    for r, crop in enumerate(crops):  # last column: the ground truth of that face
        top = header + r * tile
        expected = cv2.resize(read_image(crop), (tile, tile), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(grid[top:top + tile, -tile:], expected)


def test_reports_hold_no_absolute_machine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    portable = portable_path
    folder = tmp_path / "pretrain" / "congress"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable(folder) == "pretrain/congress"  # inside the working folder: relative
    monkeypatch.chdir(folder)
    assert portable(tmp_path / "pretrain") == str(Path(*tmp_path.parts[-1:], "pretrain"))  # outside: 2 parts
    assert portable("gpen-compact-256") == "gpen-compact-256"  # a registry name is left alone
