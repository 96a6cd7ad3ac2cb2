"""`stackgan`: StackGAN (Zhang, Xu, Li, Zhang, Wang, Huang, Metaxas; ICCV 2017), after hanzhanggit/StackGAN-Pytorch.

networks.py: stage-I / stage-II generators and discriminators; losses.py: matching-aware BCE losses and the KL term;
config.py: `StackGANConfig` and the birds / coco presets; recipe.py: the training step of one stage;
official_names.py: official state-dict names -> ours. Registers the model spec.
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.models.stackgan.config import PRESETS, TRAIN_PRESETS, StackGANConfig
from t2itool.models.stackgan.networks import (
    StageIGenerator,
    StageIIGenerator,
    build_discriminator,
    build_generator,
    noise_sizes,
)
from t2itool.models.stackgan.recipe import StackGANRecipe
from t2itool.noise import NoiseStream


def generate(
    generator: StageIGenerator | StageIIGenerator, noise: dict[str, torch.Tensor], text: TextFeatures
) -> GeneratorOutput:
    """Stage 1: [image]; stage 2: [stage-I image, stage-II image] (smallest first)."""
    if isinstance(generator, StageIIGenerator):
        out = generator(text.sentence, noise["z"], noise["ca_stage1"], noise["ca_stage2"])
        return GeneratorOutput(images=[out.stage1_image, out.image])
    return GeneratorOutput(images=[generator(text.sentence, noise["z"], noise["ca_stage1"]).image])


def noise_streams(config: StackGANConfig) -> list[NoiseStream]:
    """z (N(0, I) in the paper; truncated only if --truncation is given) and each CA's eps (never truncated)."""
    return [NoiseStream(name, dim, truncated=name == "z") for name, dim in noise_sizes(config).items()]


# `--preset birds|coco` are stage I; the -stage2 presets set stage 2 and the paper's stage-II batch and epochs.
MODEL_PRESETS = {
    **{name: dict(values) for name, values in PRESETS.items()},
    **{f"{name}-stage2": {**values, "stage": 2} for name, values in PRESETS.items()},
}
LOOP_PRESETS = {
    **{name: dict(stages[1]) for name, stages in TRAIN_PRESETS.items()},
    **{f"{name}-stage2": dict(stages[2]) for name, stages in TRAIN_PRESETS.items()},
}

SPEC = register_model(
    ModelSpec(
        name="stackgan",
        summary="StackGAN: stage I (64 px) then stage II (256 px) on a frozen stage I, conditioning augmentation",
        paper="Zhang et al., StackGAN: Text to Photo-realistic Image Synthesis with Stacked GANs, ICCV 2017",
        config_cls=StackGANConfig,
        presets=MODEL_PRESETS,
        train_presets=LOOP_PRESETS,
        recipe_cls=StackGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=noise_streams,
        default_truncation=lambda config: None,
        notes=(
            "two commands: `train stackgan --set stage=1 ...`, then `train stackgan --set stage=2 --init-from "
            "STAGE1_RUN:generator ...` (the stage-I generator lands in generator.stage1, frozen, eval mode)",
            "presets birds / coco carry the stage-I batch and epochs; birds-stage2 / coco-stage2 set stage=2 with the "
            "stage-II ones (coco: batch 128, 120 epochs, then batch 40, 100 epochs)",
            "text: by default the DAMSM sentence vector (256-d) instead of the paper's char-CNN-RNN embeddings; for "
            "those: prep --caption-features char-CNN-RNN-embeddings.pickle, then --text precomputed --set "
            "text_dim=1024 (--set average_embeddings=4 averages 4 captions per step, as the TF code)",
            "heads return logits and the losses use BCE-with-logits: the code's sigmoid + BCELoss without saturation",
            "stage I inside stage II runs in eval mode (the code only detaches its output, its batch norms stay in "
            "training mode)",
            "wrong pairs (real image j, condition of sample j + 1) are formed over the global batch; the head also "
            "sees the last sample wrapped to the first (not in the loss), so its batch norm has B rows, not B - 1",
            "with several processes batch norm uses the global batch (the code's DataParallel: per GPU); "
            "--set sync_batchnorm=false for per-process statistics",
        ),
    )
)

__all__ = [
    "SPEC",
    "StackGANConfig",
    "StackGANRecipe",
    "build_discriminator",
    "build_generator",
    "generate",
    "noise_streams",
]
