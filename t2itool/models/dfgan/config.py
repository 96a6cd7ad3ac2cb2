"""DF-GAN's config: network widths, optimiser settings and losses, defaults from the 2022 code
(tobran/DF-GAN code/cfg/bird.yml, code/src/train.py)."""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.recipe import ModelConfig, param


@dataclass
class DFGANConfig(ModelConfig):
    image_size: int = param(256, "final resolution: a power of two >= 32 (the paper: 256)", min=32)
    ngf: int = param(32, "generator base width (nf)", min=1)
    ndf: int = param(32, "discriminator base width", min=1)
    noise_dim: int = param(100, "length of the noise vector z", min=1)
    cond_dim: int = param(256, "sentence embedding size (DAMSM: 256)", min=1)
    lr_g: float = param(1e-4, "generator Adam learning rate", above=0)
    lr_d: float = param(4e-4, "discriminator + conditional head Adam learning rate", above=0)
    beta1: float = param(0.0, "Adam beta1", min=0, max=1)
    beta2: float = param(0.9, "Adam beta2", min=0, max=1)
    gp_weight: float = param(2.0, "MA-GP weight k", min=0)
    gp_power: float = param(6.0, "MA-GP power p", above=0)
    truncation: float = param(0.88, "sampling: z ~ truncnorm(-2, 2) * truncation", above=0)

    def validate(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size={self.image_size}: must be a power of two >= 32")
