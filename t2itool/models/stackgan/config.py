"""StackGAN's config dataclass and its paper presets (birds, coco) as data.

Defaults follow the paper (Zhang et al., ICCV 2017) and hanzhanggit/StackGAN-Pytorch code/miscc/config.py; the coco
preset is that repository's cfg/coco_s1.yml and cfg/coco_s2.yml. One config describes one stage: `stage` 1 or 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.recipe import ModelConfig, param
from t2itool.models.stackgan.networks import (
    MIN_STAGE1_SIZE,
    STAGE2_MAGNIFICATION,
    check_discriminator_widths,
    check_generator_widths,
)

PAPER_IMAGE_SIZES = {1: 64, 2: 256}

# Network and optimiser settings per dataset (model config fields).
PRESETS: dict[str, dict[str, object]] = {
    # Paper: GF 128, DF 64, lr halved every 100 epochs; R_NUM 4 is the code's default (miscc/config.py).
    "birds": {"gf_dim": 128, "df_dim": 64, "r_num": 4, "lr_decay_epochs": 100},
    # cfg/coco_s1.yml, coco_s2.yml: GF 192, DF 96, R_NUM 2, LR_DECAY_EPOCH 20.
    "coco": {"gf_dim": 192, "df_dim": 96, "r_num": 2, "lr_decay_epochs": 20},
}

# Training-loop settings per dataset and stage (batch size per process, epochs of that stage).
TRAIN_PRESETS: dict[str, dict[int, dict[str, int]]] = {
    "birds": {1: {"batch_size": 64, "epochs": 600}, 2: {"batch_size": 64, "epochs": 600}},  # paper: 600 per stage
    "coco": {1: {"batch_size": 128, "epochs": 120}, 2: {"batch_size": 40, "epochs": 100}},  # TRAIN.BATCH_SIZE per GPU
}


@dataclass
class StackGANConfig(ModelConfig):
    image_size: int = param(
        0,
        "final resolution of the stage being trained; 0 = the paper's (64 for stage 1, 256 for stage 2). "
        "Stage 1: a power of two >= 8; stage 2: 4x its stage-I size (>= 32)",
        min=0,
    )
    max_words: int = param(18, "caption tokens fed to the DAMSM text encoder (WORDS_NUM)", min=1)
    sync_batchnorm: bool = param(
        True,
        "with several processes, batch-norm statistics over the global batch; false keeps per-process statistics, "
        "as the official DataParallel training did per GPU",
    )
    stage: int = param(1, "1: train stage I; 2: train stage II on top of a frozen stage-I generator", choices=(1, 2))
    text_dim: int = param(
        256,
        "size of the text vector fed to conditioning augmentation: 256 = DAMSM sentence (a deviation from the "
        "paper), 1024 = char-CNN-RNN embeddings as the paper (--text precomputed)",
        min=1,
    )
    gf_dim: int = param(128, "generator width GF_DIM (stage I starts at 8 gf_dim x 4 x 4)", min=1)
    df_dim: int = param(64, "discriminator width DF_DIM (4x4 features: 8 df_dim)", min=1)
    z_dim: int = param(100, "length of the noise vector z", min=1)
    cond_dim: int = param(128, "conditioning-augmentation output size (CONDITION_DIM)", min=1)
    r_num: int = param(4, "residual blocks of the stage-II generator (R_NUM)", min=0)
    coeff_kl: float = param(2.0, "weight of the CA KL term in the generator loss", min=0)
    lr_g: float = param(2e-4, "generator Adam learning rate", above=0)
    lr_d: float = param(2e-4, "discriminator Adam learning rate", above=0)
    beta1: float = param(0.5, "Adam beta1", min=0, max=1)
    beta2: float = param(0.999, "Adam beta2", min=0, max=1)
    lr_decay_epochs: int = param(
        100, "both learning rates are halved every this many epochs (birds paper: 100; coco code: 20)", min=1
    )
    average_embeddings: int = param(
        1,
        "precomputed text only: caption embeddings of the image averaged per training step "
        "(1 = one random caption, as the PyTorch code; 4 = the TF code's average)",
        min=1,
    )

    def validate(self) -> None:
        if self.image_size == 0:
            self.image_size = PAPER_IMAGE_SIZES[self.stage]
        smallest = MIN_STAGE1_SIZE * (STAGE2_MAGNIFICATION if self.stage == 2 else 1)
        size = self.image_size
        if size < smallest or size & (size - 1):
            raise ValueError(f"image_size={size}: stage {self.stage} needs a power of two >= {smallest}")
        check_generator_widths(self.gf_dim, self.stage1_image_size, self.stage)
        check_discriminator_widths(self.df_dim, self.image_size, self.stage)

    @property
    def stage1_image_size(self) -> int:
        """Resolution of the stage-I generator: `image_size` in stage 1, a quarter of it in stage 2."""
        return self.image_size if self.stage == 1 else self.image_size // STAGE2_MAGNIFICATION
