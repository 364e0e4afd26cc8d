"""GPEN architectures: generator, discriminator, StyleGAN2 layers and pure-PyTorch ops."""

from .discriminator import DiscriminatorConfig, GPENDiscriminator
from .gpen import GeneratorConfig, GPENGenerator

__all__ = ["DiscriminatorConfig", "GPENDiscriminator", "GPENGenerator", "GeneratorConfig"]
