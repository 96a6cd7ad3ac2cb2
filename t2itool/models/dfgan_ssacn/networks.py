"""SSA-GAN networks (Liao et al., CVPR 2022): SSACN generator with mask predictors, 2020 DF-GAN discriminator.

G: noise -> fc -> 8ngf x 4 x 4 -> one SSACN block at 4x4, then (nearest x2 -> SSACN block) up to the image size; every
block's affines are weighted by a spatial mask predicted from the previous features. D: conv3x3 then residual down
blocks to 16ndf x 4 x 4 (at >= 64 px); the conditional head tiles the sentence over D's 4x4 features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks import ConditionalHead, DownBlock, PenaltyConv2d


def _check_size(image_size: int) -> int:
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return int(math.log2(image_size)) - 1  # DF-GAN 2022's layer_num


def generator_channel_pairs(image_size: int) -> list[tuple[int, int]]:
    """(in, out) channel multipliers of ngf for G's SSACN blocks, from 4x4 up to `image_size`.

    Rule: block 0 is (8, 8) at 4x4 without upsampling (SSA-GAN's extra block); then DF-GAN 2022's upsampling blocks
    for the size: multipliers min(2^i, 8) for i < log2(size) - 1, reversed, consecutive pairs. Smaller images thus
    drop (8, 8) blocks at low resolution. 256 px gives SSA-GAN's official 7 blocks
    (8,8) (8,8) (8,8) (8,8) (8,4) (4,2) (2,1); 128 px drops one (8, 8) block, 64 px two.
    """
    layer_num = _check_size(image_size)
    mults = [min(2**i, 8) for i in range(layer_num)][::-1]
    return [(8, 8), *zip(mults[:-1], mults[1:], strict=True)]


def discriminator_channel_pairs(image_size: int) -> list[tuple[int, int]]:
    """(in, out) channel multipliers of ndf for D's down blocks, from `image_size` down to 4x4.

    Rule: DF-GAN 2022's derivation with SSA-GAN's (2020 DF-GAN's) cap of 16 instead of 8: multipliers min(2^i, 16)
    for i < log2(size) - 1, consecutive pairs. 256 px gives the official (1,2) (2,4) (4,8) (8,16) (16,16) (16,16);
    smaller sizes drop trailing (16, 16) blocks, so D still ends at 16ndf for 64 px and above (8ndf at 32 px).
    """
    layer_num = _check_size(image_size)
    mults = [min(2**i, 16) for i in range(layer_num)]
    return list(zip(mults[:-1], mults[1:], strict=True))


class SSAffine(nn.Module):
    """Semantic-spatial aware affine: y = (1 + m * gamma(s)) * BN(x) + m * beta(s).

    BN has no learnable affine (the sentence provides it); gamma, beta = Linear(cond, hidden) -> ReLU ->
    Linear(hidden, C) on the sentence alone, second layers zero-initialised, so the layer starts as plain BN.
    m is the block's spatial mask (B, 1, H, W) in [0, 1].
    """

    def __init__(self, cond_dim: int, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = cond_dim if hidden is None else hidden
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        for mlp in (self.gamma, self.beta):
            nn.init.zeros_(mlp[2].weight)
            nn.init.zeros_(mlp[2].bias)

    def forward(self, x: torch.Tensor, sentence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normalized = self.norm(x)
        gamma = self.gamma(sentence)[:, :, None, None]
        beta = self.beta(sentence)[:, :, None, None]
        return (1 + mask * gamma) * normalized + mask * beta


class SSACNBlock(nn.Module):
    """out = shortcut(x) + gain * residual; residual = SSAffine -> ReLU -> conv3x3 -> SSAffine -> ReLU -> conv3x3.

    shortcut: 1x1 conv when the channel count changes, else identity; `gain` a learnable scalar initialised at 0.
    Both affines use the same mask. Upsampling happens before the block (in NetG).
    """

    def __init__(self, cond_dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.affine0 = SSAffine(cond_dim, in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.affine1 = SSAffine(cond_dim, out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, sentence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = self.conv0(F.relu(self.affine0(x, sentence, mask)))
        residual = self.conv1(F.relu(self.affine1(residual, sentence, mask)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + self.gain * residual


class MaskPredictor(nn.Module):
    """conv3x3 (C -> hidden) -> BN -> ReLU -> conv1x1 (hidden -> 1); logits upsampled bilinearly (align_corners) to the
    next block's resolution, then sigmoid (after upsampling, as the official code does)."""

    def __init__(self, channels: int, hidden: int = 100) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, 1, 1), nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        logits = self.layers(x)
        if logits.shape[-1] != size:
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
        return torch.sigmoid(logits)


class NetG(nn.Module):
    """SSA-GAN generator: (noise (B, noise_dim), sentence (B, cond_dim)) -> (image (B, 3, S, S) in [-1, 1], masks).

    masks: one (B, 1, r, r) per block, r = 4, 8, ..., S (7 masks at 256 px); mask i is predicted from the features
    entering block i (the fc output for block 0) and used by both of its affines.
    """

    def __init__(
        self, ngf: int = 64, noise_dim: int = 100, cond_dim: int = 256, image_size: int = 256, mask_hidden: int = 100
    ) -> None:
        super().__init__()
        self.ngf, self.noise_dim, self.cond_dim, self.image_size = ngf, noise_dim, cond_dim, image_size
        pairs = generator_channel_pairs(image_size)
        self.fc = nn.Linear(noise_dim, 8 * ngf * 4 * 4)
        self.blocks = nn.ModuleList(SSACNBlock(cond_dim, ngf * i, ngf * o) for i, o in pairs)
        self.mask_predictors = nn.ModuleList(MaskPredictor(ngf * i, mask_hidden) for i, _ in pairs)
        self.to_rgb = nn.Sequential(nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2), nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch = noise.shape[0]
        assert noise.shape == (batch, self.noise_dim), f"noise {tuple(noise.shape)}"
        assert sentence.shape == (batch, self.cond_dim), f"sentence {tuple(sentence.shape)}"
        x = self.fc(noise).view(batch, 8 * self.ngf, 4, 4)
        masks = []
        for index, (block, predictor) in enumerate(zip(self.blocks, self.mask_predictors, strict=True)):
            resolution = 4 * 2**index
            mask = predictor(x, resolution)
            if index > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, sentence, mask)
            masks.append(mask)
        image = self.to_rgb(x)
        assert image.shape == (batch, 3, self.image_size, self.image_size), f"image {tuple(image.shape)}"
        return image, masks


