"""GPENFewShotModule: manual optimisation, logging, EMA, validation, checkpoints, export, initialisation."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gpen_fewshot import weights
from gpen_fewshot.evaluation.identity_metrics import person_reference
from gpen_fewshot.export import file_sha256, load_person
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.faces.identity import IdentityEmbedder
from gpen_fewshot.training.callbacks import IterationCheckpoint
from gpen_fewshot.training.config import LossConfig, ModelConfig
from gpen_fewshot.training.export import config_hash, export_run, trainable_generator_params
from gpen_fewshot.training.freezing import FreezingSchedule
from gpen_fewshot.training.losses_setup import build_auxiliary_losses
from gpen_fewshot.training.networks import build_networks
from gpen_fewshot.utils.image import read_image, write_image
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


def test_weight_lr_scale_splits_groups_into_weights_and_gains(make_module) -> None:
    module = make_module(optim={"weight_lr_scale": 10.0, "group_lr_scales": {"mapping": 0.5}})
    opt_g, _ = module.configure_optimizers()
    groups = {g["name"]: g for g in opt_g.param_groups}
    assert groups["encoder_weights"]["lr_scale"] == 10.0 and groups["encoder_other"]["lr_scale"] == 1.0
    assert groups["mapping_weights"]["lr_scale"] == 5.0 and groups["mapping_other"]["lr_scale"] == 0.5
    assert all(p.ndim >= 2 for name, g in groups.items() if name.endswith("_weights") for p in g["params"])
    assert all(p.ndim < 2 for name, g in groups.items() if name.endswith("_other") for p in g["params"])
    in_opt = [p for g in opt_g.param_groups for p in g["params"]]
    assert len(in_opt) == len(set(map(id, in_opt))) == len(list(module.generator.parameters()))
    with pytest.raises(ValueError, match="weight_lr_scale"):
        make_module(optim={"weight_lr_scale": 0.0})


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
    assert (module.last_sample_grid.shape == (2 * 32, 3 * 32, 3) and
            module.last_sample_grid.dtype.name == "uint8")
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


def _two_stage_module(make_module):
    """Encoder first, then the fine decoder: nothing else (mapping, coarse decoder...) is ever trained."""
    freezing = FreezingSchedule("two", [
        {"name": "enc", "start": 0, "generator": ["encoder"], "discriminator": ["all"]},
        {"name": "dec", "start": 0.5, "generator": ["decoder_fine", "to_rgb"], "discriminator": ["all"]}])
    return make_module(total_iters=4, freezing=freezing)


def test_person_export_stores_what_any_stage_trained_as_a_delta(make_module, fit, tmp_path) -> None:
    module = _two_stage_module(make_module)
    base_file = tmp_path / "base.pth"
    torch.save(module.generator.state_dict(), base_file)  # the weights the run starts from
    fit(module)
    groups = module.generator.parameter_groups()
    union = {n for g in ("encoder", "decoder_fine", "to_rgb") for n in groups[g]}
    assert trainable_generator_params(module.stages) == union  # both stages, not only the last one
    crops = [tmp_path / f"crop{i}.png" for i in range(2)]
    for i, path in enumerate(crops):
        write_image(path, np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    out = export_run(module.generator_ema, module.stages, str(base_file), tmp_path / "export", "gpen",
                     person="alice", train_crops=crops, metrics={"psnr": 21.5}, config_digest="abc")
    weights = load_person(out)
    assert weights.mode == "delta" and set(weights.stored_keys) == union
    meta = weights.metadata
    assert (meta.name, meta.n_photos, meta.base_model, meta.config_hash, meta.metrics) == (
        "alice", 2, "base", "abc", {"psnr": 21.5})
    assert meta.base_sha256 == file_sha256(base_file)
    expected = person_reference([read_image(p) for p in crops], IdentityEmbedder(template="gpen"))
    np.testing.assert_allclose(weights.reference_embedding, expected, atol=1e-6)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # load_generator reads the delta export through its base
        assert torch.allclose(load_generator(out)(x), module.generator_ema(x), atol=1e-6)


def test_export_without_a_base_or_without_a_person_is_full(make_module, tmp_path) -> None:
    module = _two_stage_module(make_module)
    person = export_run(module.generator_ema, module.stages, "random", tmp_path / "p", "gpen", person="bob")
    assert load_person(person).mode == "full" and load_person(person).metadata.base_model is None
    model = export_run(module.generator_ema, module.stages, "given", tmp_path / "m", "ffhq", name="prior_x")
    config = json.loads((model / "config.json").read_text())
    assert not (model / "person.json").exists() and config["mode"] == "full" and config["name"] == "prior_x"
    assert config["template"] == "ffhq" and config["generator"]["narrow"] == 0.125
    assert set(load_file(model / "model.safetensors")) == set(module.generator_ema.state_dict())
    for path in (person, model):
        reloaded = load_generator(path)
        assert all(torch.equal(v, reloaded.state_dict()[k])
                   for k, v in module.generator_ema.state_dict().items())
    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1}) != config_hash({"a": 1})


def test_validation_identity_uses_the_run_template(make_module) -> None:
    from gpen_fewshot.faces.identity import FACE_BOXES
    from gpen_fewshot.training.validation import ValidationAccumulator

    accumulator = ValidationAccumulator(1, dlib_identity=True, template="ffhq")
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    accumulator.update(images, images, images)
    assert accumulator._scorer.embedder.face_box == FACE_BOXES["ffhq"]
    assert accumulator.compute()["id_distance_gt"] == pytest.approx(0.0, abs=1e-6)
    assert make_module()._validation.template == "gpen"  # the module passes RunConfig.template


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
    monkeypatch.setattr(weights, "bundled_dir", lambda: tmp_path / "no_bundled")  # a broken install
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
    assert all(torch.equal(a, b)
               for a, b in zip(g.state_dict().values(), g2.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="does not match"):
        build_networks(ModelConfig(**{**TINY, "style_dim": 64},
                                   generator_weights=str(tmp_path / "prior.pth")))


def test_identity_loss_optional_required_and_present(tmp_path, caplog) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    missing = str(tmp_path / "none.pth")
    with caplog.at_level(logging.WARNING):
        assert build_auxiliary_losses(LossConfig(identity=1.0, identity_weights=missing)) == {}
    assert "identity losses disabled" in caplog.text
    with pytest.raises(FileNotFoundError):
        build_auxiliary_losses(LossConfig(identity=1.0, identity_weights=missing, identity_required=True))
    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    aux = build_auxiliary_losses(LossConfig(identity=1.0, identity_network="irse50",
                                            identity_weights=str(tmp_path / "ir.pth")))
    assert set(aux) == {"identity"} and aux["identity"].network_name == "irse50"


def test_missing_irse50_falls_back_to_the_bundled_mobilefacenet(tmp_path, caplog) -> None:
    missing = str(tmp_path / "none.pth")
    loss = LossConfig(identity=1.0, identity_network="irse50", identity_weights=missing,
                      identity_fallback="mobilefacenet")
    with caplog.at_level(logging.WARNING):
        aux = build_auxiliary_losses(loss)
    assert set(aux) == {"identity"} and aux["identity"].network_name == "mobilefacenet"
    assert "irse50 weights missing" in caplog.text and "use mobilefacenet instead" in caplog.text
    with pytest.raises(ValueError, match="identity_fallback"):
        LossConfig(identity_fallback="vgg")


def test_the_export_records_the_identity_network_that_ran(make_module, tmp_path) -> None:
    fallback = make_module(loss={"identity": 1.0, "identity_network": "irse50",
                                 "identity_weights": str(tmp_path / "none.pth"),
                                 "identity_fallback": "mobilefacenet"})
    assert fallback.identity_network_used == "mobilefacenet"
    assert make_module(loss={"identity": 1.0, "identity_weights": str(tmp_path / "none.pth")}
                       ).identity_network_used is None  # skipped: nothing to record
    assert make_module().identity_network_used is None


def test_identity_network_stays_out_of_state_dict_but_moves_with_module(make_module, tmp_path) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    module = make_module(loss={"identity": 1.0, "identity_network": "irse50",
                               "identity_weights": str(tmp_path / "ir.pth")})
    assert not any(k.startswith("_aux") or "input_layer" in k for k in module.state_dict())
    module.to(torch.float64)
    assert next(module._aux["identity"].parameters()).dtype == torch.float64


def test_optional_losses_enter_the_generator_loss(make_module, fit, tmp_path) -> None:
    from gpen_fewshot.losses.identity import IRSE50

    torch.save(IRSE50().state_dict(), tmp_path / "ir.pth")
    module = make_module(total_iters=1, loss={"identity": 1.0, "identity_network": "irse50",
                                              "identity_weights": str(tmp_path / "ir.pth"),
                                              "lpips": 1.0, "lpips_random_backbone": True, "l1": 1.0})
    trainer = fit(module)
    for key in ("train/g_identity", "train/g_lpips", "train/g_l1"):
        assert key in trainer.callback_metrics and torch.isfinite(trainer.callback_metrics[key]), key


def test_mobilefacenet_terms_and_reference_pull(make_module, fit, tmp_path) -> None:
    """The bundled MobileFaceNet drives identity (GT), face-perceptual and reference-embedding terms."""
    import numpy as np

    from gpen_fewshot.training.losses_setup import reference_embedding
    from gpen_fewshot.utils.image import write_image

    module = make_module(total_iters=1, loss={"identity": 1.0, "face_perceptual": 0.5, "l1": 1.0})
    crops = []
    for i in range(3):
        crops.append(str(tmp_path / f"c{i}.png"))
        write_image(crops[-1], np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    module.reference_embedding = reference_embedding(module._aux["identity"].encoder, crops, 32)
    assert module.reference_embedding.shape == (128,)
    assert float(module.reference_embedding.norm()) == pytest.approx(1.0, abs=1e-5)
    module.loss_config = dataclasses.replace(module.loss_config, identity_reference=1.0)
    trainer = fit(module)
    for key in ("train/g_identity", "train/g_face_perceptual", "train/g_identity_ref"):
        assert key in trainer.callback_metrics and torch.isfinite(trainer.callback_metrics[key]), key


def test_reference_term_is_off_with_a_warning_without_a_person(make_module, fit, caplog) -> None:
    """The default recipe has a reference-identity term; synthetic data (no person) trains without it."""
    module = make_module(total_iters=1, loss={"identity": 1.0, "identity_reference": 0.5, "l1": 1.0})
    with caplog.at_level("WARNING", logger="gpen_fewshot.training.module"):
        trainer = fit(module)
    assert module.reference_embedding is None and module.iteration == 1
    assert "train/g_identity" in trainer.callback_metrics and "train/g_identity_ref" not in trainer.callback_metrics
    assert "identity_reference=0.5 is off in this run" in caplog.text


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
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    data = SyntheticDataModule(size=32, samples_per_epoch=64, val_samples=4)
    trainer.validate(module, data, verbose=False)
    before = float(trainer.callback_metrics["val/psnr"])
    trainer.fit(module, data)
    assert float(trainer.callback_metrics["val/psnr"]) > before + 3.0
