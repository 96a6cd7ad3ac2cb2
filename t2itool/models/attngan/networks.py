"""AttnGAN's networks (Xu et al., CVPR 2018; taoxugit/AttnGAN code/model.py G_NET, D_NET64/128/256): the three-stage
generator with word attention, one discriminator per stage, builders from `AttnGANConfig` and the code's init.

The generator draws no random numbers: z and the conditioning-augmentation noise eps are inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from t2itool.models.attngan.config import AttnGANConfig
from t2itool.models.blocks.conditioning import ConditioningAugmentation
from t2itool.models.blocks.stage_generator import ImageHead, InitStage, NextStage, stage_sizes
from t2itool.models.blocks.staged_gan import StageDiscriminator, init_weights

__all__ = [
    "AttnGANDiscriminator",
    "AttnGANGenerator",
    "AttnGANOutput",
    "build_discriminators",
    "build_generator",
    "init_weights",
]


class AttnGANOutput(NamedTuple):
    """images: [(B, 3, S/4, S/4), (B, 3, S/2, S/2), (B, 3, S, S)] in [-1, 1];
    attention: [(B, T, S/4, S/4), (B, T, S/2, S/2)], word attention of the second and third stage, computed on the
    previous stage's hidden map (zero at padding words, summing to one over the others);
    mu, logvar: (B, cond_dim), the conditioning-augmentation Gaussian for the KL term."""

    images: list[torch.Tensor]
    attention: list[torch.Tensor]
    mu: torch.Tensor
    logvar: torch.Tensor


class AttnGANGenerator(nn.Module):
    """(z, eps, sentence, words, mask) -> AttnGANOutput (code/model.py G_NET with BRANCH_NUM 3).

    c = CA(sentence, eps); stage 1: InitStage(concat(c, z)) -> gf_dim x S/4 (c first, as the code); stages 2, 3:
    NextStage with word attention, each doubling the side; an ImageHead after every stage.
    """

    def __init__(
        self,
        image_size: int = 256,
        gf_dim: int = 32,
        z_dim: int = 100,
        cond_dim: int = 100,
        text_dim: int = 256,
        r_num: int = 2,
        attention_mask: str = "fixed",
    ) -> None:
        super().__init__()
        self.image_size, self.z_dim, self.cond_dim, self.text_dim = image_size, z_dim, cond_dim, text_dim
        self.sizes = stage_sizes(image_size, 3)
        self.ca = ConditioningAugmentation(text_dim, cond_dim, "glu")
        self.init_stage = InitStage(cond_dim + z_dim, gf_dim, self.sizes[0])
        self.next_stages = nn.ModuleList(NextStage(gf_dim, text_dim, r_num, attention_mask) for _ in range(2))
        self.image_heads = nn.ModuleList(ImageHead(gf_dim) for _ in range(3))

    def forward(
        self,
        z: torch.Tensor,
        eps: torch.Tensor,
        sentence: torch.Tensor,
        words: torch.Tensor,
        mask: torch.Tensor,
    ) -> AttnGANOutput:
        """z (B, z_dim), eps (B, cond_dim) ("ca" noise), sentence (B, text_dim), words (B, text_dim, T),
        mask (B, T) bool True at padding."""
        batch = z.shape[0]
        assert z.shape == (batch, self.z_dim), f"z {tuple(z.shape)}"
        assert words.dim() == 3 and words.shape[:2] == (batch, self.text_dim), f"words {tuple(words.shape)}"
        c_code, mu, logvar = self.ca(sentence, eps)
        hidden = self.init_stage(torch.cat((c_code, z), dim=1))
        images, attention = [self.image_heads[0](hidden)], []
        for stage, head in zip(self.next_stages, self.image_heads[1:], strict=True):
            hidden, stage_attention = stage(hidden, words, mask)
            images.append(head(hidden))
            attention.append(stage_attention)
        return AttnGANOutput(images, attention, mu, logvar)


class AttnGANDiscriminator(StageDiscriminator):
    """One stage's discriminator (code/model.py D_NET64 / D_NET128 / D_NET256); the shared `StageDiscriminator`."""


def build_generator(config: AttnGANConfig) -> AttnGANGenerator:
    return AttnGANGenerator(
        config.image_size,
        config.gf_dim,
        config.z_dim,
        config.cond_dim,
        config.text_dim,
        config.r_num,
        config.attention_mask,
    )


def build_discriminators(config: AttnGANConfig) -> dict[str, AttnGANDiscriminator]:
    """One discriminator per stage, smallest first, named by stage size: {"d64": ..., "d128": ..., "d256": ...}."""
    return {
        f"d{size}": AttnGANDiscriminator(size, config.df_dim, config.text_dim, config.unconditional_head)
        for size in config.stage_sizes
    }
