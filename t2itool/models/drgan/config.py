"""DR-GAN's config dataclass and presets (Tan et al., TNNLS 2023, arXiv 2204.07945; Tan-H-C/DR-GAN-Distribution-
Regularization-for-Text-to-Image-Generation cfg/bird_DRGAN.yml, cfg/coco_DRGAN.yml, model.py, miscc/losses.py).
Every constant the code hard-codes is a field; each code defect has a switch whose non-default value reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2itool.models.blocks.stage_generator import stage_sizes as sizes_of_stages
from t2itool.models.blocks.word_attention import MASK_MODES
from t2itool.models.recipe import ModelConfig, param

DEFECT_MODES = ("fixed", "code")


@dataclass
class DRGANConfig(ModelConfig):
    image_size: int = param(
        256, "final resolution, a power of two >= 32; the three stages are at 1/4, 1/2 and 1 of it", min=32
    )
    max_words: int = param(18, "caption tokens fed to the text encoder (TEXT.WORDS_NUM)", min=1)
    sync_batchnorm: bool = param(True, "with several processes, batch norms use statistics over the whole batch")
    gf_dim: int = param(64, "generator base width (GAN.GF_DIM); stage 1 starts at 16 GF", min=4)
    df_dim: int = param(32, "discriminator base width (GAN.DF_DIM); features are 8 ndf", min=1)
    z_dim: int = param(100, "length of the noise vector z (GAN.Z_DIM), noise stream 'z'", min=1)
    cond_dim: int = param(100, "conditioning-augmentation size of G and of each D's VAE branch (CONDITION_DIM)", min=1)
    text_dim: int = param(256, "word and sentence feature size of the DAMSM encoders (TEXT.EMBEDDING_DIM)", min=1)
    r_num: int = param(2, "GLU residual blocks of each SDM, before and after the masks (GAN.R_NUM)", min=0)
    attention_mask: str = param(
        "fixed", "padding mask of the word attention ('official' reproduces AttnGAN's tiling)", choices=MASK_MODES
    )
    unconditional_head: bool = param(True, "discriminators also judge realism without text (B_NET_D / b_jcu)")
    # --- Semantic Disentangling Module and Loss (paper Sec. III-B; model.py NEXT_STAGE_G) ---
    mask_divisor: float = param(
        22.0,
        "the SDM masks are sigmoid(f(F) / mask_divisor); the code divides by the batch it runs on (22 / 20 in "
        "training), which makes an image depend on its batch; 0 reproduces that",
        min=0,
    )
    sdl_base: float = param(10.1, "base of the G-internal term sdl_base ** (SDL_2 / S_2^2 + SDL_3 / S_3^2)", above=0)
    sdl_variance: str = param(
        "fixed",
        "second-moment half of the SDL: 'fixed' compares batch variances mean((x - m)^2); 'code' reproduces "
        "model.py's (sum(x - m))^2 / B, identically zero, so that half is the constant 2 log 2 + 2 per stage",
        choices=DEFECT_MODES,
    )
    rirm_weight: float = param(1e-5, "weight of the Real-Image Reconstruction loss (model.py G_NET 0.00001)", min=0)
    # --- Distribution Normalisation Module (paper Sec. III-C; miscc/losses.py) ---
    dnm_weight: float = param(0.1, "weight of D's two reconstruction terms (discriminator_loss 0.1 * thc)", min=0)
    dnm_rec_weight: float = param(
        0.01, "factor of each Frobenius-norm reconstruction term in D's loss (thc0, thc01)", min=0
    )
    dnm_kl_weight: float = param(0.01, "weight of each KL term of D's VAE latents (kl_lossD)", min=0)
    dnm_kl: str = param(
        "fixed",
        "D's KL terms: 'fixed' = KL of the real and of the fake latent; 'code' reproduces kl_lossD, which adds the "
        "real latent's KL twice and never uses the fake one",
        choices=DEFECT_MODES,
    )
    dnm_decoder_dim: int = param(
        32, "output width of each D's VAE decoder (INIT_STAGE_G(32 * 16) in D_NET*: 512 at 4x4, 32 at 64 px)", min=1
    )
    dal_weight1: float = param(1e-6, "distribution adversarial loss weight of D of stage 1 (thc0)", min=0)
    dal_weight2: float = param(1e-4, "distribution adversarial loss weight of D of stage 2 (thc1)", min=0)
    dal_weight3: float = param(1e-2, "distribution adversarial loss weight of D of stage 3 (thc2)", min=0)
    # --- AttnGAN's terms (miscc/losses.py generator_loss, KL_loss) ---
    damsm_lambda: float = param(5.0, "weight of the DAMSM loss on the final image (TRAIN.SMOOTH.LAMBDA)", min=0)
    gamma1: float = param(4.0, "DAMSM attention sharpness over regions (SMOOTH.GAMMA1)", above=0)
    gamma2: float = param(5.0, "DAMSM word-score aggregation factor (SMOOTH.GAMMA2)", above=0)
    gamma3: float = param(10.0, "DAMSM batch-similarity smoothing factor (SMOOTH.GAMMA3)", above=0)
    mask_same_class: bool = param(True, "DAMSM: mask same-class non-matching pairs (CUB class ids; COCO has none)")
    kl_weight: float = param(1.0, "weight of the generator's conditioning-augmentation KL term", min=0)
    lr_g: float = param(2e-4, "generator Adam learning rate (TRAIN.GENERATOR_LR)", above=0)
    lr_d: float = param(2e-4, "Adam learning rate of each discriminator (TRAIN.DISCRIMINATOR_LR)", above=0)
    beta1: float = param(0.5, "Adam beta1 (generator and discriminators)", min=0, max=1)
    beta2: float = param(0.999, "Adam beta2 (generator and discriminators)", min=0, max=1)

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
    def dal_weights(self) -> tuple[float, float, float]:
        return (self.dal_weight1, self.dal_weight2, self.dal_weight3)


# cfg/bird_DRGAN.yml and cfg/coco_DRGAN.yml; mask_divisor is the cfg batch size the code divides by in training.
PRESETS: dict[str, dict[str, object]] = {
    "birds": {"image_size": 256, "max_words": 18, "gf_dim": 64, "df_dim": 32, "r_num": 2, "damsm_lambda": 5.0,
              "mask_divisor": 22.0},
    "coco": {"image_size": 256, "max_words": 12, "gf_dim": 64, "df_dim": 32, "r_num": 3, "damsm_lambda": 50.0,
             "mask_same_class": False, "mask_divisor": 20.0},
}  # fmt: skip
TRAIN_PRESETS: dict[str, dict[str, int]] = {
    "birds": {"global_batch": 22, "epochs": 1000},  # the code's one-GPU batches, over all processes
    "coco": {"global_batch": 20, "epochs": 250},
}
