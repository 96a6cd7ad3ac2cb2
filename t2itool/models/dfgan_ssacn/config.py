"""SSA-GAN's config: network widths, optimisers, losses and the text-encoder fine-tuning switch.

Defaults follow the official code (wtliao/text2image main.py / main_finetune.py, cfg/bird.yml).
"""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.recipe import ModelConfig, param

FROZEN_DAMSM_WEIGHT = 0.05  # main.py: frozen text encoder
FINETUNE_DAMSM_WEIGHT = 0.1  # main_finetune.py: text encoder trained jointly


@dataclass
class SSAGANConfig(ModelConfig):
    image_size: int = param(256, "final resolution: a power of two >= 32 (the paper: 256)", min=32)
    ngf: int = param(64, "generator base width (nf)", min=1)
    ndf: int = param(64, "discriminator base width", min=1)
    noise_dim: int = param(100, "length of the noise vector z", min=1)
    cond_dim: int = param(256, "sentence embedding size (DAMSM: 256)", min=1)
    mask_hidden: int = param(100, "channels of the mask predictor's hidden conv", min=1)
    lr_g: float = param(1e-4, "generator Adam learning rate", above=0)
    lr_d: float = param(4e-4, "discriminator + logit head Adam learning rate", above=0)
    beta1: float = param(0.0, "Adam beta1 (generator and discriminator)", min=0, max=1)
    beta2: float = param(0.9, "Adam beta2 (generator and discriminator)", min=0, max=1)
    gp_weight: float = param(2.0, "MA-GP weight k", min=0)
    gp_power: float = param(6.0, "MA-GP power p", above=0)
    magp_separate_step: bool = param(
        True,
        "MA-GP as its own discriminator update after the hinge update (official code, default); "
        "false: add it to the hinge loss in one backward, as DF-GAN 2022 does",
    )
    finetune_text_encoder: bool = param(
        False,
        "train the text encoder and the image encoder's projections on the DAMSM loss of real images "
        "(main_finetune.py); the GAN sees detached embeddings; the DAMSM weight defaults to 0.1 instead of 0.05",
    )
    finetune_batch_statistics: bool = param(
        True,
        "fine-tuning: the DAMSM image encoder's batch norm normalises with each batch's statistics (train mode), as "
        "main_finetune.py, which never calls eval() on it; false: running statistics (eval mode), as with a frozen "
        "encoder. Running averages are never changed",
    )
    damsm_weight: float | None = param(
        None, "weight of the DAMSM loss in the generator; none = 0.05 (frozen encoder) / 0.1 (fine-tuned)", min=0
    )
    damsm_terms: str = param(
        "both",
        "terms of the DAMSM loss: both (L_w + L_s), sentence (L_s only) or word (L_w only): the ablations of the "
        "official code's miscc/losses_s.py and miscc/losses_w.py",
        choices=("both", "sentence", "word"),
    )
    gamma1: float = param(5.0, "DAMSM attention sharpness over regions (SSA-GAN keeps 5)", above=0)
    gamma2: float = param(5.0, "DAMSM word-score aggregation factor", above=0)
    gamma3: float = param(10.0, "DAMSM batch-similarity smoothing factor", above=0)
    mask_same_class: bool = param(True, "DAMSM: mask same-class non-matching pairs (CUB); class ids from the data")
    lr_text_encoder: float = param(
        4e-5, "Adam learning rate of the fine-tuned text encoder and image projections", above=0
    )
    truncation: float | None = param(
        None, "sampling: z ~ truncnorm(-2, 2) * truncation; none = plain N(0, I) (paper)", above=0
    )

    def validate(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size={self.image_size}: must be a power of two >= 32")

    @property
    def effective_damsm_weight(self) -> float:
        """The DAMSM weight the generator step uses: explicit, else 0.05 frozen / 0.1 fine-tuned (official code)."""
        if self.damsm_weight is not None:
            return self.damsm_weight
        return FINETUNE_DAMSM_WEIGHT if self.finetune_text_encoder else FROZEN_DAMSM_WEIGHT
