"""AttnGAN's config dataclass and its paper presets (taoxugit/AttnGAN code/miscc/config.py, cfg/bird_attn2.yml,
cfg/coco_attn2.yml). Every constant of the code is a field; `PRESETS` / `TRAIN_PRESETS` hold the two released
configurations as data.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.blocks.stage_generator import stage_sizes as sizes_of_stages
from t2itool.models.blocks.word_attention import MASK_MODES
from t2itool.models.recipe import ModelConfig, param


@dataclass
class AttnGANConfig(ModelConfig):
    image_size: int = param(
        256, "final resolution, a power of two >= 32; the three stages are at 1/4, 1/2 and 1 of it", min=32
    )
    max_words: int = param(18, "caption tokens fed to the text encoder (TEXT.WORDS_NUM)", min=1)
    sync_batchnorm: bool = param(
        True,
        "with several processes, batch norms use statistics over the whole batch (the official code trains on one "
        "GPU, so this reproduces its statistics); false: each process normalises its own share",
    )
    gf_dim: int = param(32, "generator base width GF (GAN.GF_DIM); stage 1 starts at 16 GF", min=1)
    df_dim: int = param(64, "discriminator base width (GAN.DF_DIM); features are 8 ndf", min=1)
    z_dim: int = param(100, "length of the noise vector z (GAN.Z_DIM), noise stream 'z'", min=1)
    cond_dim: int = param(100, "conditioning-augmentation sample size, its noise stream 'ca' (CONDITION_DIM)", min=1)
    text_dim: int = param(256, "word and sentence feature size of the DAMSM encoders (TEXT.EMBEDDING_DIM)", min=1)
    r_num: int = param(2, "GLU residual blocks per refining stage (GAN.R_NUM)", min=0)
    attention_mask: str = param(
        "fixed",
        "padding mask of the word attention: 'fixed' masks each sample's own padding; 'official' reproduces "
        "code/GlobalAttention.py's tiling, which hands other samples' masks to pixels when batch > 1",
        choices=MASK_MODES,
    )
    unconditional_head: bool = param(
        True, "discriminators also judge realism without text (D_NET b_jcu; false in the DCGAN variant)"
    )
    damsm_lambda: float = param(5.0, "weight of the DAMSM loss on the final image (TRAIN.SMOOTH.LAMBDA)", min=0)
    gamma1: float = param(4.0, "DAMSM attention sharpness over regions (SMOOTH.GAMMA1)", above=0)
    gamma2: float = param(5.0, "DAMSM word-score aggregation factor (SMOOTH.GAMMA2)", above=0)
    gamma3: float = param(10.0, "DAMSM batch-similarity smoothing factor (SMOOTH.GAMMA3)", above=0)
    mask_same_class: bool = param(True, "DAMSM: mask same-class non-matching pairs (CUB class ids; COCO has none)")
    kl_weight: float = param(1.0, "weight of the conditioning-augmentation KL term", min=0)
    lr_g: float = param(2e-4, "generator Adam learning rate (TRAIN.GENERATOR_LR)", above=0)
    lr_d: float = param(2e-4, "Adam learning rate of each discriminator (TRAIN.DISCRIMINATOR_LR)", above=0)
    beta1: float = param(0.5, "Adam beta1 (generator and discriminators)", min=0, max=1)
    beta2: float = param(0.999, "Adam beta2 (generator and discriminators)", min=0, max=1)

    def validate(self) -> None:
        try:
            sizes_of_stages(self.image_size)  # the three-stage layout needs a power of two >= 32
        except ValueError as exc:
            raise ValueError(f"image_size={self.image_size}: {exc}") from None

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
    "birds": {"global_batch": 20, "epochs": 600},  # the code trains on one GPU: the batch is the global one
    "coco": {"global_batch": 14, "epochs": 120},
}
