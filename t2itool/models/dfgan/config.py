"""DF-GAN's config dataclass: network widths, optimiser settings and losses, defaults from the 2022 code."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DFGANConfig:
    image_size: int = field(default=256, metadata={"help": "final resolution: 64, 128 or 256"})
    ngf: int = field(default=32, metadata={"help": "generator base width (nf)"})
    ndf: int = field(default=32, metadata={"help": "discriminator base width"})
    noise_dim: int = field(default=100, metadata={"help": "length of the noise vector z"})
    cond_dim: int = field(default=256, metadata={"help": "sentence embedding size (DAMSM: 256)"})
    max_words: int = field(default=18, metadata={"help": "caption tokens fed to the text encoder (WORDS_NUM)"})
    lr_g: float = field(default=1e-4, metadata={"help": "generator Adam learning rate"})
    lr_d: float = field(default=4e-4, metadata={"help": "discriminator + conditional head Adam learning rate"})
    beta1: float = field(default=0.0, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.9, metadata={"help": "Adam beta2"})
    gp_weight: float = field(default=2.0, metadata={"help": "MA-GP weight k"})
    gp_power: float = field(default=6.0, metadata={"help": "MA-GP power p"})
    truncation: float = field(default=0.88, metadata={"help": "sampling: z ~ truncnorm(-2, 2) * truncation"})

    def __post_init__(self) -> None:
        for name in ("lr_g", "lr_d", "beta1", "beta2", "gp_weight", "gp_power", "truncation"):
            setattr(self, name, float(getattr(self, name)))  # torch >= 2.6 rejects mixed int/float betas
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size}")
