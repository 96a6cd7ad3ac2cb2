"""The multi-stage generator trunk of AttnGAN (Xu et al., CVPR 2018; taoxugit/AttnGAN code/model.py INIT_STAGE_G,
NEXT_STAGE_G, ResBlock, GET_IMAGE_G), shared with its descendants (SD-GAN, DR-GAN): the first stage, the refining
stages with word attention, the GLU residual block, the image head and the rule that places the stages.

Up-sampling layers take a norm-layer factory so that SD-GAN's semantic-conditioned batch norm can replace their
batch norm; a norm layer deriving from `ConditionalNorm` receives the `norm_condition` passed to the stage.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from t2itool.models.blocks.upsample import GLU, conv3x3, up_block
from t2itool.models.blocks.word_attention import WordAttention

NormFactory = Callable[[int], nn.Module]


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def stage_sizes(image_size: int, num_stages: int = 3) -> tuple[int, ...]:
    """Image side of each stage, smallest first: each stage doubles the previous one and the last is `image_size`
    (AttnGAN at 256 px: 64, 128, 256; at 64 px: 16, 32, 64). The first stage must be at least 8 px."""
    if not _is_power_of_two(image_size) or image_size >> (num_stages - 1) < 8:
        raise ValueError(
            f"image_size {image_size}: need a power of two with a first stage of at least 8 px "
            f"(>= {8 << (num_stages - 1)} for {num_stages} stages)"
        )
    return tuple(image_size >> (num_stages - 1 - i) for i in range(num_stages))


def init_stage_up_blocks(stage_size: int) -> int:
    """Up-sampling blocks of the first stage, from 4x4 to `stage_size`: log2(stage_size / 4) (4 at 64 px, 2 at 16)."""
    if not _is_power_of_two(stage_size) or stage_size < 8:
        raise ValueError(f"first-stage size {stage_size}: need a power of two >= 8")
    return int(math.log2(stage_size)) - 2


class ConditionalNorm(nn.Module, abc.ABC):
    """A normalisation layer whose forward takes a condition, e.g. SD-GAN's semantic-conditioned batch norm. The
    stages below pass their `norm_condition` argument to every such layer and call other layers with x alone."""

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, condition: Any) -> torch.Tensor: ...


def run_layers(layers: Iterable[nn.Module], x: torch.Tensor, condition: Any = None) -> torch.Tensor:
    """Apply `layers` in order, handing `condition` to the `ConditionalNorm` ones (nn.Sequential otherwise)."""
    for layer in layers:
        x = layer(x, condition) if isinstance(layer, ConditionalNorm) else layer(x)
    return x


def glu_up_block(in_channels: int, out_channels: int, norm_layer: NormFactory | None = None) -> nn.Sequential:
    """AttnGAN's upBlock (nearest x2 -> conv3x3 -> norm -> GLU, indices 1 = conv, 2 = norm) with the batch norm
    replaced by `norm_layer(2 * out_channels)` when given."""
    block = up_block(in_channels, out_channels, "glu")
    if norm_layer is not None:
        block[2] = norm_layer(out_channels * 2)
    return block


class GLUResBlock(nn.Module):
    """x + block(x), block = conv3x3 C -> 2C, norm, GLU, conv3x3 C -> C, norm (code/model.py ResBlock; the
    `block` indices 0, 1, 3, 4 match the official names)."""

    def __init__(self, channels: int, norm_layer: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channels, channels * 2),
            norm_layer(channels * 2),
            GLU(),
            conv3x3(channels, channels),
            norm_layer(channels),
        )

    def forward(self, x: torch.Tensor, norm_condition: Any = None) -> torch.Tensor:
        return run_layers(self.block, x, norm_condition) + x


class InitStage(nn.Module):
    """code (B, input_dim) -> hidden (B, out_channels, out_size, out_size) (code/model.py INIT_STAGE_G).

    fc: Linear (no bias) -> BatchNorm1d -> GLU to a (C0, 4, 4) map, then `init_stage_up_blocks(out_size)` GLU
    up-blocks each halving the width, so C0 = out_channels * 2^blocks: 16 GF at 64 px as in the official code,
    4 GF at 16 px. `norm_layer` replaces the up-blocks' batch norms.
    """

    def __init__(self, input_dim: int, out_channels: int, out_size: int, norm_layer: NormFactory | None = None) -> None:
        super().__init__()
        num_blocks = init_stage_up_blocks(out_size)
        self.input_dim, self.out_size = int(input_dim), int(out_size)
        self.base_channels = out_channels * 2**num_blocks
        self.fc = nn.Sequential(
            nn.Linear(input_dim, self.base_channels * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(self.base_channels * 4 * 4 * 2),
            GLU(),
        )
        widths = [self.base_channels >> i for i in range(num_blocks + 1)]
        self.up_blocks = nn.ModuleList(
            glu_up_block(c_in, c_out, norm_layer) for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, code: torch.Tensor, norm_condition: Any = None) -> torch.Tensor:
        assert code.dim() == 2 and code.shape[1] == self.input_dim, f"code {tuple(code.shape)}"
        hidden = self.fc(code).view(code.shape[0], self.base_channels, 4, 4)
        for block in self.up_blocks:
            hidden = run_layers(block, hidden, norm_condition)
        return hidden


class NextStage(nn.Module):
    """hidden (B, C, H, W), words (B, word_dim, T), mask (B, T) -> (hidden (B, C, 2H, 2W), attention (B, T, H, W))
    (code/model.py NEXT_STAGE_G).

    Word attention gives a context (B, C, H, W); concat(hidden, context) -> `num_residual` GLU residual blocks at 2C
    -> GLU up-block to C at twice the size. `norm_layer` replaces the up-block's batch norm; `mask_mode` is the
    attention's padding-mask tiling ("fixed" or "official").
    """

    def __init__(
        self,
        channels: int,
        word_dim: int,
        num_residual: int,
        mask_mode: str = "fixed",
        norm_layer: NormFactory | None = None,
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.attention = WordAttention(channels, word_dim, mask_mode)
        self.residual = nn.ModuleList(GLUResBlock(channels * 2) for _ in range(num_residual))
        self.up_block = glu_up_block(channels * 2, channels, norm_layer)

    def forward(
        self, hidden: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None, norm_condition: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context, attention = self.attention(hidden, words, mask)
        fused = torch.cat((hidden, context), dim=1)
        for block in self.residual:
            fused = block(fused, norm_condition)
        return run_layers(self.up_block, fused, norm_condition), attention


class ImageHead(nn.Module):
    """hidden (B, C, H, W) -> image (B, 3, H, W) in [-1, 1]: conv3x3 without bias, tanh (code/model.py GET_IMAGE_G)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, 3)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(hidden))
