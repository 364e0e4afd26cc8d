"""Parameter dataclasses of the degradation models, the named presets, and dict <-> config conversion.

Every number a degradation uses lives here (nothing is hard-coded in the pipelines). The YAML files in
``configs/degradation/`` mirror :data:`PRESETS` field by field (a unit test checks that they are equal).

Units: noise levels are on the 0-255 scale (``sigma / 255`` is applied to [0, 1] images); JPEG qualities are
OpenCV qualities (1-100); angles are degrees; interpolations are names from :data:`INTERPOLATIONS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_range(name: str, value: tuple, low: float | None = None, high: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value}")
    if (low is not None and value[0] < low) or (high is not None and value[1] > high):
        raise ValueError(f"{name} must lie within [{low}, {high}], got {value}")


def _check_interpolations(name: str, values: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in INTERPOLATIONS]
    if not values or bad:
        raise ValueError(f"{name} must be a non-empty list of {INTERPOLATIONS}, got {values}")


@dataclass(frozen=True)
class BSRGANConfig:
    """BSRGAN random degradation (Zhang et al. 2021); the defaults are the published numbers.

    The published model at ``sf=4`` is the default. Ranges that depend on the scale factor are written as
    ``base + per_sf * sf`` (the paper's formulas) so that ``sf`` alone moves the whole model.
    """

    kind: ClassVar[str] = "bsrgan"

    sf: int = 4
    scale: int = 1
    shuffle: bool = True
    blur_kernel_size_range: tuple[int, int] = (7, 25)
    aniso_prob: float = 0.5
    aniso_eigen_base: float = 4.0
    aniso_eigen_per_sf: float = 1.0
    iso_sigma_base: float = 2.0
    iso_sigma_per_sf: float = 0.2
    half_downscale_prob: float = 0.25
    random_resize_prob: float = 0.75
    random_resize_max_factor: float = 2.0
    shifted_blur_kernel_size: int = 25
    shifted_blur_sigma_min: float = 0.1
    shifted_blur_sigma_per_sf: float = 0.6
    downsample_interpolations: tuple[str, ...] = ("bilinear", "bicubic", "area")
    noise_prob: float = 1.0
    noise_level_range: tuple[float, float] = (2.0, 25.0)
    noise_gray_prob: float = 0.4
    noise_color_prob: float = 0.4
    jpeg_prob: float = 0.9
    jpeg_quality_range: tuple[int, int] = (30, 95)
    final_jpeg: bool = True
    upsample_interpolations: tuple[str, ...] = ("bilinear", "bicubic")

    def __post_init__(self) -> None:
        _check_positive_int("sf", self.sf)
        _check_positive_int("scale", self.scale)
        _check_range("blur_kernel_size_range", self.blur_kernel_size_range, low=1)
        if self.blur_kernel_size_range[0] % 2 == 0 or self.blur_kernel_size_range[1] % 2 == 0:
            raise ValueError(f"blur_kernel_size_range must hold odd sizes, got {self.blur_kernel_size_range}")
        if self.shifted_blur_kernel_size < 1 or self.shifted_blur_kernel_size % 2 == 0:
            raise ValueError(f"shifted_blur_kernel_size must be odd, got {self.shifted_blur_kernel_size}")
        for name in (
            "aniso_prob",
            "half_downscale_prob",
            "random_resize_prob",
            "noise_prob",
            "jpeg_prob",
            "noise_gray_prob",
            "noise_color_prob",
        ):
            _check_prob(name, getattr(self, name))
        if self.noise_gray_prob + self.noise_color_prob > 1.0:
            raise ValueError("noise_gray_prob + noise_color_prob must be <= 1 (the rest is correlated noise)")
        if self.random_resize_max_factor <= 0:
            raise ValueError(f"random_resize_max_factor must be > 0, got {self.random_resize_max_factor}")
        _check_range("noise_level_range", self.noise_level_range, low=0)
        _check_range("jpeg_quality_range", self.jpeg_quality_range, low=1, high=100)
        _check_interpolations("downsample_interpolations", self.downsample_interpolations)
        _check_interpolations("upsample_interpolations", self.upsample_interpolations)


@dataclass(frozen=True)
class FirstOrderConfig:
    """The first-order GFPGAN-style pipeline of GPEN's released trainer (GPEN_REFERENCE.md section 4).

    Order: optional grayscale (of the ground truth too) -> blur -> downscale -> noise -> JPEG -> round ->
    resize back. The horizontal flip of the reference lives in :mod:`gpen_fewshot.data.augment`.
    """

    kind: ClassVar[str] = "first_order"

    scale: int = 1
    gray_prob: float = 0.2
    kernel_size: int = 41
    aniso_prob: float = 0.5
    blur_sigma_range: tuple[float, float] = (0.1, 10.0)
    rotation_deg_range: tuple[float, float] = (-180.0, 180.0)
    downscale_range: tuple[float, float] = (0.8, 8.0)
    downscale_interpolation: str = "bilinear"
    noise_range: tuple[float, float] = (0.0, 20.0)
    noise_gray_prob: float = 0.0
    jpeg_range: tuple[int, int] = (60, 100)
    upsample_interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _check_positive_int("scale", self.scale)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        for name in ("gray_prob", "aniso_prob", "noise_gray_prob"):
            _check_prob(name, getattr(self, name))
        _check_range("blur_sigma_range", self.blur_sigma_range, low=0)
        _check_range("rotation_deg_range", self.rotation_deg_range)
        _check_range("downscale_range", self.downscale_range, low=1e-3)
        _check_range("noise_range", self.noise_range, low=0)
        _check_range("jpeg_range", self.jpeg_range, low=1, high=100)
        _check_interpolations("downscale_interpolation", (self.downscale_interpolation,))
        _check_interpolations("upsample_interpolation", (self.upsample_interpolation,))


@dataclass(frozen=True)
class NoDegradation:
    """No degradation: the low-quality image is the clean one (downscaled when ``scale`` > 1)."""

    kind: ClassVar[str] = "none"

    scale: int = 1
    interpolation: str = "area"

    def __post_init__(self) -> None:
        _check_positive_int("scale", self.scale)
        _check_interpolations("interpolation", (self.interpolation,))


@dataclass(frozen=True)
class MixtureConfig:
    """A random choice among presets per sample: ``presets[i]`` with probability ``weights[i] / sum``.

    Used to pretrain priors on every level users restore (and a little "none", so that clean inputs are
    left alone). Every preset is applied at the mixture's ``scale`` (output size = input / scale).
    """

    kind: ClassVar[str] = "mixture"

    presets: tuple[str, ...] = ("none", "mild", "moderate", "severe")
    weights: tuple[float, ...] = (0.05, 0.25, 0.4, 0.3)
    scale: int = 1

    def __post_init__(self) -> None:
        _check_positive_int("scale", self.scale)
        if not self.presets or len(self.presets) != len(self.weights):
            raise ValueError(f"mixture: {len(self.presets)} presets but {len(self.weights)} weights")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {self.weights}")
        for name in self.presets:
            if name not in PRESETS:
                raise ValueError(f"mixture: unknown preset {name!r}; known: {sorted(PRESETS)}")


DegradationConfig = BSRGANConfig | FirstOrderConfig | NoDegradation | MixtureConfig
CONFIG_CLASSES: dict[str, type] = {
    cls.kind: cls for cls in (BSRGANConfig, FirstOrderConfig, NoDegradation, MixtureConfig)}

# Monotone in every knob: sf, blur strength, noise level, JPEG quality, probability of the extra x1/2.
PRESETS: dict[str, DegradationConfig] = {
    "none": NoDegradation(),
    "mild": BSRGANConfig(
        sf=1,
        blur_kernel_size_range=(7, 11),
        aniso_eigen_base=0.3,
        aniso_eigen_per_sf=0.3,
        iso_sigma_base=0.4,
        iso_sigma_per_sf=0.1,
        half_downscale_prob=0.0,
        random_resize_max_factor=2.0,
        noise_prob=0.5,
        noise_level_range=(1.0, 6.0),
        jpeg_prob=0.5,
        jpeg_quality_range=(70, 95),
    ),
    "moderate": BSRGANConfig(
        sf=2,
        blur_kernel_size_range=(7, 15),
        aniso_eigen_base=0.5,
        aniso_eigen_per_sf=1.0,
        iso_sigma_base=0.8,
        iso_sigma_per_sf=0.2,
        half_downscale_prob=0.0,
        random_resize_max_factor=1.5,
        noise_prob=0.8,
        noise_level_range=(2.0, 15.0),
        jpeg_prob=0.7,
        jpeg_quality_range=(45, 90),
    ),
    "severe": BSRGANConfig(),  # the published sf=4 model
    "bsrgan": BSRGANConfig(),  # alias of "severe", named after the paper
    "first_order": FirstOrderConfig(),
}
PRESETS["mixture"] = MixtureConfig()  # after the presets it draws from (its check looks them up)


def get_preset(name: str) -> DegradationConfig:
    """The preset config called ``name`` (one of :data:`PRESETS`).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown degradation preset {name!r}; known: {sorted(PRESETS)}") from None


def config_to_dict(config: DegradationConfig) -> dict[str, Any]:
    """Plain dict (``kind`` first, tuples as lists) of a config, e.g. for YAML/JSON."""
    out: dict[str, Any] = {"kind": config.kind}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(data: Mapping[str, Any]) -> DegradationConfig:
    """Build a config from a mapping with a ``kind`` key (``bsrgan`` | ``first_order`` | ``none`` |
    ``mixture``).

    Lists become tuples; a key ``preset`` starts from that preset and the other keys override it.

    Raises:
        ValueError: unknown kind or unknown field names (all of them are listed).
    """
    data = dict(data)
    base = get_preset(str(data.pop("preset"))) if "preset" in data else None
    kind = str(data.pop("kind", base.kind if base is not None else "bsrgan"))
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"unknown degradation kind {kind!r}; known: {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {kind} degradation field(s) {unknown}; valid: {sorted(names)}")
    # any sequence (list from YAML, ListConfig from Hydra) becomes a tuple; strings stay strings
    values = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in data.items()
    }
    if base is not None:
        if base.kind != kind:
            raise ValueError(f"preset {base!r} is a {base.kind} config, not {kind}")
        return dataclasses.replace(base, **values)
    return cls(**values)


def resolve_config(spec: str | Mapping[str, Any] | DegradationConfig) -> DegradationConfig:
    """Accept a preset name, a mapping (e.g. from Hydra) or a config dataclass; return the dataclass."""
    if isinstance(spec, (BSRGANConfig, FirstOrderConfig, NoDegradation, MixtureConfig)):
        return spec
    if isinstance(spec, str):
        return get_preset(spec)
    if isinstance(spec, Mapping):
        return config_from_dict(spec)
    raise TypeError(f"degradation must be a preset name, a mapping or a config dataclass, got {type(spec)}")
