"""XMC-GAN's networks (layer order, widths and init from google-research/xmcgan_image_generation xmcgan/nets/
xmc_net.py, xmcgan/nets/common.py, xmcgan/libml/layers.py): the attentional self-modulation generator and the
contrastive projection discriminator, both BigGAN-style residual networks.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from t2itool.models.xmcgan.config import XMCGANConfig

REGION_SIZE = 16  # G attends to words and D's region head reads features at 16 x 16 (the code's cond_size)
NORMALIZE_EPS = 1e-6  # the code's l2_normalize: x * rsqrt(max(sum x^2, 1e-12)), i.e. norm floored at 1e-6
JAX_TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def generator_multipliers(image_size: int) -> list[int]:
    """Output widths of G's up-blocks in units of gf, from 4x4 up to `image_size`.

    128 and 256 px are the code's lists (also BigGAN's). Smaller sizes keep the first log2(size) - 2 entries of the
    128 px list, which is BigGAN's own 64 px generator ([16, 8, 4, 2]) and gives [16, 8, 4] at 32 px: the first two
    blocks always reach 16 x 16, where the word attention sits.
    """
    if image_size == 256:
        return [16, 8, 8, 4, 2, 1]
    if image_size in (32, 64, 128):
        return [16, 8, 4, 2, 1][: int(math.log2(image_size)) - 2]
    raise ValueError(f"image_size {image_size}: XMC-GAN builds 32, 64, 128 or 256 px")


def discriminator_plan(image_size: int) -> list[tuple[int, bool]]:
    """(width in units of df, downsample) of D's blocks after the first (optimized) block, which has width df and
    halves the size. 128 and 256 px are the code's lists (BigGAN's D); in general the down-sampling blocks take the
    first log2(size) - 3 entries of [2, 4, 8, 16] ([2, 4, 8, 8, 16] at 256 px) and a last block keeps 16 df at 4 x 4
    (64 px: BigGAN's own 64 px discriminator)."""
    if image_size == 256:
        widths = [2, 4, 8, 8, 16]
    elif image_size in (32, 64, 128):
        widths = [2, 4, 8, 16][: int(math.log2(image_size)) - 3]
    else:
        raise ValueError(f"image_size {image_size}: XMC-GAN builds 32, 64, 128 or 256 px")
    return [(w, True) for w in widths] + [(16, False)]


def glorot_normal_(weight: torch.Tensor) -> torch.Tensor:
    """JAX's glorot_normal (the code's kernel_init everywhere): variance 2 / (fan_in + fan_out) from a normal truncated
    at two standard deviations, rescaled so that the truncated distribution has that variance."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(2.0 / (fan_in + fan_out)) / JAX_TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


def _init(module: nn.Conv2d | nn.Linear, spectral: bool) -> nn.Module:
    glorot_normal_(module.weight)
    nn.init.zeros_(module.bias)  # Flax's default bias init
    return spectral_norm(module) if spectral else module


def conv(in_channels: int, out_channels: int, kernel_size: int, spectral: bool = False) -> nn.Module:
    """Conv with bias, stride 1, 'SAME' padding, Glorot-normal init; spectrally normalised when `spectral`."""
    return _init(nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2), spectral)


def dense(in_features: int, out_features: int, spectral: bool = False) -> nn.Module:
    return _init(nn.Linear(in_features, out_features), spectral)


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return F.normalize(x, dim=dim, eps=NORMALIZE_EPS)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def float32(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region computed in float32 even inside autocast (which would run its matmuls in bf16/fp16): the similarity
    logits of the attention and of the contrastive losses are scaled by up to 50, where bf16's 8 bits are too few."""
    return torch.autocast(device_type=x.device.type, enabled=False)


# ---------------------------------------------------------------------------------------------------------- generator


class ConditionalBatchNorm(nn.Module):
    """x_hat * (1 + gamma(c)) + beta(c): batch norm without its own affine, gamma and beta = Dense(c) per channel."""

    def __init__(self, channels: int, cond_dim: int, momentum: float, eps: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.gamma = dense(cond_dim, channels)
        self.beta = dense(cond_dim, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(cond)[:, :, None, None]
        beta = self.beta(cond)[:, :, None, None]
        return self.norm(x) * (1.0 + gamma) + beta


class LocalConditionalBatchNorm(nn.Module):
    """Per-pixel conditional batch norm: gamma and beta = conv1x1 of a spatial condition (B, cond, H, W)."""

    def __init__(self, channels: int, cond_channels: int, momentum: float, eps: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.gamma = conv(cond_channels, channels, 1)
        self.beta = conv(cond_channels, channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert cond.shape[-2:] == x.shape[-2:], f"condition {tuple(cond.shape)} vs features {tuple(x.shape)}"
        return self.norm(x) * (1.0 + self.gamma(cond)) + self.beta(cond)


class GenBlock(nn.Module):
    """BigGAN up-block (the code's GenBlock / GenSpatialBlock): norm0 -> ReLU -> nearest x2 -> conv3x3 -> norm1 ->
    ReLU -> conv3x3, plus shortcut nearest x2 -> conv1x1. `spatial`: the norms are local (per-pixel) conditional BN,
    norm0 conditioned at the input size and norm1 at the output size; else conditional BN on a vector."""

    def __init__(
        self, in_channels: int, out_channels: int, cond_dim: int, spatial: bool, momentum: float, eps: float
    ) -> None:
        super().__init__()
        norm = LocalConditionalBatchNorm if spatial else ConditionalBatchNorm
        self.spatial = spatial
        self.norm0 = norm(in_channels, cond_dim, momentum, eps)
        self.conv0 = conv(in_channels, out_channels, 3)
        self.norm1 = norm(out_channels, cond_dim, momentum, eps)
        self.conv1 = conv(out_channels, out_channels, 3)
        self.shortcut = conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cond_in: torch.Tensor, cond_out: torch.Tensor) -> torch.Tensor:
        h = upsample(F.relu(self.norm0(x, cond_in)))
        h = self.conv1(F.relu(self.norm1(self.conv0(h), cond_out)))
        return h + self.shortcut(upsample(x))


class GeneratorResult(NamedTuple):
    """image (B, 3, S, S) in [-1, 1]; attention (B, T, 16, 16): each region's softmax weight on word t (summing to 1
    over words, zero at padding), the map sample grids show."""

    image: torch.Tensor
    attention: torch.Tensor


def word_attention(
    regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None, rho0: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The code's attention_for_g: regions (B, R, D) and words (B, T, D) l2-normalised, logits = rho0 cos, padding
    words excluded, softmax over words; returns (context (B, R, D) = attention @ normalised words, attention
    (B, R, T)), in float32. A caption whose every word is masked gets uniform attention instead of NaN."""
    with float32(regions):
        regions, words = l2_normalize(regions.float()), l2_normalize(words.float())
        logits = rho0 * regions @ words.transpose(1, 2)
        if mask is not None:
            logits = logits.masked_fill(mask[:, None, :], torch.finfo(logits.dtype).min)
        attention = logits.softmax(dim=-1)
        return attention @ words, attention


class Generator(nn.Module):
    """XMC-GAN's attentional self-modulation generator (the code's xmc_net.Generator).

    global_cond = concat(Dense(sentence) -> z_dim, z); x = Dense(z) -> 16 gf x 4 x 4; two up-blocks with conditional
    BN on global_cond reach 16 x 16; there a conv1x1 projects the features to the word width, each region attends to
    the words (cosine x rho0, padding masked) and the spatial condition concat(word context, tiled global_cond) drives
    the local conditional BN of every later block (nearest-upsampled per block). Head: local conditional BN -> ReLU
    -> conv3x3 -> 3 -> tanh. The code maps the tanh output to [0, 1] with (x + 1) / 2; t2itool keeps [-1, 1], so the
    code's image = (ours + 1) / 2. Draws no random numbers: z is an input.
    """

    def __init__(
        self,
        image_size: int = 128,
        gf: int = 96,
        z_dim: int = 128,
        sentence_dim: int = 256,
        word_dim: int = 256,
        rho0: float = 15.0,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.image_size, self.gf, self.z_dim = image_size, gf, z_dim
        self.sentence_dim, self.word_dim, self.rho0 = sentence_dim, word_dim, float(rho0)
        widths = [16 * gf] + [gf * m for m in generator_multipliers(image_size)]
        cond_dim = 2 * z_dim
        spatial_dim = word_dim + cond_dim
        bn = {"momentum": bn_momentum, "eps": bn_eps}
        self.sentence_proj = dense(sentence_dim, z_dim)
        self.fc = dense(z_dim, widths[0] * 4 * 4)
        self.blocks = nn.ModuleList(GenBlock(widths[i], widths[i + 1], cond_dim, False, **bn) for i in range(2))
        self.region_proj = conv(widths[2], word_dim, 1)
        self.spatial_blocks = nn.ModuleList(
            GenBlock(widths[i], widths[i + 1], spatial_dim, True, **bn) for i in range(2, len(widths) - 1)
        )
        self.head_norm = LocalConditionalBatchNorm(widths[-1], spatial_dim, **bn)
        self.head_conv = conv(widths[-1], 3, 3)

    def forward(
        self, z: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None
    ) -> GeneratorResult:
        """z (B, z_dim), sentence (B, sentence_dim), words (B, word_dim, T), mask (B, T) True at padding."""
        batch = z.shape[0]
        assert z.shape == (batch, self.z_dim), f"z {tuple(z.shape)}"
        assert sentence.shape == (batch, self.sentence_dim), f"sentence {tuple(sentence.shape)}"
        assert words.dim() == 3 and words.shape[:2] == (batch, self.word_dim), f"words {tuple(words.shape)}"
        assert mask is None or mask.shape == (batch, words.shape[2]), f"mask {tuple(mask.shape)}"
        global_cond = torch.cat([self.sentence_proj(sentence), z], dim=1)
        x = self.fc(z).view(batch, -1, 4, 4)
        for block in self.blocks:
            x = block(x, global_cond, global_cond)
        regions = self.region_proj(x).flatten(2).transpose(1, 2)  # (B, 256, word_dim)
        context, attention = word_attention(regions, words.transpose(1, 2), mask, self.rho0)
        context = context.to(x.dtype).transpose(1, 2).reshape(batch, self.word_dim, REGION_SIZE, REGION_SIZE)
        tiled = global_cond[:, :, None, None].expand(-1, -1, REGION_SIZE, REGION_SIZE)
        cond = torch.cat([context, tiled], dim=1)
        for block in self.spatial_blocks:
            cond_up = upsample(cond)
            x = block(x, cond, cond_up)
            cond = cond_up
        image = torch.tanh(self.head_conv(F.relu(self.head_norm(x, cond))))
        attention_maps = attention.transpose(1, 2).reshape(batch, -1, REGION_SIZE, REGION_SIZE)
        return GeneratorResult(image, attention_maps)


# ------------------------------------------------------------------------------------------------------ discriminator


class DiscOptimizedBlock(nn.Module):
    """D's first block (the code's DiscOptimizedBlock): conv3x3 -> ReLU -> conv3x3 -> avg-pool 2, plus shortcut
    avg-pool 2 -> conv1x1. No ReLU on the input image."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = conv(in_channels, out_channels, 3, spectral=True)
        self.conv1 = conv(out_channels, out_channels, 3, spectral=True)
        self.shortcut = conv(in_channels, out_channels, 1, spectral=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv1(F.relu(self.conv0(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DiscBlock(nn.Module):
    """D's residual block (the code's DiscBlock): ReLU -> conv3x3 -> ReLU -> conv3x3 [-> avg-pool 2], plus shortcut
    conv1x1 [-> avg-pool 2] when it down-samples or changes width (identity otherwise)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv0 = conv(in_channels, out_channels, 3, spectral=True)
        self.conv1 = conv(out_channels, out_channels, 3, spectral=True)
        needs_projection = downsample or in_channels != out_channels
        self.shortcut = conv(in_channels, out_channels, 1, spectral=True) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.conv0(F.relu(x))))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class DiscriminatorResult(NamedTuple):
    """logits (N,): adversarial output, Dense_1(features) + <features, sentence_embedding>.
    features (N, 16 df): sum-pooled ReLU features (the sentence-image and image-image contrastive inputs).
    sentence_embedding (B, 16 df): the projected sentences, one row per sentence passed in (B = N / k).
    regions (N, word_dim, 16, 16): the region head (the word-region contrastive input)."""

    logits: torch.Tensor
    features: torch.Tensor
    sentence_embedding: torch.Tensor
    regions: torch.Tensor


class Discriminator(nn.Module):
    """XMC-GAN's contrastive discriminator (the code's xmc_net.Discriminator): spectral norm on every conv and dense,
    ReLU, residual down-blocks to 16 df at 4 x 4, ReLU + sum-pooling, a projection head
    logits = adversarial(features) + <features, sentence_proj(sentence)> whose sentence projection is also the
    sentence-contrastive embedding, and a region head conv1x1 (16 x 16 map -> word_dim)."""

    def __init__(self, image_size: int = 128, df: int = 96, sentence_dim: int = 256, word_dim: int = 256) -> None:
        super().__init__()
        self.image_size, self.df, self.sentence_dim, self.word_dim = image_size, df, sentence_dim, word_dim
        plan = discriminator_plan(image_size)
        self.block0 = DiscOptimizedBlock(3, df)
        widths = [df] + [df * w for w, _ in plan]
        self.blocks = nn.ModuleList(DiscBlock(widths[i], widths[i + 1], down) for i, (_, down) in enumerate(plan))
        # The region head reads the 16 x 16 map: the output of the block that brings the size to 16, block number
        # log2(size) - 5 counting the optimized block as 0 (128 px: 4 df, 256 px: 8 df, 32 px: the optimized block).
        self.region_index = int(math.log2(image_size)) - 5
        region_channels = widths[self.region_index]
        self.feature_dim = widths[-1]
        self.adversarial = dense(self.feature_dim, 1, spectral=True)
        self.sentence_proj = dense(sentence_dim, self.feature_dim, spectral=True)
        self.region_proj = conv(region_channels, word_dim, 1, spectral=True)

    def forward(self, images: torch.Tensor, sentence: torch.Tensor) -> DiscriminatorResult:
        """images (N, 3, S, S) in [-1, 1]; sentence (B, sentence_dim) with N = k B: the sentences are tiled k times
        (the code passes concat(real, fake) images with the batch's sentences once)."""
        assert images.dim() == 4 and images.shape[1:] == (3, self.image_size, self.image_size), (
            f"images {tuple(images.shape)}, expected (N, 3, {self.image_size}, {self.image_size})"
        )
        assert sentence.dim() == 2 and sentence.shape[1] == self.sentence_dim, f"sentence {tuple(sentence.shape)}"
        assert images.shape[0] % sentence.shape[0] == 0, f"{images.shape[0]} images for {sentence.shape[0]} sentences"
        x = self.block0(images)
        region_map = x
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index == self.region_index:
                region_map = x
        assert region_map.shape[-1] == REGION_SIZE, f"region map {tuple(region_map.shape)}"
        features = F.relu(x).sum(dim=(2, 3))
        sentence_embedding = self.sentence_proj(sentence)
        tiled = sentence_embedding.repeat(images.shape[0] // sentence.shape[0], 1)
        logits = self.adversarial(features).squeeze(1) + (features * tiled).sum(dim=1)
        return DiscriminatorResult(logits, features, sentence_embedding, self.region_proj(region_map))


def build_generator(config: XMCGANConfig) -> Generator:
    return Generator(
        image_size=config.image_size,
        gf=config.gf_dim,
        z_dim=config.z_dim,
        sentence_dim=config.sentence_dim,
        word_dim=config.word_dim,
        rho0=config.rho0,
        bn_momentum=config.bn_momentum,
        bn_eps=config.bn_eps,
    )


def build_discriminator(config: XMCGANConfig) -> Discriminator:
    return Discriminator(
        image_size=config.image_size, df=config.df_dim, sentence_dim=config.sentence_dim, word_dim=config.word_dim
    )
