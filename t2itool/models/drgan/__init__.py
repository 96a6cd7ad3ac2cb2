"""`drgan`: DR-GAN (Tan, Liu, Yin, Li; TNNLS 2023), following the paper and the authors' draft code (Tan-H-C/DR-GAN-
Distribution-Regularization-for-Text-to-Image-Generation model.py, trainer.py, miscc/losses.py, cfg/*.yml).

config (DRGANConfig, presets, the code's constants as fields, a switch per code defect), networks (the generator with
the Semantic Disentangling Module), discriminator (spectral-normed D with the DNM's VAE branch), losses (SDL, RIRM,
DNM terms), recipe (one training step). Registers the model spec.
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.drgan.config import PRESETS, TRAIN_PRESETS, DRGANConfig
from t2itool.models.drgan.discriminator import DRGANDiscriminator
from t2itool.models.drgan.networks import DRGANGenerator, build_generator
from t2itool.models.drgan.recipe import DRGANRecipe
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.noise import NoiseStream


def generate(generator: DRGANGenerator, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    """Images at the three stage sizes, smallest first, and {"attention": [...]} of the two SDMs' word attention."""
    if text.words is None or text.mask is None:
        raise ValueError("drgan needs word features: its text source must be the DAMSM text encoder")
    out = generator(noise["z"], noise["ca"], text.sentence, text.words, text.mask)
    return GeneratorOutput(images=list(out.images), maps={"attention": list(out.attention)})


def noise_streams(config: DRGANConfig) -> list[NoiseStream]:
    # dnm_text / dnm_image: the reparameterisation noise of the discriminators' CA (sentence and image latent),
    # drawn per sample like every other stream; the generator ignores them when sampling.
    return [
        NoiseStream("z", config.z_dim),
        NoiseStream("ca", config.cond_dim, truncated=False),
        NoiseStream("dnm_text", config.cond_dim, truncated=False),
        NoiseStream("dnm_image", config.cond_dim, truncated=False),
    ]


SPEC = register_model(
    ModelSpec(
        name="drgan",
        summary="DR-GAN: AttnGAN trunk with semantic disentangling (SDM, SDL, RIRM) and distribution-normalising Ds",
        paper="Tan et al., DR-GAN: Distribution Regularization for Text-to-Image Generation, TNNLS 2023",
        config_cls=DRGANConfig,
        presets=PRESETS,
        train_presets=TRAIN_PRESETS,
        recipe_cls=DRGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=noise_streams,
        default_truncation=lambda config: None,
        notes=(
            "Code defects fixed by default (docs/models/drgan.md): sdl_variance=fixed (the code's variance is "
            "identically 0; --set sdl_variance=code), dnm_kl=fixed (the code adds the real latent's KL twice; "
            "--set dnm_kl=code), mask_divisor=22/20 constant (the code divides the SDM masks by the running batch "
            "size; --set mask_divisor=0), SDL statistics over the actual global batch (the code repeats means "
            "cfg.TRAIN.BATCH_SIZE times: any other batch fails), no unused layers (D_NET256's h_net2/h_net3 etc.).",
            "Constants as keys: sdl_base 10.1, rirm_weight 1e-5, dal_weight1..3 1e-6/1e-4/1e-2, dnm_rec_weight "
            "0.01, dnm_weight 0.1, dnm_kl_weight 0.01.",
            "Sizes scale with --image-size: S0 = first stage side (64 at 256 px) is the D's VAE output and the DAL "
            "target; the SDL and RIRM divide by the SDM's hidden side (the code's literal 64 and 128 at 256 px).",
            "D convs are spectral-normed without biases and the logit convs are spectral-normed too (the code: "
            "biases, plain outlogits conv); the D noise streams are shared by a step's D calls (the code draws "
            "fresh noise per call).",
            "BCE-with-logits instead of sigmoid + nn.BCELoss; wrong pairs and DAMSM over the global batch.",
        ),
    )
)

__all__ = ["SPEC", "DRGANConfig", "DRGANDiscriminator", "DRGANGenerator", "DRGANRecipe"]
