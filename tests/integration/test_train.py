"""The training pipeline end to end: composed Hydra configs, train(), resume, sweeps, DDP, interruption.

In-process tests compose ``configs/train.yaml`` with the Hydra compose API and shrink it (tiny 32-px model,
synthetic data from ``tests/configs/data/synthetic.yaml``, a few iterations). Tests marked ``subprocess`` run
``python train.py`` itself (multirun, Optuna, DDP with 2 CPU processes, Ctrl-C / SIGTERM); they take 10-40 s
each and run in CI.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
from gpen_fewshot.cli.resolvers import person_dir
from gpen_fewshot.cli.train import main_task
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.training.resume import find_resume_checkpoint, latest_checkpoint
from gpen_fewshot.training.run import build_module, build_trainer, train
from gpen_fewshot.utils.image import read_image, tensor_to_image

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "configs" / "experiment").glob("*.yaml"))
SEARCHPATH = f"hydra.searchpath=[file://{REPO_ROOT / 'tests' / 'configs'}]"
TINY_CLI = [SEARCHPATH, "data=synthetic", "model=tiny", "trainer=cpu", "logger=none", "data.num_workers=0",
            "trainer.enable_model_summary=false"]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _run_train_py(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


# ------------------------------------------------------------------------------------------- composition
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_own_settings(experiment: str, compose_train) -> None:
    cfg = compose_train(f"experiment={experiment}", shrink=False)
    model, optim, loss = instantiate(cfg.model), instantiate(cfg.optim), instantiate(cfg.loss)
    freezing = instantiate(cfg.freezing)
    with torch.device("meta"):  # the experiment's real architecture, without allocating it
        generator = GPENGenerator(**model.generator_kwargs())
        discriminator = GPENDiscriminator(**model.discriminator_kwargs())
    stages = freezing.resolve(int(cfg.iterations), generator.parameter_groups(),
                              discriminator.parameter_groups())
    assert stages[0].generator_params and stages[0].discriminator_params
    assert optim.lr_g > 0 and loss.r1_interval >= 1 and cfg.data.size == model.size
    assert "_target_" in cfg.trainer and int(cfg.iterations) >= 1
    expected_model = {"fewshot_512": "gpen_bfr_512", "fewshot_256_cpu": "gpen_bfr_256", "smoke": "tiny"}
    if experiment in expected_model:
        assert model.name == expected_model[experiment]
    if experiment.startswith("pretrain"):
        assert freezing.name == "full" and model.init == "random" and "FacesFolder" in cfg.data._target_
    if experiment == "pretrain_cpu_fm":  # the bundled prior's recipe: non-residual, L1 + D feature matching
        assert model.name == "compact_256" and not model.residual and loss.l1 == 1.0
        assert loss.feature_matching > 0 and loss.adversarial == 0 and loss.train_discriminator
    if experiment == "fewshot_identity":  # the default run + moderate/severe + MobileFaceNet identity terms
        assert model.name == "compact_256" and list(cfg.degradation.presets) == ["moderate", "severe"]
        assert loss.identity > 0 and loss.identity_reference > 0 and loss.identity_network == "mobilefacenet"
        assert freezing.name == "full"  # everything trainable: staged freezing moved identity less (README)
    if experiment in ("fewshot_512", "fewshot_256_cpu"):  # the default recipe's levels and identity terms
        assert list(cfg.degradation.presets) == ["moderate", "severe"]
        assert loss.identity > 0 and loss.identity_reference > 0
        assert loss.identity_network == "irse50" and loss.identity_fallback == "mobilefacenet"
    if experiment == "pretrain_cpu":  # the residual recipe meant to replace it (issue 13)
        assert model.name == "compact_256" and optim.betas_g == (0.9, 0.99) and loss.l1 == 1.0
        assert (model.residual and not loss.train_discriminator and
                loss.adversarial == loss.feature_matching == 0)
        assert loss.identity > 0 and loss.identity_network == "mobilefacenet"  # L1 + MobileFaceNet identity
        # one LR (raised conv-group LRs measured worse)
        assert optim.lr_g == 1e-3 and not optim.group_lr_scales
        # soft faces and "none" kept
        assert cfg.data.augment.soften_prob > 0 and cfg.degradation.weights[0] > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_few_iterations(experiment: str, compose_train) -> None:
    # synthetic data has no person, so no reference embedding: that term is tested with a person below
    person_only = ["loss.identity_reference=0"] if experiment == "fewshot_identity" else []
    cfg = compose_train(f"experiment={experiment}", *person_only)
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert _load_ckpt(run_dir / "checkpoints" / "last.ckpt")["gpen_fewshot"]["iteration"] == 2
    exported = load_generator(run_dir / "export")  # synthetic data: a full model export, no person
    final = load_generator(run_dir / "checkpoints" / "last.ckpt")  # its EMA generator
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in exported.state_dict().items())
    assert not (run_dir / "export" / "person.json").exists()
    assert ((run_dir / "samples" / "iter_000002.png").is_file() and
            (run_dir / "samples" / "iter_000000.png").is_file())
    assert metrics["val/psnr"] > 0


def test_demo_person_through_the_real_data_pipeline(compose_train, tmp_path: Path, capsys, caplog) -> None:
    """Bundled photos -> face detection + alignment (prepare_person) -> degradations -> 2 iterations of the
    smoke experiment (32-px model) -> person export in the run and registered under the persons dir."""
    from gpen_fewshot.data.person import prepare_person
    from gpen_fewshot.evaluation.identity_metrics import person_reference
    from gpen_fewshot.export import default_export_dir, load_person
    from gpen_fewshot.faces.identity import IdentityEmbedder

    cfg = compose_train("experiment=smoke", "iterations=2", "val_every=2",
                        f"data.cache_dir={tmp_path / 'prepared'}", "data.val_degradations=[moderate]",
                        "data.val_copies=1", "trainer.enable_model_summary=false",
                        "export.register=true", "loss.identity_reference=0.05",
                        # IR-SE50 missing: the terms and the reference run on the fallback, and say so
                        "loss.identity_network=irse50", f"loss.identity_weights={tmp_path / 'no_irse50.pth'}",
                        "loss.identity_fallback=mobilefacenet", shrink=False)
    assert Path(cfg.person_dir) == REPO_ROOT / "data" / "demo" / "person_obama" and cfg.model.size == 32
    with caplog.at_level("INFO", logger="gpen_fewshot.training.module"):
        metrics = train(cfg, echo=print)  # the summaries train.py prints
    assert "identity reference: mean mobilefacenet embedding of 3 training crops" in caplog.text
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["val/psnr"] > 5 and 0 < metrics["val/ssim"] <= 1
    assert (run_dir / "samples" / "iter_000002.png").is_file()
    assert (run_dir / "csv" / "metrics.csv").read_text().count("val/psnr") >= 1
    prepared = prepare_person(cfg.person_dir, size=32, cache_dir=tmp_path / "prepared")  # the cached crops
    assert len(prepared.train_crops) == 3 and len(prepared.holdout_crops) == 1  # all 4 photos pass at 32 px
    weights = load_person(run_dir / "export")
    meta = weights.metadata
    # random init
    assert (meta.name, meta.n_photos, meta.base_model, weights.mode) == ("obama", 3, None, "full")
    assert meta.metrics["psnr"] == pytest.approx(metrics["val/psnr"]) and len(meta.config_hash) == 64
    # the reference pull read MobileFaceNet: reports mark its metric
    assert meta.identity_loss == "mobilefacenet"
    expected = person_reference([read_image(p) for p in prepared.train_crops],
                                IdentityEmbedder(template="gpen"))
    np.testing.assert_allclose(weights.reference_embedding, expected, atol=1e-6)
    registered = default_export_dir("obama", tmp_path / "persons")
    assert load_person("obama").path == registered  # found by name ($GPEN_FEWSHOT_PERSONS_DIR = tmp/persons)
    assert ((registered / "model.safetensors").read_bytes() ==
            (run_dir / "export" / "model.safetensors").read_bytes())
    out = capsys.readouterr().out
    assert f"run export: {run_dir / 'export'}" in out and f"registered: {registered}" in out
    # validation saw exactly evaluate.py's inputs for the held-out photo (same protocol seed, level, copies)
    from gpen_fewshot.evaluation.protocol import ProtocolConfig, build_eval_set, person_photos

    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    photos = person_photos(cfg.person_dir, 32, "gpen", cache_dir=tmp_path / "prepared")
    inputs = build_eval_set("person", photos.holdout, 32, "gpen",
                            ProtocolConfig(("moderate",), 1, int(cfg.data.val_seed)))
    assert len(datamodule.val_set) == len(inputs.lq) == 1
    assert np.array_equal(tensor_to_image(datamodule.val_set[0]["lq"]), inputs.lq[0])
    # a folder holding only the registered weights/ does not hide the demo photos from the next run
    assert Path(compose_train("experiment=smoke", shrink=False).person_dir) == Path(cfg.person_dir)


def test_iteration_timer_logs_every_iteration_and_reports_the_median(compose_train, caplog) -> None:
    cfg = compose_train("iterations=4", "val_every=4", "validate_before_training=false", "logger=csv")
    with caplog.at_level("INFO", logger="gpen_fewshot.training.callbacks"):
        train(cfg)
    rows = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("time/iteration_s")
    times = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert times and all(t > 0 for t in times)  # logged at the trainer's log_every_n_steps
    assert "iteration time: median" in caplog.text and "over 2 iterations" in caplog.text  # 4 run, 2 skipped


def test_last_iteration_is_always_validated(compose_train) -> None:
    cfg = compose_train("iterations=3", "val_every=2", "validate_before_training=false")
    train(cfg)
    samples = sorted(p.name for p in (Path(cfg.paths.output_dir) / "samples").glob("*.png"))
    assert samples == ["iter_000002.png", "iter_000003.png"]


def test_default_config_targets_the_demo_person(compose_train) -> None:
    cfg = compose_train(shrink=False)
    assert cfg.person == "obama" and cfg.model.name == "compact_256" and cfg.model.init == "pretrained"
    assert "PersonDataModule" in cfg.data._target_ and cfg.data.person_dir == cfg.person_dir
    assert "WandbLogger" in cfg.logger.wandb._target_ and cfg.logger.wandb.offline is True
    assert cfg.freezing.name == "full" and list(cfg.degradation.presets) == ["moderate", "severe"]  # fewshot_identity
    assert cfg.loss.identity > 0 and cfg.loss.identity_reference > 0


def test_user_errors_are_one_clear_message(compose_train, capsys, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main_task(compose_train("person=../etc"))
    assert exit_info.value.code == 1 and "invalid person name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_task(compose_train("model=gpen_bfr_256", "model.download=false"))
    assert "GPEN-BFR-256.pth" in capsys.readouterr().err  # the weights registry's message, no traceback


def test_person_dir_resolver(tmp_path: Path) -> None:
    persons, demo = tmp_path / "persons", tmp_path / "demo"
    (demo / "person_obama").mkdir(parents=True)
    (persons / "alice").mkdir(parents=True)
    assert person_dir("alice", str(persons), str(demo)) == str(persons / "alice")
    assert person_dir("obama", str(persons), str(demo)) == str(demo / "person_obama")
    assert person_dir("bob", str(persons), str(demo)) == str(persons / "bob")  # missing: reported by the data
    (persons / "obama" / "weights").mkdir(parents=True)  # registered export of the demo person, no photos
    assert person_dir("obama", str(persons), str(demo)) == str(demo / "person_obama")
    (persons / "obama" / "me.jpg").write_bytes(b"")  # the user's own photos win
    assert person_dir("obama", str(persons), str(demo)) == str(persons / "obama")


def test_slurm_launcher_config_composes(compose_train) -> None:
    cfg = compose_train("hydra/launcher=slurm")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.timeout_min == 240 and cfg.hydra.launcher.gpus_per_node == 1


# ------------------------------------------------------------------------------------------------ resume
def _resume_cfg(compose_train, run_dir: Path):
    # the staged schedule (a stage change inside the resumed half) in fp32 (bit-exact comparison)
    cfg = compose_train("freezing=encoder_then_decoder", "trainer.precision=32-true",
                        "iterations=4", "val_every=2", "optim.ema_decay=0.5", "optim.warmup_iters=1",
                        "loss.r1_interval=2", "loss.path_length=1.0", "loss.path_length_interval=2",
                        "freezing.stages.1.start=3", "data.samples_per_epoch=4",
                        "validate_before_training=false", "callbacks.checkpoint.every_n_iters=2",
                        output_dir=run_dir)
    return cfg


def test_resume_equals_uninterrupted_run(compose_train, stop_at, tmp_path: Path) -> None:
    """4 iterations in one go == 2 iterations, stop, resume=<run dir>, 2 more (weights, EMA, Adam, stage)."""
    full = train(_resume_cfg(compose_train, tmp_path / "full"))
    cfg = _resume_cfg(compose_train, tmp_path / "first")
    pl.seed_everything(int(cfg.seed), workers=True)
    module, trainer = build_module(cfg), build_trainer(cfg)
    trainer.callbacks.append(stop_at(2))
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert module.iteration == 2
    resumed_cfg = _resume_cfg(compose_train, tmp_path / "second")
    with open_dict(resumed_cfg):
        resumed_cfg.resume = str(tmp_path / "first")
    train(resumed_cfg)
    a = _load_ckpt(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = _load_ckpt(tmp_path / "second" / "checkpoints" / "last.ckpt")
    assert a["gpen_fewshot"]["iteration"] == b["gpen_fewshot"]["iteration"] == 4
    assert a["gpen_fewshot"]["stage"] == b["gpen_fewshot"]["stage"] == "encoder+decoder_fine"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0, msg=key)
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for index, state in opt_a["state"].items():
            torch.testing.assert_close(state["exp_avg"], opt_b["state"][index]["exp_avg"], atol=1e-6, rtol=0)
            assert int(state["step"]) == int(opt_b["state"][index]["step"])
    assert "val/psnr" in full


def test_find_resume_checkpoint(tmp_path: Path) -> None:
    runs = tmp_path / "outputs" / "alice"
    old, new = runs / "2024-01-01_10-00-00", runs / "multirun_x" / "0"
    for run in (old, new):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)
    assert latest_checkpoint(runs) == new / "checkpoints" / "last.ckpt"
    assert find_resume_checkpoint(None, True, runs, current_run_dir=new) == old / "checkpoints" / "last.ckpt"
    assert find_resume_checkpoint(None, str(old), runs) == old / "checkpoints" / "last.ckpt"
    assert find_resume_checkpoint(None, False, runs) is None
    assert (find_resume_checkpoint(str(old / "checkpoints" / "last.ckpt"), True, runs) ==
            old / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        find_resume_checkpoint(None, True, tmp_path / "nobody")
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        find_resume_checkpoint(str(tmp_path / "missing.ckpt"), False, runs)


# ------------------------------------------------------------------------------- train.py subprocesses
@pytest.mark.subprocess
def test_multirun_sweep_two_values(tmp_path: Path, subprocess_env) -> None:
    _run_train_py(["-m", *TINY_CLI, "experiment=smoke", "iterations=2", "val_every=1", "optim.lr_g=1e-4,5e-5",
                   "logger=wandb", f"paths.log_dir={tmp_path}", "hydra.sweep.dir=" + str(tmp_path / "sweep")],
                  subprocess_env)
    exports = sorted((tmp_path / "sweep").glob("*/export/config.json"))
    assert [p.parent.parent.name for p in exports] == ["0", "1"]
    for job in ("0", "1"):  # one offline W&B run per job (not the second job logging into the first)
        assert len(list((tmp_path / "sweep" / job / "wandb").glob("offline-run-*"))) == 1
    overrides = [(p.parent.parent / ".hydra" / "overrides.yaml").read_text() for p in exports]
    assert "optim.lr_g=0.0001" in overrides[0] and "optim.lr_g=5e-05" in overrides[1]


@pytest.mark.subprocess
def test_optuna_sweep_two_trials(tmp_path: Path, subprocess_env) -> None:
    _run_train_py([*TINY_CLI, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "experiment=smoke",
                   "iterations=2", "val_every=1", f"paths.log_dir={tmp_path}",
                   "hydra.sweep.dir=" + str(tmp_path / "sweep")], subprocess_env)
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in results and "best_params" in results
    assert len(list((tmp_path / "sweep").glob("*/export/config.json"))) == 2


@pytest.mark.subprocess
def test_ddp_two_cpu_processes(tmp_path: Path, subprocess_env, compose_train) -> None:
    run_dir = tmp_path / "ddp"
    result = _run_train_py([*TINY_CLI, "experiment=smoke", "trainer=ddp", "trainer.accelerator=cpu",
                            "trainer.devices=2", "iterations=3", "val_every=3", f"hydra.run.dir={run_dir}"],
                           subprocess_env)
    assert "GLOBAL_RANK: 1" in result.stdout + result.stderr
    ckpt = _load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["gpen_fewshot"]["iteration"] == 3
    # frozen groups stay exactly at their (seeded) initial values across both ranks' updates
    cfg = compose_train("experiment=smoke", "iterations=3")
    pl.seed_everything(int(cfg.seed), workers=True)
    initial = build_module(cfg)
    groups = initial.generator.parameter_groups()
    for name in groups["mapping"] + groups["decoder_coarse"]:
        assert torch.equal(ckpt["state_dict"][f"generator.{name}"],
                           initial.generator.state_dict()[name]), name
    changed = [n for n in groups["encoder"] if not torch.equal(ckpt["state_dict"][f"generator.{n}"],
                                                                initial.generator.state_dict()[n])]
    assert changed


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_a_usable_checkpoint(signum: int, tmp_path: Path, subprocess_env) -> None:
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = [*TINY_CLI, "experiment=smoke", "iterations=100000", "val_every=100000",
            f"hydra.run.dir={run_dir}", "callbacks.checkpoint.every_n_iters=5"]
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=REPO_ROOT,
                            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ckpt.is_file(), "no periodic checkpoint appeared"
        time.sleep(0.5)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = _load_ckpt(ckpt)
    reached = max(int(n) for n in re.findall(r"(\d+)/100000", output))  # progress bar: last iteration done
    assert state["gpen_fewshot"]["iteration"] == reached >= 5, output[-2000:]
    assert not list(ckpt.parent.glob(".*tmp"))  # no half-written files left behind
    assert "stopped at iteration" in output and "continue with: " in output, output[-2000:]
    # 130 / 143: an interrupted job, not a finished one
    assert proc.returncode == 128 + signum, output[-2000:]
    samples = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert samples == ["iter_000000.png"], samples  # no validation between the signal and the checkpoint


def test_documented_group_lr_override_composes(compose_train) -> None:
    """docs/training.md and configs/optim/adam.yaml show this syntax: it must compose (a plain
    ``optim.group_lr_scales={...}`` cannot add keys to the empty default dict)."""
    cfg = compose_train("++optim.group_lr_scales={decoder_fine:0.1,to_rgb:0.5}")
    assert dict(instantiate(cfg.optim).group_lr_scales) == {"decoder_fine": 0.1, "to_rgb": 0.5}
