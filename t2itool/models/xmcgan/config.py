"""XMC-GAN's config dataclass and presets. Defaults are the released COCO config (google-research/
xmcgan_image_generation xmcgan/configs/coco_xmc.py) and the constants of its code (xmcgan/nets/xmc_net.py,
xmcgan/libml/attention_lib.py, xmcgan/xmc_gan.py); the text widths default to AttnGAN's DAMSM encoder (256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from t2itool.models.recipe import ModelConfig, param

IMAGE_SIZES = (32, 64, 128, 256)
IMAGE_ENCODERS = ("resnet50", "vgg19", "none")


@dataclass
class XMCGANConfig(ModelConfig):
    # The three fields of ModelConfig, redefined for their defaults and checks.
    image_size: int = param(
        128, "final resolution: 128 or 256 (released widths), 64 or 32 (derived widths, for small runs)",
        choices=IMAGE_SIZES,
    )  # fmt: skip
    max_words: int = param(
        18, "caption tokens fed to the text encoder (the code: 17 BERT tokens incl. [CLS]/[SEP])", min=1
    )
    sync_batchnorm: bool = param(
        True,
        "with N > 1 processes, generator batch-norm statistics over the global batch; false: per process (the code "
        "normalises each device's 7 images on its own)",
    )
    # Networks (xmc_net.py).
    z_dim: int = param(128, "length of the noise vector z; also the width of Dense(sentence) in G", min=1)
    gf_dim: int = param(96, "generator base width gf_dim; block widths are gf_dim times the multipliers", min=1)
    df_dim: int = param(96, "discriminator base width df_dim; pooled features are 16 df_dim wide", min=1)
    sentence_dim: int = param(
        256, "sentence vector width: 256 (DAMSM text encoder) or 768 (BERT-base features from prep)", min=1
    )
    word_dim: int = param(
        256, "word feature width: 256 (DAMSM) or 768 (BERT-base); G's attention and D's region head use it", min=1
    )
    rho0: float = param(15.0, "G's word attention: cosine similarity x rho0 before the softmax (gamma_for_g)", above=0)
    bn_momentum: float = param(0.1, "G batch norm momentum, PyTorch convention (Flax momentum 0.9)", above=0, max=1)
    bn_eps: float = param(1e-5, "G batch norm epsilon", above=0)
    # Contrastive losses (attention_lib.py, xmc_gan.py).
    rho1: float = param(5.0, "word-region loss: cosine similarity x rho1, softmax over regions (gamma1)", above=0)
    rho2: float = param(5.0, "word-region loss: log-sum-exp over words of rho2 x cosine, divided by rho2", above=0)
    word_region_scale: float = param(
        50.0, "word-region loss: scale of the image-caption scores (gamma3; 1/tau)", above=0
    )
    tau_sentence: float = param(0.1, "temperature of the sentence-image contrastive loss", above=0)
    tau_image: float = param(0.1, "temperature of the image-image loss on D's pooled features", above=0)
    tau_image_features: float = param(0.1, "temperature of the image-image loss on the frozen network", above=0)
    sentence_weight: float = param(1.0, "weight of the sentence-image loss (real pairs in D, fake pairs in G)", min=0)
    word_weight: float = param(1.0, "weight of the word-region loss (real pairs in D, fake pairs in G)", min=0)
    image_weight: float = param(1.0, "weight of the image-image loss on D features (G only)", min=0)
    image_features_weight: float = param(
        1.0, "weight of the image-image loss on the frozen network's features (G only; 0 or image_encoder=none: off)",
        min=0,
    )  # fmt: skip
    image_encoder: str = param(
        "resnet50",
        "frozen ImageNet network of the image-image loss: resnet50 (logits, as the code), vgg19 (fc7, the paper's "
        "VGG) or none",
        choices=IMAGE_ENCODERS,
    )
    image_encoder_weights: str | None = param(
        None,
        "torchvision state-dict file of image_encoder; none: the torch hub cache (downloaded there when online)",
    )
    # Optimisation (coco_xmc.py, train_utils.py).
    lr_g: float = param(1e-4, "generator Adam learning rate", above=0)
    lr_d: float = param(4e-4, "discriminator Adam learning rate", above=0)
    beta1: float = param(0.5, "Adam beta1 (both networks)", min=0, max=1)
    beta2: float = param(0.999, "Adam beta2 (both networks)", min=0, max=1)
    d_steps: int = param(2, "discriminator steps per generator step, each on its own sub-batch", min=1)
    truncation: float | None = param(
        None, "sampling: z ~ truncnorm(-2, 2) x truncation; none: N(0, I) (the code)", above=0
    )


# Model-config presets. coco: the released config (128 px; the code's 17 tokens). birds: ours, XMC-GAN never ran on
# CUB; 128 px because 256 px needs a TPU v3-32 slice and does not converge on GPUs (xmcgan#18); 18 words as AttnGAN's
# and DF-GAN's CUB configs; the text encoder is the CUB DAMSM (256), everything else as the COCO config.
PRESETS: dict[str, dict[str, Any]] = {
    "coco": {"image_size": 128, "max_words": 17},
    "birds": {"image_size": 128, "max_words": 18},
}

# Training-loop presets. The code's config.batch_size 56 (8 devices x 7) is the batch of one discriminator step; one
# generator step consumes d_steps x 56 images. t2itool's step receives the global batch split into d_steps
# sub-batches, so the presets' global batch is 2 x 56 = 112 over all processes (d_steps 2; --batch-size N sets it per
# process instead). birds keeps it (CUB's 8,855 training images give 79 steps per epoch).
BATCH_PER_D_STEP = 56
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "coco": {"global_batch": 2 * BATCH_PER_D_STEP},
    "birds": {"global_batch": 2 * BATCH_PER_D_STEP},
}
