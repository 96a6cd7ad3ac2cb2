"""`dfgan-ssacn`: SSA-GAN (Liao, Hu, Bodo, Rosenhahn, Yang; CVPR 2022), DF-GAN with semantic-spatial aware blocks.

Registers the model spec: config, paper presets (birds/coco), recipe, generator builder and sampling function.
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.dfgan_ssacn.config import SSAGANConfig
from t2itool.models.dfgan_ssacn.networks import NetD, NetG, build_head
from t2itool.models.dfgan_ssacn.recipe import SSAGANRecipe
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.noise import NoiseStream


def build_generator(config: SSAGANConfig) -> NetG:
    return NetG(config.ngf, config.noise_dim, config.cond_dim, config.image_size, config.mask_hidden)


def generate(generator: NetG, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    """One image per row and its masks, smallest first: {"mask": [(B,1,4,4), ..., (B,1,S,S)]}."""
    image, masks = generator(noise["z"], text.sentence)
    return GeneratorOutput(images=[image], maps={"mask": masks})


SPEC = register_model(
    ModelSpec(
        name="dfgan-ssacn",
        summary="SSA-GAN: DF-GAN with semantic-spatial aware conditional BN, text-guided masks and the DAMSM loss",
        paper="Liao et al., Text to Image Generation with Semantic-Spatial Aware GAN, CVPR 2022",
        config_cls=SSAGANConfig,
        presets={"birds": {"image_size": 256, "ngf": 64, "ndf": 64}, "coco": {"image_size": 256, "ngf": 64, "ndf": 64}},
        # Global batch of the official run (one process, wtliao/text2image cfg/{bird,coco}.yml): with N processes each
        # takes 24 / N, and batch norm runs over all of them (config sync_batchnorm).
        train_presets={"birds": {"global_batch": 24, "epochs": 600}, "coco": {"global_batch": 24, "epochs": 120}},
        recipe_cls=SSAGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=lambda config: [NoiseStream("z", config.noise_dim)],
        default_truncation=lambda config: config.truncation,
    )
)

__all__ = ["SPEC", "NetD", "NetG", "SSAGANConfig", "SSAGANRecipe", "build_generator", "build_head", "generate"]
