"""SSA-GAN's config dataclass: network widths, optimisers, losses and the text-encoder fine-tuning switch.

Defaults follow the official code (wtliao/text2image main.py / main_finetune.py, cfg/bird.yml); see REFERENCES 3.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FROZEN_DAMSM_WEIGHT = 0.05  # main.py: frozen text encoder
FINETUNE_DAMSM_WEIGHT = 0.1  # main_finetune.py: text encoder trained jointly


@dataclass
class SSAGANConfig:
    image_size: int = field(default=256, metadata={"help": "final resolution: 64, 128 or 256 (any power of two >= 8)"})
    ngf: int = field(default=64, metadata={"help": "generator base width (nf)"})
    ndf: int = field(default=64, metadata={"help": "discriminator base width"})
    noise_dim: int = field(default=100, metadata={"help": "length of the noise vector z"})
    cond_dim: int = field(default=256, metadata={"help": "sentence embedding size (DAMSM: 256)"})
    mask_hidden: int = field(default=100, metadata={"help": "channels of the mask predictor's hidden conv"})
    max_words: int = field(default=18, metadata={"help": "caption tokens fed to the text encoder (WORDS_NUM)"})
    lr_g: float = field(default=1e-4, metadata={"help": "generator Adam learning rate"})
    lr_d: float = field(default=4e-4, metadata={"help": "discriminator + logit head Adam learning rate"})
    beta1: float = field(default=0.0, metadata={"help": "Adam beta1 (generator and discriminator)"})
    beta2: float = field(default=0.9, metadata={"help": "Adam beta2 (generator and discriminator)"})
    gp_weight: float = field(default=2.0, metadata={"help": "MA-GP weight k"})
    gp_power: float = field(default=6.0, metadata={"help": "MA-GP power p"})
    magp_separate_step: bool = field(
        default=True,
        metadata={
            "help": "MA-GP as its own discriminator update after the hinge update (official code, default); "
            "false: add it to the hinge loss in one backward, as DF-GAN 2022 does"
        },
    )
    finetune_text_encoder: bool = field(
        default=False,
        metadata={
            "help": "train the text encoder and the image encoder's projections on the DAMSM loss of real images "
            "(main_finetune.py); the GAN sees detached embeddings; the DAMSM weight defaults to 0.1 instead of 0.05"
        },
    )
    damsm_weight: float | None = field(
        default=None,
        metadata={"help": "weight of the DAMSM loss in the generator; none = 0.05 (frozen encoder) / 0.1 (fine-tuned)"},
    )
    gamma1: float = field(default=5.0, metadata={"help": "DAMSM attention sharpness over regions (SSA-GAN keeps 5)"})
    gamma2: float = field(default=5.0, metadata={"help": "DAMSM word-score aggregation factor"})
    gamma3: float = field(default=10.0, metadata={"help": "DAMSM batch-similarity smoothing factor"})
    mask_same_class: bool = field(
        default=True, metadata={"help": "DAMSM: mask same-class non-matching pairs (CUB); class ids from the data"}
    )
    lr_text_encoder: float = field(
        default=4e-5, metadata={"help": "Adam learning rate of the fine-tuned text encoder and image projections"}
    )
    sync_batchnorm: bool = field(
        default=False,
        metadata={
            "help": "train with SyncBatchNorm in the generator, batch statistics over all processes (official code; "
            "CUDA only, so off by default); otherwise each process normalises its own share of the batch"
        },
    )
    truncation: float | None = field(
        default=None, metadata={"help": "sampling: z ~ truncnorm(-2, 2) * truncation; none = plain N(0, I) (paper)"}
    )

    def __post_init__(self) -> None:
        floats = ("lr_g", "lr_d", "beta1", "beta2", "gp_weight", "gp_power", "gamma1", "gamma2", "gamma3")
        for name in (*floats, "lr_text_encoder"):
            setattr(self, name, float(getattr(self, name)))  # torch >= 2.6 rejects mixed int/float betas
        for name in ("damsm_weight", "truncation"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size}")
        if self.damsm_weight is not None and self.damsm_weight < 0:
            raise ValueError(f"damsm_weight must be >= 0, got {self.damsm_weight}")

    @property
    def effective_damsm_weight(self) -> float:
        """The DAMSM weight the generator step uses: explicit, else 0.05 frozen / 0.1 fine-tuned (official code)."""
        if self.damsm_weight is not None:
            return self.damsm_weight
        return FINETUNE_DAMSM_WEIGHT if self.finetune_text_encoder else FROZEN_DAMSM_WEIGHT
