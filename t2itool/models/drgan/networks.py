"""DR-GAN's generator (Tan et al., TNNLS 2023, Sec. III-B; DR-GAN repo model.py G_NET, NEXT_STAGE_G, GET_IMAGE_G):
AttnGAN's first stage, two refining stages with the Semantic Disentangling Module (SDM), a three-conv image head per
stage. The generator's image path needs no real image; the SDL and RIRM parts that do (the real-image encoder of each
SDM) are separate calls made by the training step, so sampling runs on captions alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from t2itool.models.blocks.conditioning import ConditioningAugmentation
from t2itool.models.blocks.stage_generator import GLUResBlock, InitStage, glu_up_block, stage_sizes
from t2itool.models.blocks.upsample import conv3x3
from t2itool.models.blocks.word_attention import WordAttention
from t2itool.models.drgan.config import DRGANConfig


class ImageHead(nn.Module):
    """hidden (B, C, H, W) -> image (B, 3, H, W): conv3x3 C -> C/2, BN, tanh, conv3x3 -> C/4, BN, tanh, conv3x3 -> 3,
    tanh (model.py GET_IMAGE_G; the tanh between convs is the code's)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.img = nn.Sequential(
            conv3x3(channels, channels // 2), nn.BatchNorm2d(channels // 2), nn.Tanh(),
            conv3x3(channels // 2, channels // 4), nn.BatchNorm2d(channels // 4), nn.Tanh(),
            conv3x3(channels // 4, 3), nn.Tanh(),
        )  # fmt: skip

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.img(hidden)


def mask_net(channels: int) -> nn.Sequential:
    """f of the SDM masks: conv3x3 -> BN -> LReLU 0.2 -> conv1x1 -> BN (model.py encode_non_local, no biases)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2),
        nn.Conv2d(channels, channels, 1, 1, 0, bias=False), nn.BatchNorm2d(channels),
    )  # fmt: skip


class SDMParts(NamedTuple):
    """The SDL's inputs of one SDM, each (B, C) after global pooling and the shared reduction: x11 (kept text part),
    r11 (residual text part), x12 (kept image part), r12 (residual image part)."""

    x11: torch.Tensor
    r11: torch.Tensor
    x12: torch.Tensor
    r12: torch.Tensor


class SDMStage(nn.Module):
    """hidden h (B, C, H, W), words, mask -> (hidden (B, C, 2H, 2W), attention (B, T, H, W), SDMParts).

    c0 = word attention(h); c1 = R_NUM GLU residual blocks(c0); M1 = sigmoid(f1(c1) / divisor), x11 = c1 * M1,
    r11 = c1 - x11; M2 = sigmoid(f2(h) / divisor), x12 = h * M2, r12 = h - x12; concat(x12, x11) -> R_NUM residual
    blocks at 2C -> GLU up-block to C. `divisor` is `mask_divisor`, or the batch size when it is 0 (the code).
    `encode_real(real)` gives the real image's feature map (B, C, H, W) (conv 3 -> C/2 k2 p1, BN, LReLU,
    conv -> C k2, BN: model.py encode_image_by_2timesxx) and its pooled, reduced vector (B, C).
    """

    def __init__(self, channels: int, word_dim: int, num_residual: int, mask_mode: str, mask_divisor: float) -> None:
        super().__init__()
        self.channels, self.mask_divisor = int(channels), float(mask_divisor)
        self.attention = WordAttention(channels, word_dim, mask_mode)
        self.text_residual = nn.ModuleList(GLUResBlock(channels) for _ in range(num_residual))
        self.text_mask = mask_net(channels)
        self.image_mask = mask_net(channels)
        self.residual = nn.ModuleList(GLUResBlock(channels * 2) for _ in range(num_residual))
        self.up_block = glu_up_block(channels * 2, channels)
        # The SDL's shared projection (model.py global_reduction: conv1x1 with bias, BN, ReLU; kaiming init there).
        self.reduction = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU())
        self.real_encoder = nn.Sequential(
            nn.Conv2d(3, channels // 2, 2, 1, 1, bias=False), nn.BatchNorm2d(channels // 2), nn.LeakyReLU(0.2),
            nn.Conv2d(channels // 2, channels, 2, 1, 0, bias=False), nn.BatchNorm2d(channels),
        )  # fmt: skip

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def forward(
        self, hidden: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, SDMParts]:
        divisor = self.mask_divisor or float(hidden.shape[0])
        context, attention = self.attention(hidden, words, mask)
        for block in self.text_residual:
            context = block(context)
        x11 = context * torch.sigmoid(self.text_mask(context) / divisor)
        r11 = context - x11
        x12 = hidden * torch.sigmoid(self.image_mask(hidden) / divisor)
        r12 = hidden - x12
        fused = torch.cat((x12, x11), dim=1)
        for block in self.residual:
            fused = block(fused)
        parts = SDMParts(self.pool(x11), self.pool(r11), self.pool(x12), self.pool(r12))
        return self.up_block(fused), attention, parts

    def encode_real(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.real_encoder(real)
        return features, self.pool(features)


class DRGANOutput(NamedTuple):
    """images: three stages, smallest first, in [-1, 1]; attention: stages 2 and 3's word attention; mu, logvar:
    the CA Gaussian; parts: the two SDMs' SDMParts."""

    images: list[torch.Tensor]
    attention: list[torch.Tensor]
    mu: torch.Tensor
    logvar: torch.Tensor
    parts: list[SDMParts]


class DRGANGenerator(nn.Module):
    """(z, eps, sentence, words, mask) -> DRGANOutput (model.py G_NET with BRANCH_NUM 3): c = CA(sentence, eps);
    InitStage(concat(c, z)) -> GF x S/4; two SDM stages; an ImageHead after every stage."""

    def __init__(self, config: DRGANConfig) -> None:
        super().__init__()
        c = config
        self.image_size, self.z_dim, self.cond_dim, self.text_dim = c.image_size, c.z_dim, c.cond_dim, c.text_dim
        self.sizes = stage_sizes(c.image_size, 3)
        self.ca = ConditioningAugmentation(c.text_dim, c.cond_dim, "glu")
        self.init_stage = InitStage(c.cond_dim + c.z_dim, c.gf_dim, self.sizes[0])
        self.next_stages = nn.ModuleList(
            SDMStage(c.gf_dim, c.text_dim, c.r_num, c.attention_mask, c.mask_divisor) for _ in range(2)
        )
        self.image_heads = nn.ModuleList(ImageHead(c.gf_dim) for _ in range(3))

    def forward(
        self, z: torch.Tensor, eps: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> DRGANOutput:
        batch = z.shape[0]
        assert z.shape == (batch, self.z_dim), f"z {tuple(z.shape)}"
        assert words.dim() == 3 and words.shape[:2] == (batch, self.text_dim), f"words {tuple(words.shape)}"
        c_code, mu, logvar = self.ca(sentence, eps)
        hidden = self.init_stage(torch.cat((c_code, z), dim=1))
        images, attention, parts = [self.image_heads[0](hidden)], [], []
        for stage, head in zip(self.next_stages, self.image_heads[1:], strict=True):
            hidden, stage_attention, stage_parts = stage(hidden, words, mask)
            images.append(head(hidden))
            attention.append(stage_attention)
            parts.append(stage_parts)
        return DRGANOutput(images, attention, mu, logvar, parts)

    def reconstruct_real(self, stage: int, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RIRM of refining stage `stage` (0 or 1): the real image of the hidden map's side, encoded by that SDM's
        real encoder and decoded by the previous stage's image head (model.py GT_img2 = img_net1(I_image1)).
        Returns (reconstruction (B, 3, H, W), the real vector (B, C) for the SDL)."""
        features, vector = self.next_stages[stage].encode_real(real)
        return self.image_heads[stage](features), vector


def build_generator(config: DRGANConfig) -> DRGANGenerator:
    return DRGANGenerator(config)
