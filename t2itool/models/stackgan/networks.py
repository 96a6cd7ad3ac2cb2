"""StackGAN networks (Zhang et al., ICCV 2017; layout of hanzhanggit/StackGAN-Pytorch code/model.py): the stage-I
generator and discriminator, and the stage-II generator (which holds a frozen stage-I generator) and discriminator.

Size rule (the 4 x 4 end is the paper's; resolutions are added or removed at the high-resolution end):
- stage I at S1 = 4 * 2^k px (k >= 1; paper k = 4, 64 px): G has k up-blocks from 8 gf x 4 x 4, halving the channels
  each time; D has k stride-2 convs whose widths are the last k of (..., 2 df, 4 df, 8 df), so it ends at 8 df x 4 x 4.
- stage II at S2 = 4 * S1 (paper 256 px): G encodes the stage-I image to S1 / 4 with two stride-2 convs and decodes
  with four up-blocks (x16), so the magnification is always 4; D has log2(S2 / 4) stride-2 convs whose widths are the
  last ones of (df, 2 df, ..., 32 df), then conv3x3 32 df -> 16 df -> 8 df at 4 x 4.
The smallest sizes are therefore stage I 8 px and stage II 32 px.

Discriminators return their 4 x 4 features; the heads return logits (the official heads end in a sigmoid, which the
BCE-with-logits losses in `losses.py` take instead). Generators draw no random numbers: z and each CA's eps are inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from t2itool.models.blocks.conditioning import ConditioningAugmentation
from t2itool.models.blocks.upsample import conv3x3, up_block

if TYPE_CHECKING:
    from t2itool.models.stackgan.config import StackGANConfig

MIN_STAGE1_SIZE = 8
STAGE2_MAGNIFICATION = 4  # two stride-2 encoder convs, then four x2 up-blocks


def resolution_steps(image_size: int) -> int:
    """Number of x2 steps between 4 x 4 and `image_size` (a power of two >= 8)."""
    if image_size < MIN_STAGE1_SIZE or image_size & (image_size - 1):
        raise ValueError(f"image size must be a power of two >= {MIN_STAGE1_SIZE}, got {image_size}")
    return int(math.log2(image_size)) - 2


def check_generator_widths(gf_dim: int, stage1_size: int, stage: int) -> None:
    """Every halving of the generator's channels must be exact (stage I: 8 gf / 2^k; stage II: gf / 4)."""
    steps = resolution_steps(stage1_size)
    if (8 * gf_dim) % 2**steps:
        raise ValueError(f"gf_dim {gf_dim}: 8 * gf_dim must be divisible by 2^{steps} for a {stage1_size} px stage I")
    if stage == 2 and gf_dim % 4:
        raise ValueError(f"gf_dim {gf_dim}: the stage-II generator needs gf_dim divisible by 4 (ends at gf_dim / 4)")


def check_discriminator_widths(df_dim: int, image_size: int, stage: int) -> None:
    """The first (widest-resolution) conv of D must still have a whole number of channels."""
    top = (8 if stage == 1 else 32) * df_dim
    steps = resolution_steps(image_size)
    if top % 2 ** (steps - 1):
        raise ValueError(f"df_dim {df_dim}: {top} must be divisible by 2^{steps - 1} for a {image_size} px D")


def init_weights(module: nn.Module) -> None:
    """As the official `weights_init` (miscc/utils.py): conv / linear weights N(0, 0.02), BN weights N(1, 0.02),
    and every bias 0 (the official code zeroes linear and BN biases and leaves the two logit convs' biases at
    PyTorch's default)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def tile(condition: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C) -> (B, C, size, size), the vector repeated at every position."""
    return condition[:, :, None, None].expand(-1, -1, size, size)


class StageIOutput(NamedTuple):
    image: torch.Tensor  # (B, 3, S1, S1) in [-1, 1]
    mu: torch.Tensor  # (B, cond_dim) CA mean: the discriminator's condition (detach it there)
    logvar: torch.Tensor  # (B, cond_dim) CA log-variance, for the KL term


class StageIIOutput(NamedTuple):
    image: torch.Tensor  # (B, 3, S2, S2) in [-1, 1]
    stage1_image: torch.Tensor  # (B, 3, S2 / 4, S2 / 4), detached
    mu: torch.Tensor  # (B, cond_dim) of the stage-II CA
    logvar: torch.Tensor


