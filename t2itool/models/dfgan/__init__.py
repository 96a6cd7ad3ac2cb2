"""`dfgan`: DF-GAN (Tao, Tang, Wu, Jing, Bao, Xu; CVPR 2022), following the 2022 public code's design.

Registers the model spec: config, paper presets (birds/coco/flowers), recipe, generator builder and sampling function.
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.dfgan.config import DFGANConfig
from t2itool.models.dfgan.networks import NetD, NetG, build_head
from t2itool.models.dfgan.recipe import DFGANRecipe
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.noise import NoiseStream


def build_generator(config: DFGANConfig) -> NetG:
    return NetG(config.ngf, config.noise_dim, config.cond_dim, config.image_size)


def generate(generator: NetG, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    return GeneratorOutput(images=[generator(noise["z"], text.sentence)])


SPEC = register_model(
    ModelSpec(
        name="dfgan",
        summary="DF-GAN: one-stage generator with deep text-image fusion, MA-GP and hinge loss (2022 code)",
        paper="Tao et al., DF-GAN: A Simple and Effective Baseline for Text-to-Image Synthesis, CVPR 2022",
        config_cls=DFGANConfig,
        presets={"birds": {"image_size": 256}, "coco": {"image_size": 256}, "flowers": {"image_size": 256}},
        # Global batch of the paper run (one process); epochs as range(1, max_epoch) runs in code/src/train.py with
        # code/cfg/{bird,coco,flower}.yml max_epoch 1301 / 301 / 1001.
        train_presets={
            "birds": {"global_batch": 32, "epochs": 1300},
            "coco": {"global_batch": 32, "epochs": 300},
            "flowers": {"global_batch": 32, "epochs": 1000},
        },
        recipe_cls=DFGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=lambda config: [NoiseStream("z", config.noise_dim)],
        default_truncation=lambda config: config.truncation,
    )
)

__all__ = ["SPEC", "DFGANConfig", "DFGANRecipe", "NetD", "NetG", "build_generator", "build_head", "generate"]
