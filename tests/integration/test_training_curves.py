"""Every run draws curves.png from its own logged metrics, and writes a CSV log beside W&B (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpen_fewshot.training.curves import MetricHistory, TrainingCurves, plot_curves
from gpen_fewshot.training.run import train
from gpen_fewshot.utils.image import read_image

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _curves(trainer) -> TrainingCurves:
    return next(c for c in trainer.callbacks if isinstance(c, TrainingCurves))


def test_run_writes_curves_from_its_logged_metrics(compose_train) -> None:
    cfg = compose_train("iterations=4", "val_every=2")
    train(cfg)
    path = Path(cfg.paths.output_dir) / "curves.png"
    image = read_image(path)
    assert image.shape[0] >= 500 and image.shape[1] >= 800 and image.std() > 10  # a drawn figure, not blank


def test_history_follows_the_module_iteration_and_survives_a_resume(make_module, fit, tmp_path: Path,
                                                                    stop_at) -> None:
    from gpen_fewshot.training.callbacks import IterationCheckpoint

    curves = TrainingCurves(tmp_path / "curves.png")
    checkpoint = IterationCheckpoint(tmp_path / "ckpt", every_n_iters=0, monitor=None)
    fit(make_module(total_iters=4), callbacks=[curves, checkpoint, stop_at(2)], val_every=2)
    history = curves.history
    assert [p["iteration"] for p in history.train] == [1.0, 2.0]
    assert {"train/g_total", "train/d_loss", "lr/generator", "lr/discriminator"} <= set(history.train[0])
    assert [v["iteration"] for v in history.val] == [2.0] and "val/psnr" in history.val[0]
    assert (tmp_path / "curves.png").is_file()

    resumed = TrainingCurves(tmp_path / "curves.png")
    fit(make_module(total_iters=4), callbacks=[resumed, IterationCheckpoint(tmp_path / "ckpt", 0, None)],
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), val_every=2)
    assert [p["iteration"] for p in resumed.history.train] == [1.0, 2.0, 3.0, 4.0]
    assert [v["iteration"] for v in resumed.history.val] == [2.0, 4.0]


def test_history_stays_bounded_and_keeps_the_means() -> None:
    history = MetricHistory(max_points=4)
    for i in range(1, 41):
        history.add_train(i, {"train/g_total": float(i)})
    assert len(history.train) <= 4 and history.bin_width >= 8
    points = history.train_points()  # the bin still filling included
    x, y = history.series(points, "train/g_total")
    assert x[-1] == 40.0 and sum(p["_n"] for p in points) == 40  # every iteration is in exactly one bin
    assert sum(v * p["_n"] for v, p in zip(y, points, strict=True)) == pytest.approx(sum(range(1, 41)))
    restored = MetricHistory(max_points=4)
    restored.load_state_dict(history.state_dict())  # a resume keeps the bin still filling
    assert restored.train_points() == points


def test_figure_draws_missing_panels_and_skips_per_degradation_means(tmp_path: Path) -> None:
    history = MetricHistory()
    history.add_train(1, {"train/g_total": 0.5, "lr/generator": 1e-3})
    history.add_val(0, {"val/psnr": 20.0, "val/psnr_moderate": 19.0, "val/id_distance_gt": 0.4,
                        "val/id_distance_gt_moderate": 0.5})
    history.add_val(0, {"val/psnr": 21.0})  # the same iteration validated again: replaced
    assert history.val == [{"iteration": 0.0, "val/psnr": 21.0}]
    path = plot_curves(history, tmp_path / "empty" / "curves.png", title="alice")
    assert np.asarray(read_image(path)).ndim == 3


def test_default_logger_writes_a_csv_log_beside_wandb(compose_train) -> None:
    cfg = compose_train(shrink=False)
    assert set(cfg.logger) == {"wandb", "csv"} and cfg.logger.wandb.offline is True
    assert cfg.logger.csv.save_dir == cfg.paths.output_dir and "CSVLogger" in cfg.logger.csv._target_
    assert cfg.callbacks.curves.path == f"{cfg.paths.output_dir}/curves.png"


def test_a_failing_figure_does_not_stop_training(tmp_path: Path, monkeypatch, caplog) -> None:
    import gpen_fewshot.training.curves as curves_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(curves_module, "plot_curves", broken)
    trainer = type("T", (), {"is_global_zero": True})()
    with caplog.at_level("WARNING"):
        TrainingCurves(tmp_path / "curves.png")._draw(trainer)
    assert "disk full" in caplog.text
