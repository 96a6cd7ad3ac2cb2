"""Training pieces of the AttnGAN family (taoxugit/AttnGAN code/trainer.py, code/miscc/losses.py, code/miscc/utils.py)
shared by AttnGAN and its descendants (SD-GAN, DR-GAN): a stage discriminator (encoder + heads), BCE-with-logits D and
G terms, the code's orthogonal initialisation, and the batch-coupled wrong-pair and DAMSM terms over the global batch.

The official heads end in a sigmoid and the losses are nn.BCELoss on probabilities; here the heads give logits and the
losses use BCE-with-logits: the same value, without float32 saturation (nn.BCELoss clamps each log at -100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.encoders.features import TextFeatures
from t2itool.encoders.losses import damsm_loss
from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.stage_discriminator import ConditionalLogits, StageImageEncoder, UnconditionalLogits
from t2itool.models.recipe import GANRecipe, TextNeeds


def bce_real(logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE against label 1: mean softplus(-x) = nn.BCELoss()(sigmoid(x), 1)."""
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def bce_fake(logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE against label 0: mean softplus(x) = nn.BCELoss()(sigmoid(x), 0)."""
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def combine_discriminator_terms(
    real_cond: torch.Tensor,
    fake_cond: torch.Tensor,
    wrong_cond: torch.Tensor,
    real_uncond: torch.Tensor | None = None,
    fake_uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """One stage's D loss from its BCE terms (code/miscc/losses.py discriminator_loss): (ru + rc) / 2 +
    (fu + fc + wc) / 3, or without the unconditional head rc + (fc + wc) / 2."""
    if (real_uncond is None) != (fake_uncond is None):
        raise ValueError("pass both unconditional terms (real and fake) or neither")
    if real_uncond is None:
        return real_cond + (fake_cond + wrong_cond) / 2.0
    return (real_uncond + real_cond) / 2.0 + (fake_uncond + fake_cond + wrong_cond) / 3.0


def generator_adversarial_loss(fake_cond: torch.Tensor, fake_uncond: torch.Tensor | None = None) -> torch.Tensor:
    """One stage's G term (code/miscc/losses.py generator_loss): BCE(fake_uncond, 1) + BCE(fake_cond, 1), or the
    conditional term alone without an unconditional head."""
    loss = bce_real(fake_cond)
    return loss if fake_uncond is None else bce_real(fake_uncond) + loss


def generator_loss(
    stage_terms: Sequence[torch.Tensor],
    damsm: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    damsm_lambda: float,
    kl_weight: float = 1.0,
) -> torch.Tensor:
    """sum of the stages' adversarial terms + damsm_lambda * DAMSM(final image) + kl_weight * KL (`damsm` is the
    unweighted L_w + L_s; the code multiplies each part by TRAIN.SMOOTH.LAMBDA)."""
    if not stage_terms:
        raise ValueError("need at least one stage term")
    return sum(stage_terms[1:], stage_terms[0]) + damsm_lambda * damsm + kl_weight * kl_loss(mu, logvar)


class StageDiscriminator(nn.Module):
    """One stage's discriminator (code/model.py D_NET64 / D_NET128 / D_NET256 at 64 / 128 / 256 px; smaller stages
    follow StageImageEncoder's rule).

    forward(images (B, 3, S, S)) -> features (B, 8 df_dim, 4, 4); the heads are separate calls, so one encoding of
    the real images serves the real, wrong-pair and unconditional logits, as in the code:
    `cond_logits(features, sentence) -> (B,)`, `uncond_logits(features) -> (B,)` (logits).
    """

    def __init__(self, stage_size: int, df_dim: int = 64, text_dim: int = 256, unconditional: bool = True) -> None:
        super().__init__()
        self.stage_size = int(stage_size)
        self.encoder = StageImageEncoder(stage_size, df_dim)
        self.uncond_head = UnconditionalLogits(df_dim * 8) if unconditional else None
        self.cond_head = ConditionalLogits(df_dim * 8, text_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def cond_logits(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.cond_head(features, sentence)

    def uncond_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.uncond_head is None:
            raise RuntimeError("this discriminator was built without an unconditional head (unconditional=False)")
        return self.uncond_head(features)


def init_weights(module: nn.Module) -> None:
    """The code's initialisation (code/miscc/utils.py weights_init), applied with `network.apply(init_weights)`:
    orthogonal conv and linear weights (gain 1), linear biases 0, batch-norm weights N(1, 0.02) and biases 0.
    Conv biases keep PyTorch's default, as in the code. Spectral-normed convs (weight_orig) are initialised alike."""
    if isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(getattr(module, "weight_orig", module.weight), 1.0)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.affine:
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, 1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def wrong_pair_term(
    cond_logits: Any, real_features: torch.Tensor, batch: Any, ctx: Any, sentence: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE(cond(real_j, s_{j+1}), 0) averaged over the global batch's B - 1 wrong pairs (code/miscc/losses.py
    discriminator_loss: real_features[:B-1] with conditions[1:B]); `cond_logits(features, sentence)` is the head.
    Each process sums its own pairs, scaled so that the loop's average of gradients (and of the reported values)
    over processes is the one-process mean. The last process holds one pair fewer; the head's batch norm takes its
    statistics over the B - 1 pairs as the code does."""
    gathered = ctx.gather(sentence)
    valid = batch.positions + 1 < batch.global_size
    if not bool(valid.any()) and ctx.world_size == 1:
        return real_features.new_zeros(()), real_features.new_zeros(0)
    # With several processes the head runs even on no rows: its batch norm reduces over every process.
    partner = gathered[batch.positions[valid] + 1]
    with ctx.autocast():
        logits = cond_logits(real_features[valid], partner).float()
    pairs = max(batch.global_size - 1, 1)
    term = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="sum")
    return term * ctx.world_size / pairs, logits


def damsm_term(
    ctx: Any,
    images: torch.Tensor,
    text: TextFeatures,
    batch: Any,
    gammas: tuple[float, float, float],
    mask_same_class: bool,
) -> torch.Tensor:
    """Unweighted DAMSM loss L_w + L_s of `images` against their captions over the global batch, with the given
    gammas and optional same-class masking; the gradient reaches `images` (code/miscc/losses.py words_loss,
    sent_loss as used in generator_loss)."""
    assert ctx.image_encoder is not None, "the DAMSM loss needs the DAMSM image encoder (needs_image_encoder)"
    with ctx.autocast():
        regions, code = ctx.image_encoder(images)
    return damsm_loss(
        ctx.gather(regions.float(), grad=True), ctx.gather(code.float(), grad=True),
        ctx.gather(text.words), ctx.gather(text.sentence), ctx.gather(text.lengths),
        class_ids=ctx.gather(batch.class_ids) if mask_same_class else None,
        gamma1=gammas[0], gamma2=gammas[1], gamma3=gammas[2],
    )  # fmt: skip


def stage_discriminator_loss(
    disc: Any,
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    batch: Any,
    ctx: Any,
    real_sentence: torch.Tensor,
    fake_sentence: torch.Tensor,
    unconditional: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stage discriminator's loss from its encoded real and fake images (code/miscc/losses.py
    discriminator_loss): BCE of the conditional head on real, fake and the global batch's wrong pairs, plus the
    unconditional head's real and fake terms when the stage has one. `disc` has `cond_logits` and `uncond_logits`;
    returns (loss, real conditional logits, fake conditional logits)."""
    with ctx.autocast():
        real_cond = disc.cond_logits(real_features, real_sentence).float()
        fake_cond = disc.cond_logits(fake_features, fake_sentence).float()
    wrong, _ = wrong_pair_term(disc.cond_logits, real_features, batch, ctx, real_sentence)
    real_uncond = fake_uncond = None
    if unconditional:
        with ctx.autocast():
            real_uncond = bce_real(disc.uncond_logits(real_features).float())
            fake_uncond = bce_fake(disc.uncond_logits(fake_features).float())
    loss = combine_discriminator_terms(bce_real(real_cond), bce_fake(fake_cond), wrong, real_uncond, fake_uncond)
    return loss, real_cond, fake_cond