class StageIGenerator(nn.Module):
    """(text (B, text_dim), z (B, z_dim), ca_stage1 (B, cond_dim)) -> StageIOutput.

    CA(text, eps) -> c; concat(z, c) -> Linear (no bias) -> BN1d -> ReLU -> 8 gf x 4 x 4 -> k up-blocks (nearest x2,
    conv3x3, BN, ReLU; channels halved each) -> conv3x3 -> tanh.
    """

    def __init__(self, text_dim: int, gf_dim: int, z_dim: int, cond_dim: int, image_size: int = 64) -> None:
        super().__init__()
        steps = resolution_steps(image_size)
        check_generator_widths(gf_dim, image_size, 1)
        self.text_dim, self.z_dim, self.cond_dim, self.image_size = text_dim, z_dim, cond_dim, image_size
        self.base_channels = 8 * gf_dim
        self.ca = ConditioningAugmentation(text_dim, cond_dim, "relu")
        self.fc = nn.Sequential(
            nn.Linear(z_dim + cond_dim, self.base_channels * 16, bias=False),
            nn.BatchNorm1d(self.base_channels * 16),
            nn.ReLU(inplace=True),
        )
        widths = [self.base_channels // 2**i for i in range(steps + 1)]
        self.up_blocks = nn.Sequential(*(up_block(i, o, "relu") for i, o in zip(widths[:-1], widths[1:], strict=True)))
        self.to_image = nn.Sequential(conv3x3(widths[-1], 3), nn.Tanh())
        self.apply(init_weights)

    def forward(self, text: torch.Tensor, z: torch.Tensor, ca_stage1: torch.Tensor) -> StageIOutput:
        batch = text.shape[0]
        assert z.shape == (batch, self.z_dim), f"z {tuple(z.shape)}"
        condition, mu, logvar = self.ca(text, ca_stage1)
        hidden = self.fc(torch.cat([z.to(condition.dtype), condition], dim=1))
        hidden = self.up_blocks(hidden.view(batch, self.base_channels, 4, 4))
        return StageIOutput(self.to_image(hidden), mu, logvar)


class ResidualBlock(nn.Module):
    """relu(x + BN(conv3x3(ReLU(BN(conv3x3(x)))))), the official ResBlock (indices of `block` kept)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.block(x))


class StageIIGenerator(nn.Module):
    """(text, z, ca_stage1, ca_stage2) -> StageIIOutput; holds the stage-I generator as `stage1`.

    The stage-I image (from text, z, ca_stage1) is computed without gradient and with stage I always in eval mode
    (the official code only detaches it, leaving stage I's batch norms in training mode); it is encoded to 4 gf x
    S1/4 x S1/4 (conv3x3 -> ReLU, then conv4x4/s2 -> BN -> ReLU twice), joined with this stage's own CA sample
    (from text, ca_stage2) tiled over that map (conv3x3 -> BN -> ReLU), refined by `r_num` residual blocks and decoded
    by four up-blocks (4 gf -> 2 gf -> gf -> gf/2 -> gf/4) and conv3x3 -> tanh to S2 = 4 S1.
    Stage I's parameters have requires_grad False; optimise `trainable_parameters()`.
    """

    def __init__(
        self, text_dim: int, gf_dim: int, z_dim: int, cond_dim: int, r_num: int = 2, image_size: int = 256
    ) -> None:
        super().__init__()
        stage1_size = image_size // STAGE2_MAGNIFICATION
        if stage1_size * STAGE2_MAGNIFICATION != image_size:
            raise ValueError(f"stage-II image size must be a multiple of {STAGE2_MAGNIFICATION}, got {image_size}")
        check_generator_widths(gf_dim, stage1_size, 2)
        self.text_dim, self.z_dim, self.cond_dim, self.image_size = text_dim, z_dim, cond_dim, image_size
        self.stage1 = StageIGenerator(text_dim, gf_dim, z_dim, cond_dim, stage1_size)
        self.stage1.requires_grad_(False)
        self.stage1.eval()
        self.ca = ConditioningAugmentation(text_dim, cond_dim, "relu")
        self.encoder = nn.Sequential(
            conv3x3(3, gf_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(gf_dim, 2 * gf_dim, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * gf_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * gf_dim, 4 * gf_dim, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * gf_dim),
            nn.ReLU(inplace=True),
        )
        self.joint = nn.Sequential(
            conv3x3(4 * gf_dim + cond_dim, 4 * gf_dim), nn.BatchNorm2d(4 * gf_dim), nn.ReLU(True)
        )
        self.residual = nn.Sequential(*(ResidualBlock(4 * gf_dim) for _ in range(r_num)))
        widths = [4 * gf_dim, 2 * gf_dim, gf_dim, gf_dim // 2, gf_dim // 4]
        self.up_blocks = nn.Sequential(*(up_block(i, o, "relu") for i, o in zip(widths[:-1], widths[1:], strict=True)))
        self.to_image = nn.Sequential(conv3x3(widths[-1], 3), nn.Tanh())
        for name, child in self.named_children():
            if name != "stage1":
                child.apply(init_weights)

    def train(self, mode: bool = True) -> StageIIGenerator:
        super().train(mode)
        self.stage1.eval()  # frozen: its batch norms keep their running statistics
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the frozen stage-I generator's."""
        return [p for name, p in self.named_parameters() if not name.startswith("stage1.")]

    def forward(
        self, text: torch.Tensor, z: torch.Tensor, ca_stage1: torch.Tensor, ca_stage2: torch.Tensor
    ) -> StageIIOutput:
        with torch.no_grad():
            stage1_image = self.stage1(text, z, ca_stage1).image.detach()
        encoded = self.encoder(stage1_image)
        condition, mu, logvar = self.ca(text, ca_stage2)
        hidden = self.joint(torch.cat([encoded, tile(condition, encoded.shape[-1])], dim=1))
        hidden = self.up_blocks(self.residual(hidden))
        return StageIIOutput(self.to_image(hidden), stage1_image, mu, logvar)


def down_chain(widths: list[int]) -> nn.Sequential:
    """conv4x4/s2 (no bias) -> [BN] -> LReLU 0.2 per width, from 3 channels; the first conv has no BN."""
    blocks, in_channels = [], 3
    for index, out_channels in enumerate(widths):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
        if index > 0:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        blocks.append(nn.Sequential(*layers))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class ConditionalLogits(nn.Module):
    """concat(features (B, C, 4, 4), condition tiled 4 x 4) -> conv3x3 -> BN -> LReLU 0.2 -> conv4x4/s4 -> (B,) logits
    (the official D_GET_LOGITS with bcondition=True, without its final sigmoid)."""

    def __init__(self, feature_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.joint = nn.Sequential(
            conv3x3(feature_channels + cond_dim, feature_channels),
            nn.BatchNorm2d(feature_channels),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Conv2d(feature_channels, 1, 4, 4)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        assert features.shape[-2:] == (4, 4), f"features {tuple(features.shape)}"
        assert condition.shape == (features.shape[0], self.cond_dim), f"condition {tuple(condition.shape)}"
        joined = torch.cat([features, tile(condition.to(features.dtype), 4)], dim=1)
        return self.out(self.joint(joined)).view(-1)


class StageIDiscriminator(nn.Module):
    """images (B, 3, S1, S1) -> features (B, 8 df, 4, 4); `cond_logits(features, mu)` -> (B,) logits."""

    def __init__(self, df_dim: int, cond_dim: int, image_size: int = 64) -> None:
        super().__init__()
        steps = resolution_steps(image_size)
        check_discriminator_widths(df_dim, image_size, 1)
        self.image_size = image_size
        self.down = down_chain([8 * df_dim // 2 ** (steps - 1 - i) for i in range(steps)])
        self.cond_head = ConditionalLogits(8 * df_dim, cond_dim)
        self.apply(init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2:] == (self.image_size, self.image_size), f"images {tuple(images.shape)}"
        return self.down(images)

    def cond_logits(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.cond_head(features, condition)


class StageIIDiscriminator(nn.Module):
    """images (B, 3, S2, S2) -> features (B, 8 df, 4, 4); `cond_logits(features, mu)` and `uncond_logits(features)`
    -> (B,) logits. Down-sampling to 32 df x 4 x 4, then conv3x3 -> BN -> LReLU to 16 df and to 8 df."""

    def __init__(self, df_dim: int, cond_dim: int, image_size: int = 256) -> None:
        super().__init__()
        steps = resolution_steps(image_size)
        check_discriminator_widths(df_dim, image_size, 2)
        self.image_size = image_size
        self.down = down_chain([32 * df_dim // 2 ** (steps - 1 - i) for i in range(steps)])
        self.reduce = nn.Sequential(
            *(
                nn.Sequential(conv3x3(i * df_dim, o * df_dim), nn.BatchNorm2d(o * df_dim), nn.LeakyReLU(0.2, True))
                for i, o in ((32, 16), (16, 8))
            )
        )
        self.cond_head = ConditionalLogits(8 * df_dim, cond_dim)
        self.uncond_head = nn.Conv2d(8 * df_dim, 1, 4, 4)
        self.apply(init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2:] == (self.image_size, self.image_size), f"images {tuple(images.shape)}"
        return self.reduce(self.down(images))

    def cond_logits(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.cond_head(features, condition)

    def uncond_logits(self, features: torch.Tensor) -> torch.Tensor:
        assert features.shape[-2:] == (4, 4), f"features {tuple(features.shape)}"
        return self.uncond_head(features).view(-1)


def noise_sizes(config: StackGANConfig) -> dict[str, int]:
    """The generator's noise inputs, all N(0, I): z, the stage-I CA eps and (stage 2) the stage-II CA eps."""
    sizes = {"z": config.z_dim, "ca_stage1": config.cond_dim}
    if config.stage == 2:
        sizes["ca_stage2"] = config.cond_dim
    return sizes


def build_generator(config: StackGANConfig) -> StageIGenerator | StageIIGenerator:
    """The generator of `config.stage`; in stage 2 it contains the stage-I generator at a quarter of the size."""
    if config.stage == 1:
        return StageIGenerator(config.text_dim, config.gf_dim, config.z_dim, config.cond_dim, config.image_size)
    return StageIIGenerator(
        config.text_dim, config.gf_dim, config.z_dim, config.cond_dim, config.r_num, config.image_size
    )


def build_discriminator(config: StackGANConfig) -> StageIDiscriminator | StageIIDiscriminator:
    if config.stage == 1:
        return StageIDiscriminator(config.df_dim, config.cond_dim, config.image_size)
    return StageIIDiscriminator(config.df_dim, config.cond_dim, config.image_size)
