"""Layers and losses shared by several GAN packages (and nothing model-specific).

DF-GAN-style discriminator pieces (`DownBlock`, `ConditionalHead`), used by `dfgan` and `dfgan-ssacn`, plus the
hinge losses and the matching-aware gradient penalty (MA-GP) of DF-GAN. Interfaces here are kept stable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DownBlock(nn.Module):
    """Residual discriminator block that halves the resolution (DF-GAN's D_Block, 2020 and 2022 code).

    residual = conv4x4/s2 (no bias) -> LReLU 0.2 -> conv3x3 (no bias) -> LReLU 0.2
    shortcut = conv1x1 (with bias, only when in_channels != out_channels) -> avg_pool 2
    out = shortcut + gain * residual, `gain` a learnable scalar initialised at 0.
    Only the layers `forward` uses are built (the official code also builds an unused 1x1 conv when in == out).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
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
            nn.Conv2d(feature_channels + cond_dim, hidden_channels, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden_channels, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = features.shape
        assert (height, width) == (4, 4), f"ConditionalHead expects 4x4 features, got {tuple(features.shape)}"
        tiled = sentence.view(batch, -1, 1, 1).expand(-1, -1, 4, 4)
        return self.joint(torch.cat([features, tiled], dim=1)).view(batch)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, mismatch: torch.Tensor | None = None) -> torch.Tensor:
    """Discriminator hinge loss; with `mismatch`: E relu(1 - real) + (E relu(1 + fake) + E relu(1 + mismatch)) / 2."""
    loss_real = F.relu(1.0 - real).mean()
    if mismatch is None:
        return loss_real + F.relu(1.0 + fake).mean()
    return loss_real + 0.5 * (F.relu(1.0 + fake).mean() + F.relu(1.0 + mismatch).mean())


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[logit(fake)]."""
    return -fake.mean()


def matching_aware_gp(
    logits: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    weight: float = 2.0,
    power: float = 6.0,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """DF-GAN's MA-GP: weight * E_i[ ||(dlogit_i/dx_i, dlogit_i/ds_i)||_2 ^ power ], with create_graph.

    `logits` (B,) are the real-matching outputs, `inputs` the tensors they are differentiated against (real images
    and sentence vectors, both requiring grad); each sample's gradients are flattened and concatenated before the norm.
    `grad_scale` is the fp16 GradScaler scale (the gradients are taken of scaled logits and unscaled afterwards).
    The norm is written as (sum of squares)^(power/2): the same value, without sqrt's infinite slope at 0.
    """
    grads = torch.autograd.grad(logits.sum() * grad_scale, inputs, create_graph=True)
    batch = logits.shape[0]
    flat = torch.cat([g.reshape(batch, -1).float() / grad_scale for g in grads], dim=1)
    return weight * flat.square().sum(dim=1).pow(power / 2).mean()
