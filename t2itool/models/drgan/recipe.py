"""DR-GAN's training step (Tan et al., TNNLS 2023; DR-GAN repo trainer.py train, miscc/losses.py, model.py).

One step: the generator runs once (three images, attention, CA statistics, the SDMs' pooled parts). Each stage D_i
takes one update on AttnGAN's BCE loss plus the DNM terms
    D_i += dnm_weight * rec_weight * (||resize_S0(fake_i) - rec_i(fake_i)||_F + ||rec_i(real_i) - real_S0||_F)
           + kl_weight * (KL(real latent) + KL(fake latent))
Then G takes one update on
    sum_i BCE_i + lambda * DAMSM(fake_3) + KL_CA + sdl_base ** (SDL_2 / S_2^2 + SDL_3 / S_3^2)
    + rirm_weight * (RIRM_2 + RIRM_3) + sum_i dal_weight_i * ||rec_i(fake_i) - real_S0||_F.
Batch statistics (the SDL's means and variances), the code's sums over the batch (RIRM) and its Frobenius norms
are formed over the global batch with `ctx.gather(..., grad=True)`, so N processes train like one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.staged_gan import (
    StagedGANRecipe,
    init_weights,
    stage_discriminator_loss,
    stage_generator_term,
)
from t2itool.models.context import StepContext
from t2itool.models.drgan.config import DRGANConfig
from t2itool.models.drgan.discriminator import DRGANDiscriminator
from t2itool.models.drgan.losses import (
    dnm_discriminator_terms,
    frobenius,
    generator_internal_term,
    rirm_loss,
    semantic_disentangling_loss,
)
from t2itool.models.drgan.networks import build_generator
from t2itool.models.recipe import Batch


def build_discriminators(config: DRGANConfig) -> dict[str, DRGANDiscriminator]:
    first = config.stage_sizes[0]
    return {
        f"d{size}": DRGANDiscriminator(
            size, first, config.df_dim, config.text_dim, config.cond_dim, config.dnm_decoder_dim,
            config.unconditional_head,
        )
        for size in config.stage_sizes
    }  # fmt: skip


def _squared_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).square().flatten(1).sum(dim=1)


class DRGANRecipe(StagedGANRecipe):
    """Nets: generator, d<S/4>, d<S/2>, d<S>. Optimizers: generator and one per discriminator (same names).
    EMA 0.999 of G (trainer.py avg_param_G, saved as the generator)."""

    config: DRGANConfig

    def build_networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"generator": build_generator(self.config)}
        nets.update(build_discriminators(self.config))
        for net in nets.values():
            net.apply(init_weights)  # miscc/utils.py weights_init (AttnGAN's orthogonal init) on G and every D
        return nets

    def global_frobenius(self, ctx: StepContext, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return frobenius(ctx.gather(_squared_sums(a, b), grad=True))

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator = ctx.nets["generator"]
        text = ctx.text(batch)
        assert text.words is not None and text.mask is not None, "drgan needs word features (--text damsm)"
        z, eps = ctx.noise(batch, "z"), ctx.noise(batch, "ca")
        eps_text, eps_image = ctx.noise(batch, "dnm_text"), ctx.noise(batch, "dnm_image")
        first = c.stage_sizes[0]
        real_first = batch.images[0]
        with ctx.autocast():
            out = generator(z, eps, text.sentence, text.words, text.mask)
        stats: dict[str, torch.Tensor | float] = {}

        loss_d_total = 0.0
        for name, real, fake in zip(self.discriminator_names(), batch.images, out.images, strict=True):
            disc = ctx.nets[name]
            with ctx.update(name) as phase:
                fake = fake.detach()
                with ctx.autocast():
                    real_enc, fake_enc = disc(real), disc(fake)
                    rec_real, mu_r, logvar_r = disc.reconstruct(real_enc, text.sentence, eps_text, eps_image)
                    rec_fake, mu_f, logvar_f = disc.reconstruct(fake_enc, text.sentence, eps_text, eps_image)
                loss_bce, real_cond, fake_cond = stage_discriminator_loss(
                    disc, real_enc.features, fake_enc.features, batch, ctx, text.sentence, text.sentence,
                    c.unconditional_head,
                )  # fmt: skip
                # miscc/losses.py: the fake resized (bilinear) to the first stage's side; the real of that side.
                resized = F.interpolate(fake.float(), size=(first, first), mode="bilinear", align_corners=False)
                loss_dnm = dnm_discriminator_terms(
                    self.global_frobenius(ctx, resized, rec_fake), self.global_frobenius(ctx, rec_real, real_first),
                    mu_r.float(), logvar_r.float(), mu_f.float(), logvar_f.float(),
                    c.dnm_weight, c.dnm_rec_weight, c.dnm_kl_weight, c.dnm_kl,
                )  # fmt: skip
                loss_d = loss_bce + loss_dnm
                phase.backward(loss_d, f"loss_{name}")
            stats[f"loss_{name}"] = loss_d.detach()
            stats[f"loss_dnm_{name}"] = loss_dnm.detach()
            stats[f"logit_real_{name}"] = real_cond.detach().mean()
            stats[f"logit_fake_{name}"] = fake_cond.detach().mean()
            loss_d_total = loss_d_total + loss_d.detach()

        with ctx.update("generator") as phase:
            terms, dal = [], []
            for name, fake, weight in zip(self.discriminator_names(), out.images, c.dal_weights, strict=True):
                disc = ctx.nets[name]
                with ctx.autocast():
                    enc = disc(fake)
                terms.append(stage_generator_term(disc, enc.features, text.sentence, ctx, c.unconditional_head))
                with ctx.autocast():
                    rec, _, _ = disc.reconstruct(enc, text.sentence, eps_text, eps_image)
                dal.append(weight * self.global_frobenius(ctx, rec, real_first))
            sdl, rirm, sides = [], [], []
            for stage, parts in enumerate(out.parts):
                real = batch.images[stage]  # the real image at the side of this SDM's hidden map
                with ctx.autocast():
                    reconstruction, real_vector = generator.reconstruct_real(stage, real)
                side = float(real.shape[-1])
                gathered = [ctx.gather(v.float(), grad=True) for v in (*parts, real_vector)]
                sdl.append(semantic_disentangling_loss(*gathered, side=side, variance=c.sdl_variance))
                rirm.append(rirm_loss(ctx.gather(_squared_sums(reconstruction, real), grad=True), side))
                sides.append(side)
            internal = generator_internal_term(sdl, sides, rirm, c.sdl_base, c.rirm_weight)
            loss_damsm = self.damsm(ctx, out.images[-1], text, batch) if c.damsm_lambda > 0 else terms[0].new_zeros(())
            loss_kl = kl_loss(out.mu.float(), out.logvar.float())
            loss_g = sum(terms[1:], terms[0]) + c.damsm_lambda * loss_damsm + c.kl_weight * loss_kl
            loss_g = loss_g + internal + sum(dal)
            phase.backward(loss_g, "loss_g")

        stats.update(
            loss_d=loss_d_total,
            loss_g=loss_g.detach(),
            loss_g_adv=sum(t.detach() for t in terms),
            loss_damsm=loss_damsm.detach(),
            loss_kl=loss_kl.detach(),
            loss_sdl=sum(s.detach() for s in sdl),
            loss_rirm=sum(r.detach() for r in rirm),
            loss_internal=internal.detach(),
            loss_dal=sum(d.detach() for d in dal),
        )
        return stats
