"""SD-GAN's config dataclass and presets (Yin et al., CVPR 2019, arXiv 1904.01480). No official code was released, so
every value the paper leaves open is a field marked "not given by the paper" whose default is AttnGAN's
(taoxugit/AttnGAN cfg/bird_attn2.yml, coco_attn2.yml), SD-GAN's trunk, or a stated choice where AttnGAN has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.blocks.stage_generator import stage_sizes as sizes_of_stages
from t2itool.models.blocks.word_attention import MASK_MODES
from t2itool.models.recipe import ModelConfig, param

SCBN_LEVELS = ("sentence", "word", "none")
OPEN = "(not given by the paper) "  # marks values the paper leaves open (shown by `t2itool models sdgan`)


@dataclass
class SDGANConfig(ModelConfig):
    image_size: int = param(
        256, "final resolution, a power of two >= 32; the three stages are at 1/4, 1/2 and 1 of it", min=32
    )
    max_words: int = param(18, OPEN + "caption tokens fed to the text encoder (AttnGAN's WORDS_NUM)", min=1)
    sync_batchnorm: bool = param(True, "with several processes, batch norms use statistics over the whole batch")
    # --- the paper's own parts: SCBN and the Siamese contrastive loss (Sec. 3.2, 3.3) ---
    scbn_stage1: str = param(
        "sentence",
        OPEN
        + "SCBN in the up-sampling layers of G0: 'sentence' (MLP from the sentence to channel-wise gamma_c, beta_c), "
        "'word' (spatial gamma_c, beta_c from attention over the projected words), 'none' (plain batch norm)",
        choices=SCBN_LEVELS,
    )
    scbn_stage2: str = param(
        "word", OPEN + "SCBN level in the up-sampling layer of G1 (see scbn_stage1)", choices=SCBN_LEVELS
    )
    scbn_stage3: str = param(
        "word", OPEN + "SCBN level in the up-sampling layer of G2 (see scbn_stage1)", choices=SCBN_LEVELS
    )
    scbn_hidden: int = param(256, OPEN + "hidden width of the sentence-level SCBN MLP (one hidden layer, ReLU)", min=1)
    contrastive_alpha: float = param(0.1, "floor on the distance of same-image pairs, alpha in L_c", min=0)
    contrastive_margin: float = param(1.0, "margin of different-image pairs, epsilon in L_c", above=0)
    contrastive_weight: float = param(1.0, OPEN + "weight of the contrastive loss L_c in the generator loss", min=0)
    contrastive_stage: int = param(
        3, OPEN + "which stage's discriminator gives the features v1, v2 of L_c (1, 2, 3: smallest first)", min=1, max=3
    )
    contrastive_normalize: bool = param(
        True,
        OPEN + "L2-normalise the (globally average-pooled 8 ndf) discriminator features before the distance, so "
        "that the margin 1.0 and floor 0.1 are on the scale of the unit sphere",
    )
    pair_same_probability: float = param(
        0.5,
        OPEN + "probability that a sample's second caption describes the same image (pair label y = 1)",
        min=0,
        max=1,
    )
    # --- the AttnGAN trunk (AttnGAN's values) ---
    gf_dim: int = param(32, OPEN + "generator base width GF (AttnGAN's GAN.GF_DIM); stage 1 starts at 16 GF", min=1)
    df_dim: int = param(64, OPEN + "discriminator base width (AttnGAN's GAN.DF_DIM); features are 8 ndf", min=1)
    z_dim: int = param(100, OPEN + "length of the noise vector z, noise stream 'z'", min=1)
    cond_dim: int = param(100, OPEN + "conditioning-augmentation sample size, noise stream 'ca'", min=1)
    text_dim: int = param(256, "word and sentence feature size of the DAMSM encoders", min=1)
    r_num: int = param(2, OPEN + "GLU residual blocks per refining stage (AttnGAN's GAN.R_NUM)", min=0)
    attention_mask: str = param(
        "fixed",
        "padding mask of the word attentions: 'fixed' masks each sample's own padding; 'official' reproduces "
        "AttnGAN's code/GlobalAttention.py tiling",
        choices=MASK_MODES,
    )
    unconditional_head: bool = param(True, "discriminators also judge realism without text (AttnGAN's b_jcu)")
    damsm_lambda: float = param(5.0, OPEN + "weight of the DAMSM loss on the final images (AttnGAN's lambda)", min=0)
    gamma1: float = param(4.0, OPEN + "DAMSM attention sharpness over regions (AttnGAN's GAMMA1)", above=0)
    gamma2: float = param(5.0, OPEN + "DAMSM word-score aggregation factor (AttnGAN's GAMMA2)", above=0)
    gamma3: float = param(10.0, OPEN + "DAMSM batch-similarity smoothing factor (AttnGAN's GAMMA3)", above=0)
    mask_same_class: bool = param(True, "DAMSM: mask same-class non-matching pairs (CUB class ids; COCO has none)")
    kl_weight: float = param(1.0, OPEN + "weight of the conditioning-augmentation KL term", min=0)
    lr_g: float = param(2e-4, OPEN + "generator Adam learning rate", above=0)
    lr_d: float = param(2e-4, OPEN + "Adam learning rate of each discriminator", above=0)
    beta1: float = param(0.5, OPEN + "Adam beta1 (generator and discriminators)", min=0, max=1)
    beta2: float = param(0.999, OPEN + "Adam beta2 (generator and discriminators)", min=0, max=1)

    def validate(self) -> None:
        try:
            sizes_of_stages(self.image_size)
        except ValueError as exc:
            raise ValueError(f"image_size={self.image_size}: {exc}") from None

    @property
    def stage_sizes(self) -> tuple[int, int, int]:
        """Image side of the three stages, smallest first (64, 128, 256 at 256 px)."""
        return sizes_of_stages(self.image_size)  # type: ignore[return-value]

    @property
    def scbn_levels(self) -> tuple[str, str, str]:
        return (self.scbn_stage1, self.scbn_stage2, self.scbn_stage3)


# AttnGAN's bird_attn2 / coco_attn2 values for everything the SD-GAN paper leaves open.
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
    "birds": {"global_batch": 20, "epochs": 600},  # AttnGAN's one-GPU batches, over all processes
    "coco": {"global_batch": 14, "epochs": 120},
}
