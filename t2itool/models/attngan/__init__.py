"""`attngan`: AttnGAN (Xu, Zhang, Huang, Zhang, Gan, Huang, He; CVPR 2018), following taoxugit/AttnGAN's code.

config (AttnGANConfig, presets), networks (the three-stage generator with word attention and the per-stage
discriminators), losses (BCE-with-logits D and G terms), recipe (one training step), official_names (official
state-dict name -> ours). Registers the model spec.
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.attngan.config import PRESETS, TRAIN_PRESETS, AttnGANConfig
from t2itool.models.attngan.networks import AttnGANDiscriminator, AttnGANGenerator, build_generator
from t2itool.models.attngan.recipe import AttnGANRecipe
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.noise import NoiseStream


def generate(generator: AttnGANGenerator, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    """Images at the three stage sizes, smallest first, and {"attention": [(B, T, S/4, S/4), (B, T, S/2, S/2)]}: the
    word attention of the second and third stage (one map per caption token, zero at padding)."""
    if text.words is None or text.mask is None:
        raise ValueError("attngan needs word features: its text source must be the DAMSM text encoder")
    out = generator(noise["z"], noise["ca"], text.sentence, text.words, text.mask)
    return GeneratorOutput(images=list(out.images), maps={"attention": list(out.attention)})


def noise_streams(config: AttnGANConfig) -> list[NoiseStream]:
    # z ~ N(0, I) (the code never truncates; `sample --truncation` applies to z only); the CA noise is never truncated.
    return [NoiseStream("z", config.z_dim), NoiseStream("ca", config.cond_dim, truncated=False)]


SPEC = register_model(
    ModelSpec(
        name="attngan",
        summary="AttnGAN: three-stage generator with word attention, per-stage BCE discriminators, DAMSM loss",
        paper="Xu et al., AttnGAN: Fine-Grained Text to Image Generation with Attentional GANs, CVPR 2018",
        config_cls=AttnGANConfig,
        presets=PRESETS,
        train_presets=TRAIN_PRESETS,
        recipe_cls=AttnGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=noise_streams,
        default_truncation=lambda config: None,
        notes=(
            "attention_mask=fixed (default) applies each sample's padding mask to its own pixels; the official "
            "code/GlobalAttention.py tiles the (B, T) mask so that for batch > 1 pixels receive other samples' masks. "
            "--set attention_mask=official reproduces that (needed to match released checkpoints exactly).",
            "Losses use BCE-with-logits on the heads' logits instead of nn.BCELoss on sigmoid outputs: the same value "
            "without float32 saturation (the code clamps log(0) to -100).",
            "Stages are at 1/4, 1/2 and 1 of --image-size (64/128/256 at 256 px; 16/32/64 at 64 px); discriminators "
            "of stages below 64 px (no official class) stride fewer of their four encoding convs, ending at "
            "8 ndf x 4 x 4.",
            "Wrong pairs and the DAMSM loss are formed over the global batch: N processes with B/N samples train "
            "as one process with B (the code: one GPU).",
            "Generator EMA 0.999 by default (the code saves the averaged G); orthogonal init as code/miscc/utils.py.",
            "The DAMSM gammas come from the config (4, 5, 10 as every AttnGAN cfg), not from the DAMSM checkpoint.",
        ),
    )
)

__all__ = [
    "SPEC",
    "AttnGANConfig",
    "AttnGANDiscriminator",
    "AttnGANGenerator",
    "AttnGANRecipe",
    "build_generator",
    "generate",
]
