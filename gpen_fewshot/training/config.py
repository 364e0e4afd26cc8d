"""Typed parameters of a training run (filled from the Hydra groups ``model/``, ``optim/``, ``loss/``).

Hydra instantiates these frozen dataclasses at the edge (``_target_`` in each group file); the library only
ever sees them, never a ``DictConfig``. ``asdict()`` gives plain containers for checkpoints and logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gpen_fewshot.training.schedules import SCHEDULE_KINDS

InitMode = Literal["pretrained", "random", "auto"]
INIT_MODES = ("pretrained", "random", "auto")


def _pair(value: Any, name: str) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must have two values, got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelConfig:
    """Generator / discriminator architecture and where their initial weights come from.

    Attributes:
        name: preset name (logged; ``gpen_bfr_512``, ``compact_256``, ``tiny``...).
        size: face crop size in pixels (power of two).
        style_dim, n_mlp, channel_multiplier, narrow: generator constructor arguments.
        d_channel_multiplier, d_narrow: discriminator constructor arguments (random init only; pretrained
            discriminators keep the config inferred from their file).
        generator_weights: registry name (``"GPEN-BFR-512"``) or file path of the prior; ``None`` = none.
        discriminator_weights: registry name or path of the discriminator; ``None`` = random init.
        init: ``"pretrained"`` (missing weights are an error), ``"random"`` (never load) or ``"auto"``
            (load when available, otherwise random init with a loud warning).
        download: try to download registry weights that are not on disk.
        residual: residual generator (output = input + decoder output), see ``GPENGenerator``. Must match
            the weights: pretrained files carry their own layout and a mismatch is an error.
    """

    name: str
    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    narrow: float = 1.0
    d_channel_multiplier: int = 2
    d_narrow: float = 1.0
    generator_weights: str | None = None
    discriminator_weights: str | None = None
    init: InitMode = "pretrained"
    download: bool = True
    residual: bool = False

    def __post_init__(self) -> None:
        if self.init not in INIT_MODES:
            raise ValueError(f"model.init must be one of {INIT_MODES}, got {self.init!r}")
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"model.size must be a power of two >= 8, got {self.size}")

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``GPENGenerator``."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "narrow": self.narrow,
                "residual": self.residual}

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``GPENDiscriminator``."""
        return {"size": self.size, "channel_multiplier": self.d_channel_multiplier, "narrow": self.d_narrow}


