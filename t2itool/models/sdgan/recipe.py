"""SD-GAN's training step (Yin et al., CVPR 2019, Sec. 3): the Siamese scheme on AttnGAN's three-stage trunk.

Each sample carries two captions (the engine's pairs: of the same image with probability p, else of another image,
pair label y). Both branches share every weight, so one generator pass over the 2B captions (same z and CA noise for
a sample's two branches: the branches differ only in their text) gives both branches' fakes. Then, per stage,
    D_i = (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3
as AttnGAN, the fake terms averaged over both branches' fakes with their own captions (the batch holds only the first
caption's real image, so the real and wrong-pair terms use branch 1); and
    G = sum_i (BCE(uncond(D_i(fake_i)), 1) + BCE(cond(D_i(fake_i), s), 1)) + lambda * DAMSM + KL + w_c * L_c,
the adversarial and KL terms averaged over both branches, DAMSM the mean of both branches' DAMSM losses, and L_c the
contrastive loss on the chosen stage discriminator's pooled features of the two branches' final fakes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.encoders.features import TextFeatures
from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.staged_gan import (
    StagedGANRecipe,
    StageDiscriminator,
    init_weights,
    stage_discriminator_loss,
    stage_generator_term,
)
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.models.sdgan.config import SDGANConfig
from t2itool.models.sdgan.losses import branch_features, contrastive_loss
from t2itool.models.sdgan.networks import SentenceSCBN, WordSCBN, build_generator


def build_discriminators(config: SDGANConfig) -> dict[str, StageDiscriminator]:
    return {
        f"d{size}": StageDiscriminator(size, config.df_dim, config.text_dim, config.unconditional_head)
        for size in config.stage_sizes
    }


def zero_condition_outputs(generator: nn.Module) -> None:
    """Zero the last layer of every SCBN condition network, so that training starts from AttnGAN's batch norm
    (gamma_c = beta_c = 0) and the text modulation grows from there (a choice: the paper gives no init)."""
    for module in generator.modules():
        if isinstance(module, SentenceSCBN):
            last = module.mlp[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        elif isinstance(module, WordSCBN):
            for conv in (module.to_gamma, module.to_beta):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)


def pad_words(text: TextFeatures, length: int) -> TextFeatures:
    """Words and mask padded to `length` tokens (zero words, masked), so two captions' features concatenate."""
    assert text.words is not None and text.mask is not None
    extra = length - text.words.shape[2]
    if extra == 0:
        return text
    words = F.pad(text.words, (0, extra))
    mask = F.pad(text.mask, (0, extra), value=True)
    return TextFeatures(words, text.sentence, mask, text.lengths)


def concat_text(first: TextFeatures, second: TextFeatures) -> TextFeatures:
    length = max(first.words.shape[2], second.words.shape[2])  # type: ignore[union-attr]
    a, b = pad_words(first, length), pad_words(second, length)
    return TextFeatures(
        torch.cat((a.words, b.words)), torch.cat((a.sentence, b.sentence)), torch.cat((a.mask, b.mask)),
        torch.cat((a.lengths, b.lengths)),
    )  # fmt: skip


class SDGANRecipe(StagedGANRecipe):
    """Nets: generator, d<S/4>, d<S/2>, d<S>. Optimizers: generator and one per discriminator (same names).
    EMA 0.999 of G as AttnGAN's (SD-GAN gives none)."""

    config: SDGANConfig

    def pair_same_probability(self) -> float | None:
        return float(self.config.pair_same_probability)

    def build_networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"generator": build_generator(self.config)}
        nets.update(build_discriminators(self.config))
        for net in nets.values():
            net.apply(init_weights)  # AttnGAN's code/miscc/utils.py weights_init on G and every D
        zero_condition_outputs(nets["generator"])
        return nets

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        assert batch.pair_label is not None, "sdgan needs caption pairs (pair_same_probability)"
        generator = ctx.nets["generator"]
        text1, text2 = ctx.text(batch), ctx.text(batch, second=True)
        both = concat_text(text1, text2)
        size = len(batch)
        z, eps = ctx.noise(batch, "z"), ctx.noise(batch, "ca")
        with ctx.autocast():  # one pass over both branches (shared weights); same noise for a sample's two captions
            out = generator(z.repeat(2, 1), eps.repeat(2, 1), both.sentence, both.words, both.mask)
        stats: dict[str, torch.Tensor | float] = {}

        loss_d_total = 0.0
        for name, real, fake in zip(self.discriminator_names(), batch.images, out.images, strict=True):
            disc = ctx.nets[name]
            with ctx.update(name) as phase:
                with ctx.autocast():
                    real_features, fake_features = disc(real), disc(fake.detach())
                loss_d, real_cond, fake_cond = stage_discriminator_loss(
                    disc, real_features, fake_features, batch, ctx, text1.sentence, both.sentence, c.unconditional_head
                )
                phase.backward(loss_d, f"loss_{name}")
            stats[f"loss_{name}"] = loss_d.detach()
            stats[f"logit_real_{name}"] = real_cond.detach().mean()
            stats[f"logit_fake_{name}"] = fake_cond.detach().mean()
            loss_d_total = loss_d_total + loss_d.detach()

        with ctx.update("generator") as phase:
            terms, siamese = [], None
            for index, (name, fake) in enumerate(zip(self.discriminator_names(), out.images, strict=True)):
                disc = ctx.nets[name]
                with ctx.autocast():
                    features = disc(fake)
                terms.append(stage_generator_term(disc, features, both.sentence, ctx, c.unconditional_head))
                if index == c.contrastive_stage - 1:
                    siamese = branch_features(features, c.contrastive_normalize)
            assert siamese is not None
            loss_c = contrastive_loss(
                siamese[:size], siamese[size:], batch.pair_label, c.contrastive_alpha, c.contrastive_margin
            )
            if c.damsm_lambda > 0:
                final = out.images[-1]
                loss_damsm = (
                    self.damsm(ctx, final[:size], text1, batch, True)
                    + self.damsm(ctx, final[size:], text2, batch, False)  # the second image's class is not known
                ) / 2
            else:
                loss_damsm = terms[0].new_zeros(())
            mu, logvar = out.mu.float(), out.logvar.float()
            loss_kl = kl_loss(mu, logvar)
            loss_g = sum(terms[1:], terms[0]) + c.damsm_lambda * loss_damsm + c.kl_weight * loss_kl
            loss_g = loss_g + c.contrastive_weight * loss_c
            phase.backward(loss_g, "loss_g")

        stats.update(
            loss_d=loss_d_total,
            loss_g=loss_g.detach(),
            loss_g_adv=sum(t.detach() for t in terms),
            loss_damsm=loss_damsm.detach(),
            loss_kl=loss_kl.detach(),
            loss_contrastive=loss_c.detach(),
        )
        return stats
