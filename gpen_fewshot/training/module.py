"""LightningModule fine-tuning GPEN on one person: manual GAN optimisation, staged freezing, generator EMA.

One training iteration = one generator update then one discriminator update (``automatic_optimization`` is
off, each optimiser steps exactly once). The module counts iterations itself (``self.iteration``, saved in
checkpoints): learning rates, the freezing stage, lazy regularisation and the EMA are functions of it, so a
resumed run continues exactly where it stopped.

Attribute names ``generator``, ``generator_ema`` and ``discriminator`` are part of the checkpoint format
(``gpen_fewshot.archs.checkpoints`` strips these prefixes).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
from gpen_fewshot.losses import (
    content_loss,
    d_logistic_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    r1_penalty,
)
from gpen_fewshot.training.config import LossConfig, ModelConfig, OptimConfig, RunConfig, to_plain
from gpen_fewshot.training.ema import ema_decay_at, make_ema_copy, update_ema
from gpen_fewshot.training.freezing import FreezingSchedule, ResolvedStage, set_trainable, stage_at
from gpen_fewshot.training.losses_setup import build_auxiliary_losses, reference_embedding
from gpen_fewshot.training.networks import NetworkSources, build_networks
from gpen_fewshot.training.schedules import LRSchedule, apply_lr
from gpen_fewshot.training.validation import ValidationAccumulator

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "gpen_fewshot"


class GPENFewShotModule(pl.LightningModule):
    """GPEN generator + discriminator trained with manual optimisation.

    Batches are dicts ``{"lq": (B, 3, S, S), "gt": (B, 3, S, S), ...}``, RGB float in [-1, 1].
    """

    def __init__(self, model: ModelConfig, optim: OptimConfig, loss: LossConfig, freezing: FreezingSchedule,
                 run: RunConfig, networks: tuple[GPENGenerator, GPENDiscriminator] | None = None) -> None:
        """Build (or take) the networks and resolve the freezing schedule.

        Args:
            model: architecture and initial weights (ignored for building when ``networks`` is given).
            optim: optimisers, schedules, EMA.
            loss: loss weights and regularisers.
            freezing: staged freezing schedule.
            run: iterations, seed, sample count, template.
            networks: ready ``(generator, discriminator)`` (tests); built from ``model`` when ``None``.
        """
        super().__init__()
        self.automatic_optimization = False
        self.model_config, self.optim_config, self.loss_config, self.run_config = model, optim, loss, run
        if networks is None:
            generator, discriminator, self.sources = build_networks(model)
        else:
            (generator, discriminator), self.sources = networks, NetworkSources("given", "given")
        self.generator = generator
        self.generator_ema = make_ema_copy(generator)
        self.discriminator = discriminator
        self.freezing = freezing
        self.stages: list[ResolvedStage] = freezing.resolve(
            run.total_iters, generator.parameter_groups(), discriminator.parameter_groups())
        self.iteration = 0
        self.in_iteration = False  # True while the weights are between a G and a D update
        self.active_stage: ResolvedStage | None = None
        self.register_buffer("mean_path_length", torch.zeros(()))
        # Loss networks are frozen helpers: kept out of the state dict (and so out of checkpoints and DDP).
        self._aux: dict[str, nn.Module] = build_auxiliary_losses(loss, template=run.template)
        # person's mean identity embedding (identity_reference)
        self.reference_embedding: Tensor | None = None
        self._validation = ValidationAccumulator(run.num_sample_images, self._aux.get("identity"),
                                                 run.val_identity, run.template)
        self.last_sample_grid: Any = None
        self.save_hyperparameters({"model": to_plain(model), "optim": to_plain(optim), "loss": to_plain(loss),
                                   "freezing": to_plain(freezing), "run": to_plain(run)})

    # ------------------------------------------------------------------ plumbing
    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> GPENFewShotModule:
        super()._apply(fn, *args, **kwargs)
        for net in self._aux.values():  # move the unregistered loss networks along (device / dtype)
            net._apply(fn, *args, **kwargs)
        return self

    @property
    def identity_network_used(self) -> str | None:
        """The identity network the loss terms read (its fallback when the configured one was missing);
        None when no identity term is on or the network was unavailable."""
        identity = self._aux.get("identity")
        return identity.network_name if identity is not None else None

    def forward(self, lq: Tensor) -> Tensor:
        """Restore with the EMA generator: (B, 3, S, S) [-1, 1] -> same."""
        return self.generator_ema(lq)

    def schedules(self) -> tuple[LRSchedule, LRSchedule]:
        """Learning-rate schedules of the generator and the discriminator."""
        o, total = self.optim_config, self.run_config.total_iters
        common = {"total_iters": total, "kind": o.schedule, "warmup_iters": o.warmup_iters,
                  "eta_min": o.eta_min, "step_size": o.step_size, "gamma": o.gamma}
        return LRSchedule(o.lr_g, **common), LRSchedule(o.lr_d, **common)

    def _param_groups(self, net: nn.Module, groups: dict[str, list[str]]) -> list[dict[str, Any]]:
        params = dict(net.named_parameters())
        grouped = {n for names in groups.values() for n in names}
        missing = sorted(set(params) - grouped)
        if missing:
            raise ValueError(f"parameters in no parameter group: {missing[:5]}")
        scales, weight_scale = self.optim_config.group_lr_scales, self.optim_config.weight_lr_scale
        if weight_scale == 1.0:
            return [{"params": [params[n] for n in names], "name": name, "lr_scale": scales.get(name, 1.0)}
                    for name, names in groups.items() if names]
        out = []  # each group split into its weights (2+ dims, scaled) and the rest
        for name, names in groups.items():
            for suffix, scale, picked in (("weights", weight_scale,
                                           [n for n in names if params[n].ndim >= 2]),
                                          ("other", 1.0, [n for n in names if params[n].ndim < 2])):
                if picked:
                    out.append({"params": [params[n] for n in picked], "name": f"{name}_{suffix}",
                                "lr_scale": scales.get(name, 1.0) * scale})
        return out

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam over ALL parameters (grouped); frozen ones never get a gradient, so Adam never touches
        them."""
        o = self.optim_config
        opt_g = torch.optim.Adam(self._param_groups(self.generator, self.generator.parameter_groups()),
                                 lr=o.lr_g, betas=o.betas_g, eps=o.eps)
        opt_d = torch.optim.Adam(self._param_groups(self.discriminator,
                                                    self.discriminator.parameter_groups()),
                                 lr=o.lr_d, betas=o.betas_d, eps=o.eps)
        return [opt_g, opt_d]

    # ------------------------------------------------------------------ iteration state
    def apply_stage(self, iteration: int) -> ResolvedStage:
        """Freeze / unfreeze per the stage active at ``iteration`` (no-op when it is already active)."""
        stage = stage_at(self.stages, iteration)
        if self.active_stage is None or stage.index != self.active_stage.index:
            g_on, g_off = set_trainable(self.generator, stage.generator_params)
            d_on, d_off = set_trainable(self.discriminator, stage.discriminator_params)
            log.info("iteration %d: stage %r: G %d trainable / %d frozen, D %d trainable / %d frozen",
                     iteration, stage.name, g_on, g_off, d_on, d_off)
            self.active_stage = stage
        return stage

    def _begin_iteration(self) -> tuple[float, float]:
        self.apply_stage(self.iteration)
        lrs = tuple(s.lr_at(self.iteration) for s in self.schedules())
        for opt, lr in zip(self.optimizers(), lrs, strict=True):
            apply_lr(opt.optimizer, lr)
        return lrs  # type: ignore[return-value]

    def _step_generator_seed(self) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.run_config.seed * 1_000_003 + self.iteration)
        return generator

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """A resumed run that is already complete stops before any update; the reference embedding is made."""
        if self.iteration >= self.run_config.total_iters:
            self.trainer.should_stop = True
        if (self.loss_config.identity_reference and "identity" in self._aux and
                self.reference_embedding is None):
            datamodule = getattr(self.trainer, "datamodule", None)
            crops = getattr(getattr(datamodule, "train_set", None), "paths", None)
            if not crops or not getattr(datamodule, "holds_one_person", False):
                # no person (synthetic data, a pretraining faces folder): the default recipe still runs
                log.warning("loss.identity_reference=%s is off in this run: it needs one person's training "
                            "crops (person runs)", self.loss_config.identity_reference)
                return
            self.reference_embedding = reference_embedding(self._aux["identity"].encoder, crops,
                                                           self.model_config.size).to(self.device)
            log.info("identity reference: mean %s embedding of %d training crops",
                     self.identity_network_used, len(crops))  # the fallback when the configured one is missing

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One G update and one D update on ``batch``; logs losses, learning rates and the stage."""
        if self.iteration >= self.run_config.total_iters:  # complete (resumed after the end): no update
            self.trainer.should_stop = True
            return
        self.in_iteration = True
        lr_g, lr_d = self._begin_iteration()
        opt_g, opt_d = self.optimizers()
        fake, g_logs = self._generator_step(opt_g, batch["lq"], batch["gt"])
        d_logs = (self._discriminator_step(opt_d, fake.detach(), batch["gt"])
                  if self.loss_config.train_discriminator else {})
        optim = self.optim_config
        decay = ema_decay_at(self.iteration, optim.ema_decay, optim.ema_start_iter, optim.ema_rampup)
        update_ema(self.generator_ema, self.generator, decay)
        self.iteration += 1
        self.in_iteration = False
        self._log_iteration(g_logs, d_logs, lr_g, lr_d, batch["gt"].shape[0])
        if self.iteration >= self.run_config.total_iters:
            self.trainer.should_stop = True

    def _restore(self, lq: Tensor, need_latent: bool) -> tuple[Tensor, Tensor | None]:
        if not need_latent:
            return self.generator(lq), None
        z, features = self.generator.encode(lq)
        w = self.generator.mapping(z)
        if not w.requires_grad:  # encoder and mapping frozen: regularise w.r.t. a leaf copy
            w = w.detach().requires_grad_(True)
        return self.generator.decode(w, features), w

    def _generator_step(self, opt: Any, lq: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.loss_config
        regularise = cfg.path_length > 0 and self.iteration % cfg.path_length_interval == 0
        with self.toggled_optimizer(opt):
            fake, w = self._restore(lq, regularise)
            total, logs = self._generator_losses(fake, gt)
            if regularise:
                penalty, new_mean, lengths = path_length_penalty(
                    fake, w, self.mean_path_length, cfg.path_length_decay, self._step_generator_seed())
                self.mean_path_length.copy_(new_mean)
                total = total + cfg.path_length * cfg.path_length_interval * penalty
                logs["path_length"] = lengths.mean().detach()
            logs["g_total"] = total.detach()
            self._backward_and_step(opt, total, self.optim_config.grad_clip_g)
        return fake, logs

    def _generator_losses(self, fake: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.loss_config
        total, parts = content_loss(fake, gt, cfg.smooth_l1, cfg.l1, cfg.smooth_l1_beta)
        if cfg.adversarial or cfg.feature_matching:
            logits, fake_features = self.discriminator(fake, return_features=True)
        logs = {f"g_{k}": v.detach() for k, v in parts.items()}
        terms: dict[str, tuple[float, Any]] = {
            "g_adv": (cfg.adversarial, lambda: g_nonsaturating_loss(logits)),
            "g_fm": (cfg.feature_matching, lambda: self._feature_matching(gt, fake_features)),
        }
        for key, net in self._aux.items():  # lpips / identity / face_perceptual: when enabled and available
            terms[f"g_{key}"] = (getattr(cfg, key), functools.partial(net, fake, gt))
        if self.reference_embedding is not None:
            terms["g_identity_ref"] = (cfg.identity_reference, functools.partial(
                self._aux["identity"].to_embedding, fake, self.reference_embedding))
        for name, (weight, compute) in terms.items():
            if weight:
                value = compute()
                total = total + weight * value
                logs[name] = value.detach()
        return total, logs

    def _feature_matching(self, gt: Tensor, fake_features: list[Tensor]) -> Tensor:
        with torch.no_grad():
            _, real_features = self.discriminator(gt, return_features=True)
        return feature_matching_loss(real_features, fake_features, self.loss_config.feature_matching_norm)

    def _discriminator_step(self, opt: Any, fake: Tensor, gt: Tensor) -> dict[str, Tensor]:
        cfg = self.loss_config
        regularise = cfg.r1_gamma > 0 and self.iteration % cfg.r1_interval == 0
        with self.toggled_optimizer(opt):
            fake_logits = self.discriminator(fake)
            if regularise:
                penalty, real_logits = r1_penalty(self.discriminator, gt)
            else:
                real_logits = self.discriminator(gt)
            total = d_logistic_loss(real_logits.float(), fake_logits.float())
            logs = {"d_loss": total.detach(), "d_real": real_logits.detach().mean(),
                    "d_fake": fake_logits.detach().mean()}
            if regularise:
                total = total + cfg.r1_gamma / 2 * cfg.r1_interval * penalty
                logs["d_r1"] = penalty.detach()
            self._backward_and_step(opt, total, self.optim_config.grad_clip_d)
        return logs

    def _backward_and_step(self, opt: Any, loss: Tensor, clip: float | None) -> None:
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # everything frozen: nothing to differentiate, the step is a no-op
            self.manual_backward(loss)
            if clip is not None:
                self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt.step()

    def _log_iteration(self, g_logs: dict[str, Tensor], d_logs: dict[str, Tensor], lr_g: float, lr_d: float,
                       batch_size: int) -> None:
        logs = {f"train/{k}": v for k, v in {**g_logs, **d_logs}.items()}
        self.log_dict(logs, prog_bar=False, on_step=True, batch_size=batch_size)
        bar = {"g": g_logs["g_total"], **({"d": d_logs["d_loss"]} if "d_loss" in d_logs else {})}
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=batch_size)
        assert self.active_stage is not None
        scalars = {"train/iteration": float(self.iteration), "train/stage": float(self.active_stage.index),
                   "lr/generator": lr_g, "lr/discriminator": lr_d}
        for opt, prefix in zip(self.optimizers(), ("lr/g_", "lr/d_"), strict=True):
            scalars.update({prefix + g["name"]: g["lr"] for g in opt.optimizer.param_groups})
        self.log_dict(scalars, on_step=True, batch_size=batch_size)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        """Start collecting metrics and sample images."""
        self._validation.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Restore the validation photos with the EMA generator and accumulate metrics."""
        restored = self.generator_ema(batch["lq"])
        self._validation.update(batch["lq"], restored, batch["gt"], batch.get("degradation"))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/psnr``, ``val/ssim`` (+ ``val/identity``) and keep the sample grid for the callbacks."""
        # per-degradation means only on one process: DDP ranks may see different groups (sync would hang)
        metrics = self._validation.compute(per_group=self.trainer.world_size == 1)
        if metrics:
            self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True,
                          batch_size=self._validation.count)
        self.last_sample_grid = self._validation.grid()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the iteration counter, the active stage and plain copies of the configs."""
        checkpoint[CHECKPOINT_KEY] = {
            "iteration": self.iteration,
            "stage": self.active_stage.name if self.active_stage else None,
            "generator_config": self.generator.config.asdict(),
            "discriminator_config": self.discriminator.config.asdict(),
            "template": self.run_config.template,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the iteration counter; the stage is re-derived from it at the next iteration."""
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            raise ValueError("checkpoint was not written by GPENFewShotModule (no 'gpen_fewshot' entry)")
        self.iteration = int(state["iteration"])
        self.active_stage = None
