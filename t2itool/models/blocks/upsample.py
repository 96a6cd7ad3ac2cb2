"""Up-sampling blocks of the StackGAN / AttnGAN lineage: nearest x2 -> conv3x3 (no bias) -> BN -> activation.

AttnGAN (taoxugit/AttnGAN code/model.py upBlock) doubles the conv's output channels and halves them with a GLU;
StackGAN (hanzhanggit/StackGAN-Pytorch code/model.py upBlock) uses ReLU. The module is an `nn.Sequential` whose
indices match both official classes (1 = conv, 2 = batch norm), so released weights map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, no bias (both official codes)."""
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)


def up_block(in_channels: int, out_channels: int, activation: str = "glu") -> nn.Sequential:
    """Nearest x2 -> conv3x3 -> BN -> GLU (AttnGAN) or ReLU (StackGAN): (B, in, H, W) -> (B, out, 2H, 2W)."""
    if activation == "glu":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv3x3(in_channels, out_channels * 2),
            nn.BatchNorm2d(out_channels * 2),
            GLU(),
        )
    if activation == "relu":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv3x3(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
    raise ValueError(f"activation {activation!r}: choose glu or relu")
