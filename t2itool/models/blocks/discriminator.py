"""DF-GAN-style discriminator pieces shared by `dfgan` and `dfgan-ssacn`: the residual down block and the
sentence-conditioned logit head (tobran/DF-GAN code/models/GAN.py, wtliao/text2image model.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks.penalty_conv import PenaltyConv2d


class DownBlock(nn.Module):
    """Residual discriminator block that halves the resolution (DF-GAN's D_Block, 2020 and 2022 code).

    residual = conv4x4/s2 (no bias) -> LReLU 0.2 -> conv3x3 (no bias) -> LReLU 0.2
    shortcut = conv1x1 (with bias, only when in_channels != out_channels) -> avg_pool 2
    out = shortcut + gain * residual, `gain` a learnable scalar initialised at 0.
    Only the layers `forward` uses are built (the official code also builds an unused 1x1 conv when in == out).
    Convolutions are `PenaltyConv2d` (MA-GP differentiates this block's input gradient).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            PenaltyConv2d(in_channels, out_channels, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            PenaltyConv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = PenaltyConv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.avg_pool2d(skip, 2) + self.gain * self.residual(x)


class ConditionalHead(nn.Module):
    """DF-GAN's conditional logit head ("NetC"): sentence tiled 4x4 and concatenated with the 4x4 image features.

    concat(features (B, feature_channels, 4, 4), sentence tiled) -> conv3x3 -> hidden_channels (no bias) -> LReLU 0.2
    -> conv4x4 valid -> 1 (no bias). Returns logits of shape (B,).
    DF-GAN 2022: feature_channels = 8 ndf, hidden = 2 ndf; SSA-GAN (2020 NetD): feature_channels = 16 ndf,
    hidden = 2 ndf.
    """

    def __init__(self, feature_channels: int, cond_dim: int, hidden_channels: int) -> None:
        super().__init__()
        self.joint = nn.Sequential(
            PenaltyConv2d(feature_channels + cond_dim, hidden_channels, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            PenaltyConv2d(hidden_channels, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = features.shape
        assert (height, width) == (4, 4), f"ConditionalHead expects 4x4 features, got {tuple(features.shape)}"
        tiled = sentence.view(batch, -1, 1, 1).expand(-1, -1, 4, 4)
        return self.joint(torch.cat([features, tiled], dim=1)).view(batch)
