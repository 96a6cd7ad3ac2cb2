"""StackGAN's config dataclass and its paper presets (birds, coco) as data.

Defaults follow the paper (Zhang et al., ICCV 2017) and hanzhanggit/StackGAN-Pytorch code/miscc/config.py; the coco
preset is that repository's cfg/coco_s1.yml and cfg/coco_s2.yml. One config describes one stage: `stage` 1 or 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
class StackGANConfig:
    image_size: int = field(
        default=0,
        metadata={
            "help": "final resolution of the stage being trained; 0 = the paper's (64 for stage 1, 256 for stage 2). "
            "Stage 1: a power of two >= 8; stage 2: 4x its stage-I size (>= 32)"
        },
    )
    max_words: int = field(default=18, metadata={"help": "caption tokens fed to the DAMSM text encoder (WORDS_NUM)"})
    sync_batchnorm: bool = field(
        default=False,
        metadata={
            "help": "with several processes, batch-norm statistics over the global batch; false keeps per-process "
            "statistics, as the official DataParallel training did per GPU"
        },
    )
    stage: int = field(
        default=1, metadata={"help": "1: train stage I; 2: train stage II on top of a frozen stage-I generator"}
    )
    text_dim: int = field(
        default=256,
        metadata={
            "help": "size of the text vector fed to conditioning augmentation: 256 = DAMSM sentence (a deviation "
            "from the paper), 1024 = char-CNN-RNN embeddings as the paper"
        },
    )
    gf_dim: int = field(default=128, metadata={"help": "generator width GF_DIM (stage I starts at 8 gf_dim x 4 x 4)"})
    df_dim: int = field(default=64, metadata={"help": "discriminator width DF_DIM (4x4 features: 8 df_dim)"})
    z_dim: int = field(default=100, metadata={"help": "length of the noise vector z"})
    cond_dim: int = field(default=128, metadata={"help": "conditioning-augmentation output size (CONDITION_DIM)"})
    r_num: int = field(default=4, metadata={"help": "residual blocks of the stage-II generator (R_NUM)"})
    coeff_kl: float = field(default=2.0, metadata={"help": "weight of the CA KL term in the generator loss"})
    lr_g: float = field(default=2e-4, metadata={"help": "generator Adam learning rate"})
    lr_d: float = field(default=2e-4, metadata={"help": "discriminator Adam learning rate"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    lr_decay_epochs: int = field(
        default=100, metadata={"help": "both learning rates are halved every this many epochs (coco code: 20)"}
    )
    average_embeddings: int = field(
        default=1,
        metadata={
            "help": "precomputed text only: caption embeddings of the image averaged per training step "
            "(1 = one random caption, as the PyTorch code; 4 = the TF code's average)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("coeff_kl", "lr_g", "lr_d", "beta1", "beta2"):
            setattr(self, name, float(getattr(self, name)))  # torch >= 2.6 rejects mixed int/float betas
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.image_size == 0:
            self.image_size = PAPER_IMAGE_SIZES[self.stage]
        smallest = MIN_STAGE1_SIZE * (STAGE2_MAGNIFICATION if self.stage == 2 else 1)
        size = self.image_size
        if size < smallest or size & (size - 1):
            raise ValueError(f"image_size for stage {self.stage} must be a power of two >= {smallest}, got {size}")
        for name in ("text_dim", "gf_dim", "df_dim", "z_dim", "cond_dim", "lr_decay_epochs", "average_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.r_num < 0:
            raise ValueError(f"r_num must be >= 0, got {self.r_num}")
        check_generator_widths(self.gf_dim, self.stage1_image_size, self.stage)
        check_discriminator_widths(self.df_dim, self.image_size, self.stage)

    @property
    def stage1_image_size(self) -> int:
        """Resolution of the stage-I generator: `image_size` in stage 1, a quarter of it in stage 2."""
        return self.image_size if self.stage == 1 else self.image_size // STAGE2_MAGNIFICATION
