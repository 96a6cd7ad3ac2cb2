"""Per-stage discriminator pieces of the StackGAN++ / AttnGAN family (taoxugit/AttnGAN code/model.py
encode_image_by_16times, downBlock, Block3x3_leakRelu, D_GET_LOGITS, D_NET64/128/256): an image encoder to
8 ndf x 4 x 4 for any stage size, and the unconditional and sentence-conditioned logit heads.

Every piece can drop its batch norms and wrap its convolutions in spectral norm (DR-GAN's discriminator).
The heads return logits; the official heads end in a sigmoid, which the losses fold into BCE-with-logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv(conv: nn.Conv2d, spectral_norm: bool) -> nn.Module:
    return nn.utils.spectral_norm(conv) if spectral_norm else conv


def _conv_norm_leaky(conv: nn.Conv2d, batch_norm: bool, spectral_norm: bool) -> list[nn.Module]:
    layers = [_conv(conv, spectral_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(conv.out_channels))
    layers.append(nn.LeakyReLU(0.2))
    return layers


def encode_x16(ndf: int, num_strided: int = 4, batch_norm: bool = True, spectral_norm: bool = False) -> nn.Sequential:
    """Four convolutions 3 -> ndf -> 2 ndf -> 4 ndf -> 8 ndf, LReLU 0.2 after each, batch norm after all but the
    first (official indices 0 conv, 1 LReLU, 2 conv, 3 BN, 4 LReLU, ... 10 LReLU).

    The first `num_strided` are 4x4 / stride 2 (all four in the official code: 1/16 of the input side); the others
    are 3x3 / stride 1, which keeps the widths and the layout for stages smaller than 64 px (see StageImageEncoder).
    """
    if not 1 <= num_strided <= 4:
        raise ValueError(f"num_strided must be 1..4, got {num_strided}")
    widths = [3, ndf, ndf * 2, ndf * 4, ndf * 8]
    layers: list[nn.Module] = []
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        conv = (
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)
            if index < num_strided
            else nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        )
        layers += _conv_norm_leaky(conv, batch_norm and index > 0, spectral_norm)
    return nn.Sequential(*layers)


def leaky_down_block(
    in_channels: int, out_channels: int, batch_norm: bool = True, spectral_norm: bool = False
) -> nn.Sequential:
    """conv4x4 / stride 2 (no bias) -> BN -> LReLU 0.2: halves the side (code/model.py downBlock)."""
    return nn.Sequential(
        *_conv_norm_leaky(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False), batch_norm, spectral_norm)
    )


def leaky_block3x3(
    in_channels: int, out_channels: int, batch_norm: bool = True, spectral_norm: bool = False
) -> nn.Sequential:
    """conv3x3 (no bias) -> BN -> LReLU 0.2: keeps the side (code/model.py Block3x3_leakRelu)."""
    return nn.Sequential(
        *_conv_norm_leaky(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), batch_norm, spectral_norm)
    )


class StageImageEncoder(nn.Module):
    """images (B, 3, S, S) -> features (B, 8 ndf, 4, 4) for a stage of side S (a power of two >= 8).

    With n = log2(S / 4) halvings needed:
    - S >= 64 (the official D_NET64/128/256): `encode_x16` with four strided convs (to S / 16), then n - 4
      `down_blocks` doubling the width (8 ndf -> 16 ndf -> ...), then n - 4 `leaky_blocks` (3x3) halving it back
      to 8 ndf. D_NET128: one of each; D_NET256: two of each.
    - S < 64 (no official class): `encode_x16` with only its first n convs strided and the rest 3x3 / stride 1, no
      down or 3x3 blocks; the widths, norms and names stay those of `encode_x16`.
    """

    def __init__(self, stage_size: int, ndf: int, batch_norm: bool = True, spectral_norm: bool = False) -> None:
        super().__init__()
        if stage_size < 8 or stage_size & (stage_size - 1):
            raise ValueError(f"stage_size must be a power of two >= 8, got {stage_size}")
        halvings = int(math.log2(stage_size)) - 2
        extra = max(halvings - 4, 0)
        self.stage_size, self.out_channels = int(stage_size), ndf * 8
        self.encode_x16 = encode_x16(ndf, min(halvings, 4), batch_norm, spectral_norm)
        widths = [ndf * 8 * 2**i for i in range(extra + 1)]
        self.down_blocks = nn.Sequential(
            *(leaky_down_block(widths[i], widths[i + 1], batch_norm, spectral_norm) for i in range(extra))
        )
        self.leaky_blocks = nn.Sequential(
            *(leaky_block3x3(widths[i + 1], widths[i], batch_norm, spectral_norm) for i in reversed(range(extra)))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dim() == 4 and images.shape[1:] == (3, self.stage_size, self.stage_size), (
            f"images {tuple(images.shape)}, expected (B, 3, {self.stage_size}, {self.stage_size})"
        )
        return self.leaky_blocks(self.down_blocks(self.encode_x16(images)))


def _assert_4x4(features: torch.Tensor, channels: int) -> None:
    assert features.dim() == 4 and features.shape[1:] == (channels, 4, 4), (
        f"features {tuple(features.shape)}, expected (B, {channels}, 4, 4)"
    )


class UnconditionalLogits(nn.Module):
    """features (B, C, 4, 4) -> logits (B,): conv4x4 / stride 4 with bias (code/model.py D_GET_LOGITS without
    condition; its sigmoid is left to the loss)."""

    def __init__(self, channels: int, spectral_norm: bool = False) -> None:
        super().__init__()
        self.channels = int(channels)
        self.conv = _conv(nn.Conv2d(channels, 1, kernel_size=4, stride=4), spectral_norm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _assert_4x4(features, self.channels)
        return self.conv(features).view(features.shape[0])


class ConditionalLogits(nn.Module):
    """features (B, C, 4, 4), sentence (B, text_dim) -> logits (B,) (code/model.py D_GET_LOGITS with condition).

    concat(features, sentence tiled 4x4) -> `joint` (conv3x3 C + text_dim -> C, BN, LReLU 0.2) -> conv4x4 / stride
    4 with bias. The sentence is the text encoder's vector itself, not the conditioning-augmentation sample.
    """

    def __init__(self, channels: int, text_dim: int, batch_norm: bool = True, spectral_norm: bool = False) -> None:
        super().__init__()
        self.channels, self.text_dim = int(channels), int(text_dim)
        self.joint = leaky_block3x3(channels + text_dim, channels, batch_norm, spectral_norm)
        self.conv = _conv(nn.Conv2d(channels, 1, kernel_size=4, stride=4), spectral_norm)

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        _assert_4x4(features, self.channels)
        batch = features.shape[0]
        assert sentence.shape == (batch, self.text_dim), f"sentence {tuple(sentence.shape)}"
        tiled = sentence.view(batch, self.text_dim, 1, 1).repeat(1, 1, 4, 4)
        return self.conv(self.joint(torch.cat((features, tiled), dim=1))).view(batch)
