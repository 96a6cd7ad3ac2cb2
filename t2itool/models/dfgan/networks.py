"""DF-GAN networks (Tao et al., CVPR 2022; layout of the 2022 code): NetG, NetD and the conditional head NetC.

G: noise -> fc -> 8ngf x 4 x 4, then log2(size) - 2 upsampling blocks of two text-conditioned affine fusions each,
conditioned on concat(noise, sentence); D: conv3x3 then residual down blocks to 8ndf x 4 x 4; C: DF-GAN's head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks import ConditionalHead, DownBlock, PenaltyConv2d


def channel_pairs(image_size: int) -> list[tuple[int, int]]:
    """(in, out) channel multipliers of G's blocks from 4x4 up to `image_size` (reverse them for D)."""
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    layer_num = int(math.log2(image_size)) - 1
    mults = [min(2**i, 8) for i in range(layer_num)][::-1]
    return list(zip(mults[:-1], mults[1:], strict=True))


class Affine(nn.Module):
    """y = gamma(cond) * x + beta(cond), channel-wise; gamma, beta = Linear -> ReLU -> Linear, identity at init."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
        nn.init.zeros_(self.gamma[2].weight)
        nn.init.ones_(self.gamma[2].bias)
        nn.init.zeros_(self.beta[2].weight)
        nn.init.zeros_(self.beta[2].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(cond)[:, :, None, None]
        beta = self.beta(cond)[:, :, None, None]
        return gamma * x + beta


class Fusion(nn.Module):
    """DF-GAN's DFBLK: Affine -> LReLU 0.2 -> Affine -> LReLU 0.2."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.affine0 = Affine(cond_dim, channels)
        self.affine1 = Affine(cond_dim, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.affine0(x, cond), 0.2)
        return F.leaky_relu(self.affine1(x, cond), 0.2)


class UpBlock(nn.Module):
    """Nearest x2, then shortcut (1x1 conv when channels change) + fusion -> conv3x3 -> fusion -> conv3x3."""

    def __init__(self, cond_dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse0 = Fusion(cond_dim, in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.fuse1 = Fusion(cond_dim, out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        residual = self.conv1(self.fuse1(self.conv0(self.fuse0(x, cond)), cond))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + residual


class NetG(nn.Module):
    """DF-GAN generator: (noise (B, noise_dim), sentence (B, cond_dim)) -> image (B, 3, size, size) in [-1, 1]."""

    def __init__(self, ngf: int = 32, noise_dim: int = 100, cond_dim: int = 256, image_size: int = 256) -> None:
        super().__init__()
        self.ngf, self.noise_dim, self.cond_dim, self.image_size = ngf, noise_dim, cond_dim, image_size
        self.fc = nn.Linear(noise_dim, 8 * ngf * 4 * 4)
        fused_dim = noise_dim + cond_dim
        self.blocks = nn.ModuleList(UpBlock(fused_dim, ngf * i, ngf * o) for i, o in channel_pairs(image_size))
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        batch = noise.shape[0]
        assert noise.shape == (batch, self.noise_dim), f"noise {tuple(noise.shape)}"
        assert sentence.shape == (batch, self.cond_dim), f"sentence {tuple(sentence.shape)}"
        cond = torch.cat([noise, sentence], dim=1)
        x = self.fc(noise).view(batch, 8 * self.ngf, 4, 4)
        for block in self.blocks:
            x = block(x, cond)
        return self.to_rgb(x)


class NetD(nn.Module):
    """DF-GAN discriminator trunk: image (B, 3, size, size) -> features (B, 8ndf, 4, 4)."""

    def __init__(self, ndf: int = 32, image_size: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        self.conv_img = PenaltyConv2d(3, ndf, 3, 1, 1)
        pairs = [(o, i) for i, o in channel_pairs(image_size)][::-1]
        self.blocks = nn.Sequential(*(DownBlock(ndf * i, ndf * o) for i, o in pairs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-1] == self.image_size, f"images {tuple(images.shape)}, expected {self.image_size} px"
        return self.blocks(self.conv_img(images))


def build_head(ndf: int = 32, cond_dim: int = 256) -> ConditionalHead:
    """NetC: the sentence-conditioned logit on D's 8ndf x 4 x 4 features."""
    return ConditionalHead(8 * ndf, cond_dim, 2 * ndf)
