"""gpen_fewshot.cli.export_prior (scripts/export_prior.py) and gpen_fewshot.export.prior: a real 2-iteration
tiny training run's Lightning checkpoint exported as fp16 safetensors, reloaded strictly, compared with the
fp32 EMA generator."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors import safe_open

from gpen_fewshot.archs.checkpoints import load_discriminator, load_generator
from gpen_fewshot.export import prior
from gpen_fewshot.export.common import ExportError
from gpen_fewshot.export.prior import check_input, export_prior, find_checkpoint, read_training_checkpoint
from gpen_fewshot.utils.hashing import sha256_file

REPO = Path(__file__).resolve().parents[2]
TINY_G = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (32 px) training run of 2 iterations: ``<run>/checkpoints/last.ckpt`` written by the run's
    own checkpoint callback, and ``best.ckpt`` = the same run with iteration 1 and all EMA weights halved."""
    from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
    from gpen_fewshot.training.callbacks import IterationCheckpoint
    from gpen_fewshot.training.config import LossConfig, ModelConfig, OptimConfig, RunConfig
    from gpen_fewshot.training.freezing import FreezingSchedule
    from gpen_fewshot.training.module import GPENFewShotModule
    from gpen_fewshot.training.synthetic import SyntheticDataModule

    run = tmp_path_factory.mktemp("prior_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        networks = (GPENGenerator(**TINY_G), GPENDiscriminator(32, channel_multiplier=1, narrow=0.125))
        model = ModelConfig(name="tiny", **TINY_G, d_channel_multiplier=1, d_narrow=0.125, init="random")
        full = FreezingSchedule("full", [{"name": "full", "start": 0, "generator": ["all"],
                                          "discriminator": ["all"]}])
        module = GPENFewShotModule(model, OptimConfig(warmup_iters=1),
                                   LossConfig(identity=0.0, r1_interval=2), full,
                                   RunConfig(total_iters=2, num_sample_images=2), networks=networks)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=-1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, default_root_dir=str(run),
                             callbacks=[IterationCheckpoint(run / "checkpoints", every_n_iters=2,
                                                            monitor=None)])
        trainer.fit(module, SyntheticDataModule(size=32, samples_per_epoch=4))
    finally:
        torch.set_num_threads(threads)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["gpen_fewshot"]["iteration"] = 1
    ckpt["state_dict"] = {k: v / 2 if k.startswith("generator_ema.") and v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    return run


def _ema(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("generator_ema."): v for k, v in state.items() if k.startswith("generator_ema.")}


def _script():
    """The CLI module (``scripts/export_prior.py`` is a wrapper of it)."""
    return importlib.import_module("gpen_fewshot.cli.export_prior")


def test_fp16_export_reloads_strictly_close_to_the_fp32_ema(run_dir: Path, tmp_path: Path) -> None:
    result = export_prior(run_dir, "tiny-prior", tmp_path)
    g_path, d_path = tmp_path / "tiny-prior.safetensors", tmp_path / "tiny-prior-D.safetensors"
    assert (result.generator.path, result.discriminator.path) == (g_path, d_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [d_path.name, g_path.name]  # no temporary left
    assert result.generator.sha256 == sha256_file(g_path) and result.generator.size == g_path.stat().st_size
    assert result.discriminator.sha256 == sha256_file(d_path)
    ema = _ema(run_dir / "checkpoints" / "last.ckpt")
    generator = load_generator(g_path, strict=True)
    assert all(v.dtype == torch.float32 for v in generator.state_dict().values())  # fp16 file, fp32 model
    assert all(torch.equal(generator.state_dict()[k], v.half().float()) for k, v in ema.items())
    reference = load_generator(run_dir / "checkpoints" / "last.ckpt")  # the fp32 EMA generator
    x = check_input(32)
    with torch.no_grad():
        diff = (reference(x) - generator(x)).abs().max().item()
    assert 0 < diff < 5e-3 and diff == pytest.approx(result.generator_max_abs_diff)
    discriminator = load_discriminator(d_path, strict=True)
    assert discriminator.config.size == 32 and discriminator.config.narrow == 0.125
    with safe_open(str(g_path), "pt") as handle:
        assert all(handle.get_tensor(k).dtype == torch.float16 for k in handle.keys())


def test_metadata_records_format_config_and_provenance(run_dir: Path, tmp_path: Path) -> None:
    export_prior(run_dir, "tiny-prior", tmp_path)
    with safe_open(str(tmp_path / "tiny-prior.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["gpen_fewshot_format"] == prior.PRIOR_FORMAT and meta["format"] == "pt"
    assert (meta["kind"] == "generator" and meta["architecture"] == "GPENGenerator" and
            meta["dtype"] == "float16")
    config = {k: json.loads(meta[k]) for k in TINY_G}
    assert config == TINY_G and json.loads(meta["isconcat"]) is True
    assert meta["source_iteration"] == "2" and meta["source_checkpoint"].endswith("checkpoints/last.ckpt")
    assert meta["source_checkpoint_sha256"] == sha256_file(run_dir / "checkpoints" / "last.ckpt")
    assert meta["trained_by"] == "gpen-fewshot experiment=pretrain" and meta["created"].startswith("20")
    with safe_open(str(tmp_path / "tiny-prior-D.safetensors"), "pt") as handle:
        d_meta = handle.metadata()
    assert (d_meta["kind"] == "discriminator" and d_meta["name"] == "tiny-prior-D" and
            d_meta["narrow"] == "0.125")


def test_the_generator_is_the_ema_not_the_raw_generator(run_dir: Path, tmp_path: Path) -> None:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v + 1 if k.startswith("generator.") and v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, tmp_path / "shifted.ckpt")
    export_prior(tmp_path / "shifted.ckpt", "p", tmp_path / "out")
    stored = load_generator(tmp_path / "out" / "p.safetensors").state_dict()
    assert all(torch.equal(stored[k], v.half().float()) for k, v in _ema(tmp_path / "shifted.ckpt").items())
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("generator_ema.")}
    torch.save(ckpt, tmp_path / "no_ema.ckpt")
    with pytest.raises(ExportError, match="no_ema.ckpt: the checkpoint holds no EMA generator"):
        export_prior(tmp_path / "no_ema.ckpt", "p", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_float32_is_exact_and_best_checkpoint_is_selectable(run_dir: Path, tmp_path: Path) -> None:
    result = export_prior(run_dir, "p", tmp_path, checkpoint="best", dtype="float32")
    assert result.generator_max_abs_diff == 0.0 and result.source.iteration == 1
    assert result.source.path == run_dir / "checkpoints" / "best.ckpt"
    stored = load_generator(tmp_path / "p.safetensors").state_dict()
    assert all(torch.equal(stored[k], v) for k, v in _ema(run_dir / "checkpoints" / "best.ckpt").items())
    assert (find_checkpoint(run_dir / "checkpoints" / "best.ckpt", "last") ==
            run_dir / "checkpoints" / "best.ckpt")


def test_interrupted_or_failed_export_leaves_no_file(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    old = b"previous release"
    (tmp_path / "p.safetensors").write_bytes(old)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C after the generator file was written

    monkeypatch.setattr(prior, "verify_prior", crash)
    with pytest.raises(KeyboardInterrupt):
        export_prior(run_dir, "p", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]  # no -D file, no hidden temporary
    assert (tmp_path / "p.safetensors").read_bytes() == old
    monkeypatch.undo()
    with pytest.raises(ExportError, match=r"p\.safetensors: the reloaded generator differs .* > tolerance 0"):
        export_prior(run_dir, "p", tmp_path, tolerance=0.0)  # fp16 cannot be exact: verification must fail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]
    assert (tmp_path / "p.safetensors").read_bytes() == old


def test_bad_inputs_are_one_clear_error(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no checkpoints/last.ckpt"):
        export_prior(tmp_path, "p", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nope: no such run directory"):
        export_prior(tmp_path / "nope", "p", tmp_path / "out")
    with pytest.raises(ValueError, match="invalid prior name"):
        export_prior(run_dir, "../evil", tmp_path / "out")
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_prior(run_dir, "p", tmp_path / "out", dtype="int8")
    torch.save(load_generator(run_dir / "checkpoints" / "last.ckpt").state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ExportError, match="bare.pth: not a checkpoint of a gpen-fewshot training run"):
        read_training_checkpoint(tmp_path / "bare.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="junk.ckpt: not a readable Lightning checkpoint"):
        read_training_checkpoint(tmp_path / "junk.ckpt")


def test_script_prints_sizes_hashes_and_registry_lines(run_dir: Path, tmp_path: Path, capsys) -> None:
    script = _script()
    assert script.main([str(run_dir), "--name", "gpen-compact-256", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    g_sha, d_sha = (sha256_file(tmp_path / f) for f in ("gpen-compact-256.safetensors",
                                                         "gpen-compact-256-D.safetensors"))
    size = (tmp_path / "gpen-compact-256.safetensors").stat().st_size
    assert (f'COMPACT_256_SHA256: str | None = "{g_sha}"' in out and
            f"COMPACT_256_SIZE: int | None = {size:_}" in out)
    assert f'COMPACT_256_D_SHA256: str | None = "{d_sha}"' in out and "max abs diff vs float32" in out
    assert f'WeightSpec("gpen-compact-256-D", "gpen-compact-256-D.safetensors", None, "{d_sha}"' in out
    assert "trained on UTKFace" in out and '"discriminator", "bundled"),' in out
    assert script.main([str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: no such run directory" in err[0]


def test_gpu_pretraining_script_composes_the_cpu_recipe_on_cuda(tmp_path: Path) -> None:
    import os
    import subprocess

    faces = tmp_path / "faces"
    faces.mkdir()
    script = REPO / "scripts" / "pretrain_prior_gpu.sh"
    env = {**os.environ, "GPEN_DRY_RUN": "1", "BATCH": "16"}
    proc = subprocess.run([str(script), str(tmp_path / "out"), str(faces), "--", "optim.lr_g=2e-3"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = proc.stdout
    for expected in ("accelerator: gpu", "batch_size: 16", "samples_per_epoch: 1600", "weight_lr_scale: 10.0",
                     "residual: true", "lr_g: 0.002", str(faces)):
        assert expected in cfg, expected
    missing = subprocess.run([str(script), str(tmp_path / "out"), str(tmp_path / "nope")], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "faces folder not found" in missing.stderr
