"""AttnGAN's training step (taoxugit/AttnGAN code/trainer.py condGANTrainer.train, code/miscc/losses.py).

One step: the generator runs once (images at the three stage sizes, attention maps, CA mean and log-variance); each
stage discriminator D_i then takes one update on its own BCE loss
    D_i = (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3
with the code's wrong pairs (real image j with the sentence of sample j + 1, j < B - 1); then the generator takes
one update on
    G = sum_i (BCE(uncond(D_i(fake_i)), 1) + BCE(cond(D_i(fake_i), s), 1)) + lambda * (L_w + L_s)(fake_3) + KL
through the just-updated discriminators, where L_w + L_s is the DAMSM loss of the final fake images under the frozen
DAMSM encoders (code/miscc/losses.py generator_loss, KL_loss).

Batch-coupled terms are formed over the global batch so that N processes train like one: the wrong pairs via
`ctx.gather` of the sentences, the DAMSM loss on the gathered image features (with their gradient).
"""

from __future__ import annotations

import torch
from torch import nn

from t2itool.models.attngan.config import AttnGANConfig
from t2itool.models.attngan.losses import generator_loss, kl_loss
from t2itool.models.attngan.networks import build_discriminators, build_generator, init_weights
from t2itool.models.blocks.staged_gan import StagedGANRecipe, stage_discriminator_loss, stage_generator_term
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch


class AttnGANRecipe(StagedGANRecipe):
    """Nets: generator, d<S/4>, d<S/2>, d<S>. Optimizers: generator and one per discriminator (same names)."""

    config: AttnGANConfig

    def build_networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"generator": build_generator(self.config)}
        nets.update(build_discriminators(self.config))
        for net in nets.values():
            net.apply(init_weights)  # code/miscc/utils.py weights_init on G and every D
        return nets

    # --- one step -----------------------------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator = ctx.nets["generator"]
        text = ctx.text(batch)
        assert text.words is not None and text.mask is not None, "attngan needs word features (--text damsm)"
        z, eps = ctx.noise(batch, "z"), ctx.noise(batch, "ca")
        with ctx.autocast():
            out = generator(z, eps, text.sentence, text.words, text.mask)  # shared by every phase
        stats: dict[str, torch.Tensor | float] = {}

        # One update per stage discriminator (trainer.py: netsD[i] zero_grad / backward / step in turn).
        loss_d_total = 0.0
        for name, real, fake in zip(self.discriminator_names(), batch.images, out.images, strict=True):
            disc = ctx.nets[name]
            assert real.shape[-1] == disc.stage_size, f"{name}: real images {tuple(real.shape)}"
            with ctx.update(name) as phase:
                with ctx.autocast():
                    real_features, fake_features = disc(real), disc(fake.detach())
                loss_d, real_cond, fake_cond = stage_discriminator_loss(
                    disc, real_features, fake_features, batch, ctx, text.sentence, text.sentence, c.unconditional_head
                )
                phase.backward(loss_d, f"loss_{name}")
            stats[f"loss_{name}"] = loss_d.detach()
            stats[f"logit_real_{name}"] = real_cond.detach().mean()
            stats[f"logit_fake_{name}"] = fake_cond.detach().mean()
            loss_d_total = loss_d_total + loss_d.detach()

        # Generator: every stage's BCE terms through the updated D_i, DAMSM on the final image, KL of the CA.
        with ctx.update("generator") as phase:
            terms = []
            for name, fake in zip(self.discriminator_names(), out.images, strict=True):
                disc = ctx.nets[name]
                with ctx.autocast():
                    features = disc(fake)
                terms.append(stage_generator_term(disc, features, text.sentence, ctx, c.unconditional_head))
            loss_damsm = self.damsm(ctx, out.images[-1], text, batch) if c.damsm_lambda > 0 else terms[0].new_zeros(())
            mu, logvar = out.mu.float(), out.logvar.float()
            loss_g = generator_loss(terms, loss_damsm, mu, logvar, c.damsm_lambda, c.kl_weight)
            phase.backward(loss_g, "loss_g")

        stats.update(
            loss_d=loss_d_total,
            loss_g=loss_g.detach(),
            loss_g_adv=sum(t.detach() for t in terms),
            loss_damsm=loss_damsm.detach(),
            loss_kl=kl_loss(mu.detach(), logvar.detach()),
            attention_max=out.attention[-1].detach().amax(dim=1).mean(),
        )
        return stats
