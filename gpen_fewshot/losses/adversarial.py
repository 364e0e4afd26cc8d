"""Adversarial losses and the StyleGAN2 regularisers (R1, path length) used to fine-tune GPEN.

Logits are the discriminator's raw (B, 1) outputs. All losses are means over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating discriminator loss ``softplus(-D(real)) + softplus(D(fake))`` (StyleGAN2, GPEN)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``softplus(-D(fake))``."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor) -> tuple[Tensor, Tensor]:
    """R1 gradient penalty ``E ||grad_x D(x)||^2`` on real images, computed in float32.

    Autocast is switched off so the double backward stays finite under fp16/bf16 mixed precision.

    Args:
        discriminator: callable mapping (B, 3, S, S) float images in [-1, 1] to (B, 1) logits.
        real: (B, 3, S, S) real images, RGB, [-1, 1].

    Returns:
        ``(penalty, real_logits)``: the scalar penalty (without the ``gamma / 2`` factor) and the float32
        logits of ``real``, differentiable w.r.t. the discriminator so they can also feed the logistic loss.
    """
    real = real.detach().float().requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        logits = discriminator(real).float()
        (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
        penalty = grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
    return penalty, logits


def path_length_penalty(
    fake: Tensor, latent: Tensor, mean_path_length: Tensor, decay: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """StyleGAN2 path-length regulariser w.r.t. the latent ``w`` fed to the decoder.

    Args:
        fake: (B, 3, S, S) generated images, part of a graph that depends on ``latent``.
        latent: (B, style_dim) or (B, n_latent, style_dim) latent(s) the decoder was driven by.
        mean_path_length: scalar running mean of the path lengths (not modified).
        decay: update rate of the running mean.
        generator: random generator for the image-space noise (determinism across resumes).

    Returns:
        ``(penalty, new_mean_path_length, path_lengths)``; ``new_mean`` is detached.
    """
    height, width = fake.shape[2:]
    noise = torch.randn(fake.shape, generator=generator, device=fake.device, dtype=fake.dtype)
    noise = noise / math.sqrt(height * width)
    (grad,) = torch.autograd.grad((fake * noise).sum(), latent, create_graph=True)
    squared = grad.pow(2).sum(-1)
    path_lengths = squared.mean(1).sqrt() if squared.dim() > 1 else squared.sqrt()
    new_mean = mean_path_length + decay * (path_lengths.detach().mean() - mean_path_length)
    penalty = (path_lengths - new_mean).pow(2).mean()
    return penalty, new_mean.detach(), path_lengths