def stage_generator_term(
    disc: Any, features: torch.Tensor, sentence: torch.Tensor, ctx: Any, unconditional: bool
) -> torch.Tensor:
    """One stage's generator term on the encoded fake images (code/miscc/losses.py generator_loss)."""
    with ctx.autocast():
        cond = disc.cond_logits(features, sentence).float()
        uncond = disc.uncond_logits(features).float() if unconditional else None
    return generator_adversarial_loss(cond, uncond)


class StagedGANRecipe(GANRecipe):
    """The AttnGAN family's recipe skeleton (code/trainer.py): a generator and one discriminator per stage side,
    networks and optimizers named `generator` and d<side> (d64, d128, d256 at 256 px, smallest first), Adam for each
    (TRAIN.GENERATOR_LR / DISCRIMINATOR_LR, betas from the config), DAMSM text features, EMA 0.999 of G (trainer.py
    avg_param_G). The config has stage_sizes, text_dim, lr_g, lr_d, beta1, beta2, gamma1-3 and mask_same_class."""

    needs_image_encoder = True  # the DAMSM loss on the final generated images
    text_kinds = ("damsm",)  # the DAMSM loss needs the DAMSM text encoder's words and sentences
    default_ema = 0.999

    def discriminator_names(self) -> list[str]:
        return [f"d{size}" for size in self.config.stage_sizes]

    def image_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.stage_sizes)

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.text_dim, word_dim=self.config.text_dim)

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        optimizers = {"generator": torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas)}
        for name in self.discriminator_names():
            optimizers[name] = torch.optim.Adam(nets[name].parameters(), lr=c.lr_d, betas=betas)
        return optimizers

    def damsm(
        self, ctx: Any, images: torch.Tensor, text: TextFeatures, batch: Any, mask_same_class: bool = True
    ) -> torch.Tensor:
        """Unweighted DAMSM loss L_w + L_s of `images` over the global batch with the config's gammas; same-class
        masking when the config asks for it and `mask_same_class` (False where the batch lacks the images' classes)."""
        c = self.config
        masking = c.mask_same_class and mask_same_class
        return damsm_term(ctx, images, text, batch, (c.gamma1, c.gamma2, c.gamma3), masking)