@dataclass(frozen=True)
class OptimConfig:
    """Adam optimisers, learning-rate schedules, EMA and gradient clipping.

    Attributes:
        lr_g, lr_d: peak learning rates of the generator / discriminator.
        betas_g, betas_d: Adam betas.
        eps: Adam epsilon.
        schedule: ``"cosine"``, ``"constant"`` or ``"step"`` (see ``schedules.LRSchedule``).
        warmup_iters: linear warm-up length.
        eta_min: cosine floor.
        step_size, gamma: step schedule.
        group_lr_scales: per parameter group multipliers of the learning rate (``{"mapping": 0.1}``).
        weight_lr_scale: multiplier of the learning rate of weight matrices and kernels (parameters with 2+
            dimensions) over biases, gains and constants. Equalised-LR layers store N(0, 1) weights scaled at
            run time, so at one LR their relative update per Adam step is ~26x smaller than a plain conv's.
        grad_clip_g, grad_clip_d: max gradient norm; ``None`` = no clipping.
        ema_decay: generator EMA decay per iteration.
        ema_start_iter: the EMA copies the generator until this iteration.
        ema_rampup: cap the EMA half-life at this fraction of the iterations done (``None`` = fixed decay).
    """

    lr_g: float = 1e-4
    lr_d: float = 5e-5
    betas_g: tuple[float, float] = (0.0, 0.99)
    betas_d: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_iters: int = 100
    eta_min: float = 1e-6
    step_size: int = 1000
    gamma: float = 0.5
    group_lr_scales: Mapping[str, float] = field(default_factory=dict)
    weight_lr_scale: float = 1.0
    grad_clip_g: float | None = None
    grad_clip_d: float | None = None
    ema_decay: float = 0.999
    ema_start_iter: int = 0
    ema_rampup: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas_g", _pair(self.betas_g, "optim.betas_g"))
        object.__setattr__(self, "betas_d", _pair(self.betas_d, "optim.betas_d"))
        object.__setattr__(self, "group_lr_scales",
                           {str(k): float(v) for k, v in dict(self.group_lr_scales).items()})
        if not self.weight_lr_scale > 0:
            raise ValueError(f"optim.weight_lr_scale must be > 0, got {self.weight_lr_scale}")
        if self.schedule not in SCHEDULE_KINDS:
            raise ValueError(f"optim.schedule must be one of {SCHEDULE_KINDS}, got {self.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError(f"optim.ema_rampup must be > 0 or null, got {self.ema_rampup}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and regulariser settings (a weight of 0 switches a term off).

    Attributes:
        adversarial: non-saturating GAN loss weight (generator side).
        smooth_l1, smooth_l1_beta: Smooth-L1 content loss weight and transition point.
        l1: L1 content loss weight.
        feature_matching, feature_matching_norm: discriminator feature-matching weight and ``"l1"``/``"l2"``.
        lpips, lpips_random_backbone: LPIPS weight; a random AlexNet is for plumbing tests only.
        identity: weight of ``1 - cos`` between identity embeddings of the restored face and its ground truth.
        identity_reference: weight of ``1 - cos`` towards the person's reference embedding (mean over the
            run's clean training crops): pulls restorations of this person towards them. Person runs.
        face_perceptual: weight of the perceptual loss on the identity network's features (MobileFaceNet
            only; an offline stand-in for LPIPS).
        identity_network: ``"mobilefacenet"`` (bundled, offline) or ``"irse50"`` (ArcFace IR-SE50,
            downloaded).
        identity_weights: registry name or path of its weights; None = the network's registry entry.
        identity_required: missing identity weights are an error (otherwise the terms are skipped, warned).
        identity_fallback: network used instead when ``identity_network``'s weights are missing, e.g.
            ``"mobilefacenet"`` (bundled) for IR-SE50, with a warning; None = no fallback. The export records
            the network the loss actually read.
        train_discriminator: update D every iteration (false: G-only training, for content-only pretraining
            where no generator term reads D; saves ~40% of an iteration).
        r1_gamma, r1_interval: lazy R1 penalty on D every ``r1_interval`` iterations; gamma 0 = off.
        path_length, path_length_interval, path_length_decay: lazy path-length regularisation of G w.r.t. w.
    """

    adversarial: float = 1.0
    smooth_l1: float = 1.0
    smooth_l1_beta: float = 1.0
    l1: float = 0.0
    feature_matching: float = 0.02
    feature_matching_norm: Literal["l1", "l2"] = "l1"
    lpips: float = 0.0
    lpips_random_backbone: bool = False
    identity: float = 0.0
    identity_reference: float = 0.0
    face_perceptual: float = 0.0
    identity_network: str = "mobilefacenet"
    identity_weights: str | None = None
    identity_required: bool = False
    identity_fallback: str | None = None
    train_discriminator: bool = True
    r1_gamma: float = 10.0
    r1_interval: int = 16
    path_length: float = 0.0
    path_length_interval: int = 4
    path_length_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.r1_interval < 1 or self.path_length_interval < 1:
            raise ValueError("loss.r1_interval and loss.path_length_interval must be >= 1")
        if not self.train_discriminator and (self.adversarial or self.feature_matching):
            raise ValueError("loss.train_discriminator=false needs loss.adversarial=0 and "
                             "loss.feature_matching=0")
        if self.identity_network not in ("mobilefacenet", "irse50"):
            raise ValueError(f"loss.identity_network must be 'mobilefacenet' or 'irse50', got "
                             f"{self.identity_network!r}")
        if self.identity_fallback not in (None, "mobilefacenet", "irse50"):
            raise ValueError(f"loss.identity_fallback must be null, 'mobilefacenet' or 'irse50', got "
                             f"{self.identity_fallback!r}")
        if self.face_perceptual and self.identity_network != "mobilefacenet":
            raise ValueError("loss.face_perceptual needs loss.identity_network=mobilefacenet")
        if self.feature_matching_norm not in ("l1", "l2"):
            raise ValueError("loss.feature_matching_norm must be 'l1' or 'l2', got "
                             f"{self.feature_matching_norm!r}")

    @property
    def uses_identity_network(self) -> bool:
        """Whether any term needs the identity network."""
        return bool(self.identity or self.identity_reference or self.face_perceptual)


@dataclass(frozen=True)
class RunConfig:
    """Length of the run and what the module logs.

    Attributes:
        total_iters: training iterations (one G and one D update each).
        seed: seeds the module's own random draws (path-length noise) per iteration.
        num_sample_images: validation photos shown in the sample grids.
        template: face-alignment template of the data, written into the export's config.json.
        val_identity: validation also reports the dlib identity distance of restored faces to their GT.
    """

    total_iters: int = 2000
    seed: int = 0
    num_sample_images: int = 8
    template: str = "gpen"
    val_identity: bool = True

    def __post_init__(self) -> None:
        if self.total_iters < 1:
            raise ValueError(f"total_iters must be >= 1, got {self.total_iters}")


def to_plain(config: Any) -> dict[str, Any]:
    """A dataclass as a dict of plain Python values (for checkpoints, which load with ``weights_only``)."""
    return asdict(config)
