"""AttnGAN's config dataclass and its paper presets (taoxugit/AttnGAN code/miscc/config.py, cfg/bird_attn2.yml,
cfg/coco_attn2.yml). Every constant of the code is a field; `PRESETS` / `TRAIN_PRESETS` hold the two released
configurations as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t2itool.models.blocks.stage_generator import stage_sizes as sizes_of_stages
from t2itool.models.blocks.word_attention import MASK_MODES


@dataclass
class AttnGANConfig:
    image_size: int = field(
        default=256, metadata={"help": "final resolution; the three stages are at 1/4, 1/2 and 1 of it (>= 32)"}
    )
    max_words: int = field(default=18, metadata={"help": "caption tokens fed to the text encoder (TEXT.WORDS_NUM)"})
    sync_batchnorm: bool = field(
        default=True,
        metadata={
            "help": "with several processes, batch norms use statistics over the whole batch (the official code "
            "trains on one GPU, so this reproduces its statistics); false: each process normalises its own share"
        },
    )
    gf_dim: int = field(default=32, metadata={"help": "generator base width GF (GAN.GF_DIM); stage 1 starts at 16 GF"})
    df_dim: int = field(default=64, metadata={"help": "discriminator base width (GAN.DF_DIM); features are 8 ndf"})
    z_dim: int = field(default=100, metadata={"help": "length of the noise vector z (GAN.Z_DIM)"})
    cond_dim: int = field(
        default=100, metadata={"help": "conditioning-augmentation sample size, its noise stream 'ca' (CONDITION_DIM)"}
    )
    text_dim: int = field(
        default=256, metadata={"help": "word and sentence feature size of the DAMSM encoders (TEXT.EMBEDDING_DIM)"}
    )
    r_num: int = field(default=2, metadata={"help": "GLU residual blocks per refining stage (GAN.R_NUM)"})
    attention_mask: str = field(
        default="fixed",
        metadata={
            "help": "padding mask of the word attention: 'fixed' masks each sample's own padding; 'official' "
            "reproduces code/GlobalAttention.py's tiling, which hands other samples' masks to pixels when batch > 1"
        },
    )
    unconditional_head: bool = field(
        default=True,
        metadata={"help": "discriminators also judge realism without text (D_NET b_jcu; false in the DCGAN variant)"},
    )
    damsm_lambda: float = field(
        default=5.0, metadata={"help": "weight of the DAMSM loss on the final image (TRAIN.SMOOTH.LAMBDA)"}
    )
    gamma1: float = field(default=4.0, metadata={"help": "DAMSM attention sharpness over regions (SMOOTH.GAMMA1)"})
    gamma2: float = field(default=5.0, metadata={"help": "DAMSM word-score aggregation factor (SMOOTH.GAMMA2)"})
    gamma3: float = field(default=10.0, metadata={"help": "DAMSM batch-similarity smoothing factor (SMOOTH.GAMMA3)"})
    mask_same_class: bool = field(
        default=True, metadata={"help": "DAMSM: mask same-class non-matching pairs (CUB class ids; COCO has none)"}
    )
    kl_weight: float = field(default=1.0, metadata={"help": "weight of the conditioning-augmentation KL term"})
    lr_g: float = field(default=2e-4, metadata={"help": "generator Adam learning rate (TRAIN.GENERATOR_LR)"})
    lr_d: float = field(
        default=2e-4, metadata={"help": "Adam learning rate of each discriminator (TRAIN.DISCRIMINATOR_LR)"}
    )
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1 (generator and discriminators)"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2 (generator and discriminators)"})

    def __post_init__(self) -> None:
        floats = ("damsm_lambda", "gamma1", "gamma2", "gamma3", "kl_weight", "lr_g", "lr_d", "beta1", "beta2")
        for name in floats:
            setattr(self, name, float(getattr(self, name)))  # torch >= 2.6 rejects mixed int/float betas
        sizes_of_stages(self.image_size)  # raises for sizes the three-stage layout cannot hold
        if self.attention_mask not in MASK_MODES:
            raise ValueError(f"attention_mask {self.attention_mask!r}: choose one of {', '.join(MASK_MODES)}")
        for name in ("max_words", "gf_dim", "df_dim", "z_dim", "cond_dim", "text_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.r_num < 0:
            raise ValueError(f"r_num must be >= 0, got {self.r_num}")

    @property
    def stage_sizes(self) -> tuple[int, int, int]:
        """Image side of the three stages, smallest first (64, 128, 256 at 256 px)."""
        return sizes_of_stages(self.image_size)  # type: ignore[return-value]


# cfg/bird_attn2.yml and cfg/coco_attn2.yml; everything else is the code's default (miscc/config.py).
PRESETS: dict[str, dict[str, object]] = {
    "birds": {"image_size": 256, "max_words": 18, "gf_dim": 32, "df_dim": 64, "r_num": 2, "damsm_lambda": 5.0},
    "coco": {
        "image_size": 256,
        "max_words": 12,
        "gf_dim": 48,
        "df_dim": 96,
        "r_num": 3,
        "damsm_lambda": 50.0,
        "mask_same_class": False,
    },
}
TRAIN_PRESETS: dict[str, dict[str, int]] = {
    "birds": {"batch_size": 20, "epochs": 600},
    "coco": {"batch_size": 14, "epochs": 120},
}
