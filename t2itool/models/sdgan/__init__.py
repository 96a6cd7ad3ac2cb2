"""`sdgan`: SD-GAN (Yin, Liu, Sheng, Yu, Wang, Shao; CVPR 2019), built from the paper (no official code was released).

config (SDGANConfig, presets), networks (SCBN and the generator on AttnGAN's trunk), losses (the Siamese contrastive
loss), recipe (one Siamese training step). Registers the model spec.
"""

from __future__ import annotations

import dataclasses

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.models.sdgan.config import OPEN, PRESETS, TRAIN_PRESETS, SDGANConfig
from t2itool.models.sdgan.losses import contrastive_loss
from t2itool.models.sdgan.networks import SDGANGenerator, SentenceSCBN, WordSCBN, build_generator
from t2itool.models.sdgan.recipe import SDGANRecipe
from t2itool.noise import NoiseStream


def generate(generator: SDGANGenerator, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    """Images at the three stage sizes, smallest first, and {"attention": [...]}: the trunk's word attention of the
    second and third stage (one map per caption token)."""
    if text.words is None or text.mask is None:
        raise ValueError("sdgan needs word features: its text source must be the DAMSM text encoder")
    out = generator(noise["z"], noise["ca"], text.sentence, text.words, text.mask)
    return GeneratorOutput(images=list(out.images), maps={"attention": list(out.attention)})


def noise_streams(config: SDGANConfig) -> list[NoiseStream]:
    return [NoiseStream("z", config.z_dim), NoiseStream("ca", config.cond_dim, truncated=False)]


_OPEN_KEYS = ", ".join(f.name for f in dataclasses.fields(SDGANConfig) if f.metadata.get("help", "").startswith(OPEN))

SPEC = register_model(
    ModelSpec(
        name="sdgan",
        summary="SD-GAN: AttnGAN trunk with semantic-conditioned batch norm (SCBN) and a Siamese contrastive loss",
        paper="Yin et al., Semantics Disentangling for Text-to-Image Generation, CVPR 2019",
        config_cls=SDGANConfig,
        presets=PRESETS,
        train_presets=TRAIN_PRESETS,
        recipe_cls=SDGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=noise_streams,
        default_truncation=lambda config: None,
        notes=(
            "No official code: built from the paper. Not given by the paper (defaults are AttnGAN's values, or a "
            f"stated choice where AttnGAN has none): {_OPEN_KEYS}.",
            "SCBN levels per stage: sentence-level in G0, word-level in G1 and G2 by default (a choice; the paper "
            "defines both); --set scbn_stage1=word etc. The last layer of every SCBN condition network starts at "
            "zero, so training starts from plain batch norm (the paper gives no init).",
            "Siamese pairs: both branches share G and the Ds and see the same z and CA noise; D's real and wrong-pair "
            "terms use the first caption's image (the only real image of the pair in the batch); its fake terms "
            "and G's adversarial/KL terms average both branches; DAMSM is the mean of both branches' losses (the "
            "second without same-class masking: its image's class is not in the batch).",
            "L_c acts on the final stage D's globally pooled 8 ndf features, L2-normalised, and trains G only "
            "(contrastive_stage, contrastive_normalize, contrastive_weight 1).",
            "Generator EMA 0.999 and orthogonal init as AttnGAN's code; BCE-with-logits as attngan.",
        ),
    )
)

__all__ = ["SPEC", "SDGANConfig", "SDGANGenerator", "SDGANRecipe", "SentenceSCBN", "WordSCBN", "contrastive_loss"]
