"""SD-GAN's generator (Yin et al., CVPR 2019, Sec. 3.3): AttnGAN's three-stage trunk whose up-sampling layers end in
semantic-conditioned batch norm (SCBN), sentence- or word-level per stage. The discriminators are AttnGAN's stage
discriminators (`blocks.staged_gan.StageDiscriminator`); the Siamese branches share every weight, so one generator
and one set of discriminators serve both.

SCBN: BN(x | c) = (gamma + gamma_c) * (x - mu(x)) / sigma(x) + (beta + beta_c), gamma, beta BN's own affine.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from t2itool.models.blocks.conditioning import ConditioningAugmentation
from t2itool.models.blocks.stage_generator import (
    ConditionalNorm,
    ImageHead,
    InitStage,
    NextStage,
    NormFactory,
    stage_sizes,
)
from t2itool.models.blocks.word_attention import WordAttention
from t2itool.models.sdgan.config import SDGANConfig


class SCBNCondition(NamedTuple):
    """What every SCBN layer of one forward pass receives: sentence (B, D), words (B, D, T), mask (B, T) True at
    padding."""

    sentence: torch.Tensor
    words: torch.Tensor
    mask: torch.Tensor | None


class _SCBN(ConditionalNorm):
    """Batch norm without its own affine, followed by (gamma + gamma_c) * x_hat + (beta + beta_c); subclasses give
    gamma_c, beta_c from the condition (broadcastable to x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.weight = nn.Parameter(torch.ones(channels))  # gamma, BN's usual affine
        self.bias = nn.Parameter(torch.zeros(channels))  # beta

    def condition_affine(self, x_hat: torch.Tensor, condition: SCBNCondition) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, condition: SCBNCondition) -> torch.Tensor:
        x_hat = self.norm(x)
        gamma_c, beta_c = self.condition_affine(x_hat, condition)
        gamma = self.weight.view(1, -1, 1, 1) + gamma_c
        beta = self.bias.view(1, -1, 1, 1) + beta_c
        return gamma * x_hat + beta


class SentenceSCBN(_SCBN):
    """Sentence-level SCBN: `mlp` (Linear text_dim -> hidden, ReLU, Linear hidden -> 2C) maps the sentence vector to
    channel-wise gamma_c, beta_c (B, C, 1, 1)."""

    def __init__(self, channels: int, text_dim: int, hidden: int) -> None:
        super().__init__(channels)
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels * 2))

    def condition_affine(self, x_hat: torch.Tensor, condition: SCBNCondition) -> tuple[torch.Tensor, torch.Tensor]:
        gamma_c, beta_c = self.mlp(condition.sentence).to(x_hat.dtype).chunk(2, dim=1)
        return gamma_c[:, :, None, None], beta_c[:, :, None, None]


class WordSCBN(_SCBN):
    """Word-level SCBN: the words are projected into the visual space (1x1 conv to C), every location of the
    normalised map attends over them (padding masked), and 1x1 convs turn the word context into spatial
    gamma_c, beta_c (B, C, H, W)."""

    def __init__(self, channels: int, word_dim: int, mask_mode: str = "fixed") -> None:
        super().__init__(channels)
        self.attention = WordAttention(channels, word_dim, mask_mode)
        self.to_gamma = nn.Conv2d(channels, channels, 1)
        self.to_beta = nn.Conv2d(channels, channels, 1)

    def condition_affine(self, x_hat: torch.Tensor, condition: SCBNCondition) -> tuple[torch.Tensor, torch.Tensor]:
        context, _ = self.attention(x_hat, condition.words.to(x_hat.dtype), condition.mask)
        return self.to_gamma(context), self.to_beta(context)


def scbn_factory(level: str, text_dim: int, hidden: int, mask_mode: str) -> NormFactory | None:
    """The norm-layer factory of one stage's up-sampling layers (None: AttnGAN's plain batch norm)."""
    if level == "sentence":
        return lambda channels: SentenceSCBN(channels, text_dim, hidden)
    if level == "word":
        return lambda channels: WordSCBN(channels, text_dim, mask_mode)
    if level == "none":
        return None
    raise ValueError(f"SCBN level {level!r}: choose sentence, word or none")


class SDGANOutput(NamedTuple):
    """images: [(B, 3, S/4, S/4), (B, 3, S/2, S/2), (B, 3, S, S)] in [-1, 1]; attention: the trunk's word attention
    of stages 2 and 3 [(B, T, S/4, S/4), (B, T, S/2, S/2)]; mu, logvar: (B, cond_dim) of the CA."""

    images: list[torch.Tensor]
    attention: list[torch.Tensor]
    mu: torch.Tensor
    logvar: torch.Tensor


class SDGANGenerator(nn.Module):
    """(z, eps, sentence, words, mask) -> SDGANOutput: AttnGAN's G_NET (CA, INIT_STAGE_G, two NEXT_STAGE_G with word
    attention, an image head per stage) with every up-sampling layer's batch norm replaced by the stage's SCBN."""

    def __init__(self, config: SDGANConfig) -> None:
        super().__init__()
        c = config
        self.image_size, self.z_dim, self.cond_dim, self.text_dim = c.image_size, c.z_dim, c.cond_dim, c.text_dim
        self.sizes = stage_sizes(c.image_size, 3)
        norms = [scbn_factory(level, c.text_dim, c.scbn_hidden, c.attention_mask) for level in c.scbn_levels]
        self.ca = ConditioningAugmentation(c.text_dim, c.cond_dim, "glu")
        self.init_stage = InitStage(c.cond_dim + c.z_dim, c.gf_dim, self.sizes[0], norm_layer=norms[0])
        self.next_stages = nn.ModuleList(
            NextStage(c.gf_dim, c.text_dim, c.r_num, c.attention_mask, norm_layer=norm) for norm in norms[1:]
        )
        self.image_heads = nn.ModuleList(ImageHead(c.gf_dim) for _ in range(3))

    def forward(
        self, z: torch.Tensor, eps: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> SDGANOutput:
        batch = z.shape[0]
        assert z.shape == (batch, self.z_dim), f"z {tuple(z.shape)}"
        assert words.dim() == 3 and words.shape[:2] == (batch, self.text_dim), f"words {tuple(words.shape)}"
        condition = SCBNCondition(sentence, words, mask)
        c_code, mu, logvar = self.ca(sentence, eps)
        hidden = self.init_stage(torch.cat((c_code, z), dim=1), condition)
        images, attention = [self.image_heads[0](hidden)], []
        for stage, head in zip(self.next_stages, self.image_heads[1:], strict=True):
            hidden, stage_attention = stage(hidden, words, mask, condition)
            images.append(head(hidden))
            attention.append(stage_attention)
        return SDGANOutput(images, attention, mu, logvar)


def build_generator(config: SDGANConfig) -> SDGANGenerator:
    return SDGANGenerator(config)
