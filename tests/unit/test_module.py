"""GPENFewShotModule: manual optimisation, logging, EMA, validation, checkpoints, export, initialisation."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from gpen_fewshot.archs.checkpoints import load_generator
from gpen_fewshot.training.callbacks import IterationCheckpoint
from gpen_fewshot.training.config import LossConfig, ModelConfig
from gpen_fewshot.training.export import export_generator
from gpen_fewshot.training.losses_setup import build_auxiliary_losses
from gpen_fewshot.training.networks import build_networks
from gpen_fewshot.weights import WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TINY = {"name": "tiny", "size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125,
        "d_channel_multiplier": 1, "d_narrow": 0.125}


def test_optimisers_cover_every_parameter_once(make_module) -> None:
    module = make_module()
    opt_g, opt_d = module.configure_optimizers()
    for net, opt in ((module.generator, opt_g), (module.discriminator, opt_d)):
        in_opt = [p for group in opt.param_groups for p in group["params"]]
        assert len(in_opt) == len(set(map(id, in_opt))) == len(list(net.parameters()))
    assert {g["name"] for g in opt_g.param_groups} >= {"encoder", "mapping", "noise", "to_rgb"}


def test_training_iterations_logging_and_ema(make_module, fit, tmp_path) -> None:
    module = make_module(total_iters=4, loss={"path_length": 2.0, "path_length_interval": 2},
                         optim={"ema_decay": 0.5, "grad_clip_g": 1.0, "grad_clip_d": 1.0})
    trainer = fit(module, val_every=2, callbacks=[IterationCheckpoint(tmp_path / "ckpt", every_n_iters=2)])
    assert module.iteration == 4
    assert trainer.global_step == 8  # one G and one D optimiser step per iteration
    logged = trainer.callback_metrics
    for key in ("train/g_adv", "train/g_smooth_l1", "train/g_fm", "train/d_loss", "train/path_length",
                "lr/generator", "lr/g_encoder", "lr/d_d_head", "train/stage", "val/psnr", "val/ssim",
                "val/id_distance_gt"):
        assert key in logged and torch.isfinite(logged[key]), key
    assert logged["lr/generator"].item() == pytest.approx(module.schedules()[0].lr_at(3))
    assert module.mean_path_length.item() > 0
    g, ema = module.generator.state_dict(), module.generator_ema.state_dict()
    name = module.generator.parameter_groups()["encoder"][0]
    assert not torch.equal(g[name], ema[name])  # the EMA lags behind
    assert module.last_sample_grid.shape == (2 * 32, 3 * 32, 3) and module.last_sample_grid.dtype.name == "uint8"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file() and (tmp_path / "ckpt" / "best.ckpt").is_file()


def test_checkpoint_format_and_loading_by_weights_loader(make_module, fit, tmp_path) -> None:
    module = make_module(total_iters=2)
    fit(module, callbacks=[IterationCheckpoint(tmp_path, every_n_iters=0, monitor=None)])
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain containers only
    assert ckpt["gpen_fewshot"]["iteration"] == 2
    assert ckpt["gpen_fewshot"]["generator_config"]["size"] == 32
    prefixes = {k.split(".")[0] for k in ckpt["state_dict"]}
    assert prefixes == {"generator", "generator_ema", "discriminator", "mean_path_length"}
    loaded = load_generator(tmp_path / "last.ckpt")  # the WEIGHTS loader picks generator_ema
    for name, value in module.generator_ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_export(make_module, tmp_path) -> None:
    module = make_module()
    path = export_generator(module.generator_ema, tmp_path / "export", "gpen", extra={"person": "x"})
    tensors = load_file(path)
    assert set(tensors) == set(module.generator_ema.state_dict())
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["generator"]["narrow"] == 0.125 and config["template"] == "gpen" and config["size"] == 32
    reloaded = load_generator(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(reloaded(x), module.generator_ema(x), atol=1e-6)


def test_bf16_autocast_training_stays_finite(make_module, tmp_path) -> None:
    import pytorch_lightning as pl

    from gpen_fewshot.training.synthetic import SyntheticDataModule

    module = make_module(total_iters=2, loss={"r1_interval": 1})
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=-1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(module, SyntheticDataModule(size=32))
    assert torch.isfinite(trainer.callback_metrics["train/d_r1"])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_init_random_auto_and_pretrained(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("GPEN_FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    g, d, sources = build_networks(ModelConfig(**TINY, init="random"))
    assert sources.generator == "random" and g.config.size == 32
    with caplog.at_level(logging.WARNING):
        _, _, sources = build_networks(ModelConfig(**TINY, generator_weights="gpen-compact-256", init="auto"))
    assert sources.generator == "random" and "RANDOM INITIALISATION" in caplog.text
    released = ModelConfig(name="gpen_bfr_512", size=512, generator_weights="GPEN-BFR-512", init="pretrained",
                           download=False)
    with pytest.raises(WeightsUnavailableError, match="GPEN-BFR-512.pth"):
        build_networks(released)
    torch.save(g.state_dict(), tmp_path / "prior.pth")
    g2, _, sources = build_networks(ModelConfig(**TINY, generator_weights=str(tmp_path / "prior.pth")))
    assert sources.generator == str(tmp_path / "prior.pth")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="does not match"):
        build_networks(ModelConfig(**{**TINY, "style_dim": 64}, generator_weights=str(tmp_path / "prior.pth")))


def test_identity_loss_optional_required_and_present(tmp_path, caplog) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    missing = str(tmp_path / "none.pth")
    with caplog.at_level(logging.WARNING):
        assert build_auxiliary_losses(LossConfig(identity=1.0, identity_weights=missing)) == {}
    assert "identity loss disabled" in caplog.text
    with pytest.raises(FileNotFoundError):
        build_auxiliary_losses(LossConfig(identity=1.0, identity_weights=missing, identity_required=True))
    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    aux = build_auxiliary_losses(LossConfig(identity=1.0, identity_weights=str(tmp_path / "ir.pth")))
    assert set(aux) == {"identity"}


def test_identity_network_stays_out_of_state_dict_but_moves_with_module(make_module, tmp_path) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    module = make_module(loss={"identity": 1.0, "identity_weights": str(tmp_path / "ir.pth")})
    assert not any(k.startswith("_aux") or "input_layer" in k for k in module.state_dict())
    module.to(torch.float64)
    assert next(module._aux["identity"].parameters()).dtype == torch.float64


def test_optional_losses_enter_the_generator_loss(make_module, fit, tmp_path) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    module = make_module(total_iters=1, loss={"identity": 1.0, "identity_weights": str(tmp_path / "ir.pth"),
                                              "lpips": 1.0, "lpips_random_backbone": True, "l1": 1.0})
    trainer = fit(module)
    for key in ("train/g_identity", "train/g_lpips", "train/g_l1"):
        assert key in trainer.callback_metrics and torch.isfinite(trainer.callback_metrics[key]), key


def test_sample_grid_goes_to_png_and_loggers(tmp_path) -> None:
    import numpy as np
    from PIL import Image
    from pytorch_lightning.loggers import TensorBoardLogger

    from gpen_fewshot.training.callbacks import SampleGrid, _log_image

    grid = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    _log_image(logger, grid, step=7)
    logger.experiment.flush()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    class _Trainer:
        sanity_checking, is_global_zero, loggers = False, True, [logger]

    class _Module:
        iteration, last_sample_grid = 12, grid

    callback = SampleGrid(tmp_path / "samples")
    callback.on_validation_end(_Trainer(), _Module())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "samples" / "iter_000012.png")), grid)


def test_training_actually_learns(make_module, tmp_path) -> None:
    """Content loss only, everything trainable: validation PSNR of the EMA generator rises clearly."""
    import pytorch_lightning as pl

    from gpen_fewshot.training.synthetic import SyntheticDataModule

    module = make_module(total_iters=50, loss={"adversarial": 0.0, "feature_matching": 0.0},
                         optim={"lr_g": 2e-3, "warmup_iters": 5, "ema_decay": 0.9})
    trainer = pl.Trainer(accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False,
                         val_check_interval=50, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    data = SyntheticDataModule(size=32, samples_per_epoch=64, val_samples=4)
    trainer.validate(module, data, verbose=False)
    before = float(trainer.callback_metrics["val/psnr"])
    trainer.fit(module, data)
    assert float(trainer.callback_metrics["val/psnr"]) > before + 3.0
