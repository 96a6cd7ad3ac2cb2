"""DR-GAN's discriminators with the Distribution Normalisation Module (Tan et al., TNNLS 2023, Sec. III-C; DR-GAN repo
model.py D_NET64 / D_NET128 / D_NET256): AttnGAN's stage discriminator with spectral-normed convolutions and no batch
norm, plus a VAE branch that encodes the image into a latent and decodes, with the sentence, a first-stage-size image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from t2itool.models.blocks.conditioning import ConditioningAugmentation
from t2itool.models.blocks.stage_discriminator import ConditionalLogits, StageImageEncoder, UnconditionalLogits
from t2itool.models.blocks.stage_generator import InitStage


class Encoded(NamedTuple):
    """features (B, 8 ndf, 4, 4) for the logit heads; latent_input (B, W, 4, 4) the widest 4x4 map (8 ndf at 64 px,
    16 ndf at 128, 32 ndf at 256: the code's x_code40), which feeds the VAE branch."""

    features: torch.Tensor
    latent_input: torch.Tensor


class DRGANDiscriminator(nn.Module):
    """One stage's D. `forward(images)` -> Encoded; `cond_logits`, `uncond_logits` as AttnGAN's (logits);
    `reconstruct(encoded, sentence, eps_text, eps_image)` -> (reconstruction (B, 3, S0, S0), mu, logvar).

    VAE branch: GAP(latent_input) -> conv1x1 (bias) -> text_dim, BN, ReLU -> the D's CA (shared with its sentence
    encoding) -> image latent (cond_dim); decoder = InitStage(concat(CA(sentence), latent)) to decoder_dim x S0 x S0
    (S0 the first stage's side) -> conv1x1 -> 3 (no bias) -> LReLU 0.2 (model.py encode_image_by_1times).
    """

    def __init__(
        self,
        stage_size: int,
        first_size: int,
        df_dim: int = 32,
        text_dim: int = 256,
        cond_dim: int = 100,
        decoder_dim: int = 32,
        unconditional: bool = True,
    ) -> None:
        super().__init__()
        self.stage_size, self.first_size = int(stage_size), int(first_size)
        self.encoder = StageImageEncoder(stage_size, df_dim, batch_norm=False, spectral_norm=True)
        self.uncond_head = UnconditionalLogits(df_dim * 8, spectral_norm=True) if unconditional else None
        self.cond_head = ConditionalLogits(df_dim * 8, text_dim, batch_norm=False, spectral_norm=True)
        latent_width = df_dim * 8 * 2 ** len(self.encoder.down_blocks)
        self.reduction = nn.Sequential(nn.Conv2d(latent_width, text_dim, 1), nn.BatchNorm2d(text_dim), nn.ReLU())
        self.ca = ConditioningAugmentation(text_dim, cond_dim, "glu")
        self.decoder = InitStage(cond_dim * 2, decoder_dim, first_size)
        self.to_image = nn.Sequential(nn.Conv2d(decoder_dim, 3, 1, bias=False), nn.LeakyReLU(0.2))

    def forward(self, images: torch.Tensor) -> Encoded:
        assert images.shape[1:] == (3, self.stage_size, self.stage_size), f"images {tuple(images.shape)}"
        widest = self.encoder.down_blocks(self.encoder.encode_x16(images))
        return Encoded(self.encoder.leaky_blocks(widest), widest)

    def cond_logits(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.cond_head(features, sentence)

    def uncond_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.uncond_head is None:
            raise RuntimeError("this discriminator was built without an unconditional head")
        return self.uncond_head(features)

    def reconstruct(
        self, encoded: Encoded, sentence: torch.Tensor, eps_text: torch.Tensor, eps_image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        code = self.reduction(encoded.latent_input.mean(dim=(2, 3), keepdim=True)).flatten(1)
        text_code, _, _ = self.ca(sentence, eps_text)
        latent, mu, logvar = self.ca(code, eps_image)
        return self.to_image(self.decoder(torch.cat((text_code, latent), dim=1))), mu, logvar
