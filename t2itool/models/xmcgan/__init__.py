"""`xmcgan`: XMC-GAN (Zhang, Koh, Baldridge, Lee, Yang; "Cross-Modal Contrastive Learning for Text-to-Image
Generation", CVPR 2021), re-implemented in PyTorch from the paper and the facts of google-research/
xmcgan_image_generation (JAX/Flax).

- config:         `XMCGANConfig` (every constant of the released COCO config, with help text) and the presets
- networks:       the attentional self-modulation generator and the contrastive projection discriminator
- losses:         hinge, sentence-image, word-region and image-image contrastive losses, as functions of tensors
- image_features: the frozen ImageNet network (ResNet-50 logits or VGG-19 fc7) of the image-image loss
- recipe:         the training step (d_steps discriminator updates on their own sub-batches, one generator update)
"""

from __future__ import annotations

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.models.xmcgan.config import PRESETS, TRAIN_PRESETS, XMCGANConfig
from t2itool.models.xmcgan.networks import Discriminator, Generator, build_discriminator, build_generator
from t2itool.models.xmcgan.recipe import XMCGANRecipe
from t2itool.noise import NoiseStream


def generate(generator: Generator, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    """One image per row and G's word attention at 16 x 16: {"attention": [(B, T, 16, 16)]}."""
    if text.words is None:
        raise ValueError("xmcgan needs word features (its generator attends to the words)")
    result = generator(noise["z"], text.sentence, text.words, text.mask)
    return GeneratorOutput(images=[result.image], maps={"attention": [result.attention]})


NOTES = (
    "text: the DAMSM text encoder (256-d words and sentence) by default, as the Eun0/XMC-GAN port; the paper's "
    "BERT-base token features (768-d) through --text precomputed after `prep --caption-features`, with "
    "--set sentence_dim=768 --set word_dim=768 (only the attention, region and projection widths change)",
    "image-image loss on a frozen network: ResNet-50 logits as the code (image_encoder=resnet50, default), VGG-19 fc7 "
    "for the paper's VGG (vgg19), or none; torchvision weights from image_encoder_weights or the torch hub cache, "
    "inputs ImageNet-normalised at 224 px (the code feeds its own Flax ResNet [0, 1] images)",
    "contrastive terms over the global batch of all processes (the code: per device, 7 images)",
    "generator batch norm over the global batch (sync_batchnorm=true; the code: per device)",
    "schedule: d_steps=2 sub-batches per step; D updates on each, G on the last, its gradient taken through D before "
    "D's last update (the code's train_g_d); --batch-size is the whole step's batch: the presets' 112 = 2 x the "
    "code's batch_size 56",
    "generator batch-norm running statistics also move on the discriminator-only sub-batches (the code discards them)",
    "birds preset is ours (XMC-GAN never ran on CUB): the COCO settings at 128 px with 18 words",
    "32 and 64 px use widths derived from the 128 px lists (BigGAN's own 64 px networks); the code builds 128/256 only",
    "no released weights exist (xmcgan#1); no published CUB figures",
)

SPEC = register_model(
    ModelSpec(
        name="xmcgan",
        summary="XMC-GAN: attentional self-modulation G, contrastive projection D, sentence/word/image contrastive "
        "losses",
        paper="Zhang et al., Cross-Modal Contrastive Learning for Text-to-Image Generation, CVPR 2021",
        config_cls=XMCGANConfig,
        presets=PRESETS,
        train_presets=TRAIN_PRESETS,
        recipe_cls=XMCGANRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=lambda config: [NoiseStream("z", config.z_dim)],
        default_truncation=lambda config: config.truncation,
        notes=NOTES,
    )
)

__all__ = [
    "SPEC",
    "Discriminator",
    "Generator",
    "XMCGANConfig",
    "XMCGANRecipe",
    "build_discriminator",
    "build_generator",
    "generate",
]