class NetD(nn.Module):
    """SSA-GAN (2020 DF-GAN) discriminator trunk: image (B, 3, S, S) -> features (B, feature_channels, 4, 4)."""

    def __init__(self, ndf: int = 64, image_size: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        pairs = discriminator_channel_pairs(image_size)
        self.feature_channels = ndf * pairs[-1][1]
        self.conv_img = PenaltyConv2d(3, ndf, 3, 1, 1)
        self.blocks = nn.Sequential(*(DownBlock(ndf * i, ndf * o) for i, o in pairs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        assert images.shape[1:] == (3, size, size), f"images {tuple(images.shape)}, expected (B, 3, {size}, {size})"
        features = self.blocks(self.conv_img(images))
        assert features.shape[1:] == (self.feature_channels, 4, 4), f"features {tuple(features.shape)}"
        return features


def build_head(ndf: int = 64, cond_dim: int = 256, image_size: int = 256) -> ConditionalHead:
    """Logit head: concat(D features, sentence tiled 4x4) -> conv3x3 -> 2ndf -> LReLU 0.2 -> conv4x4 -> 1 (B,)."""
    feature_channels = ndf * discriminator_channel_pairs(image_size)[-1][1]
    return ConditionalHead(feature_channels, cond_dim, 2 * ndf)
