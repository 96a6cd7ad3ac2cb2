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

from t2itool.encoders.features import TextFeatures
from t2itool.models.attngan.config import AttnGANConfig
from t2itool.models.attngan.losses import (
    bce_fake,
    bce_real,
    combine_discriminator_terms,
    generator_adversarial_loss,
    generator_loss,
    kl_loss,
)
from t2itool.models.attngan.networks import (
    AttnGANDiscriminator,
    build_discriminators,
    build_generator,
    init_weights,
)
from t2itool.models.blocks.staged_gan import damsm_term, wrong_pair_term
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch, GANRecipe, TextNeeds


def discriminator_names(config: AttnGANConfig) -> list[str]:
    """The stage discriminators' network (and optimizer) names, smallest stage first: d64, d128, d256 at 256 px."""
    return [f"d{size}" for size in config.stage_sizes]


class AttnGANRecipe(GANRecipe):
    """Nets: generator, d<S/4>, d<S/2>, d<S>. Optimizers: generator and one per discriminator (same names)."""

    config: AttnGANConfig
    needs_image_encoder = True  # DAMSM loss on the final generated images
    text_kinds = ("damsm",)  # the DAMSM loss needs the DAMSM text encoder's words and sentences
    default_ema = 0.999  # the code saves an exponential moving average of G (trainer.py avg_param_G)

    def image_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.stage_sizes)

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.text_dim, word_dim=self.config.text_dim)

    def build_networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"generator": build_generator(self.config)}
        nets.update(build_discriminators(self.config))
        for net in nets.values():
            net.apply(init_weights)  # code/miscc/utils.py weights_init on G and every D
        return nets

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        optimizers = {"generator": torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas)}
        for name in discriminator_names(c):
            optimizers[name] = torch.optim.Adam(nets[name].parameters(), lr=c.lr_d, betas=betas)
        return optimizers

    # --- batch-coupled terms ------------------------------------------------------------------------------------
    @staticmethod
    def wrong_term(
        disc: AttnGANDiscriminator, real_features: torch.Tensor, batch: Batch, ctx: StepContext, sentence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE of the code's wrong pairs over the global batch (see `blocks.staged_gan.wrong_pair_term`)."""
        return wrong_pair_term(disc.cond_logits, real_features, batch, ctx, sentence)

    def damsm(self, ctx: StepContext, images: torch.Tensor, text: TextFeatures, batch: Batch) -> torch.Tensor:
        """Unweighted DAMSM loss L_w + L_s of `images` against their captions over the global batch, with the
        config's gammas (the AttnGAN cfgs' 4, 5, 10) and same-class masking; the gradient reaches `images`."""
        c = self.config
        return damsm_term(ctx, images, text, batch, (c.gamma1, c.gamma2, c.gamma3), c.mask_same_class)

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
        for name, real, fake in zip(discriminator_names(c), batch.images, out.images, strict=True):
            disc = ctx.nets[name]
            assert real.shape[-1] == disc.stage_size, f"{name}: real images {tuple(real.shape)}"
            with ctx.update(name) as phase:
                with ctx.autocast():
                    real_features = disc(real)
                    fake_features = disc(fake.detach())
                    real_cond = disc.cond_logits(real_features, text.sentence).float()
                    fake_cond = disc.cond_logits(fake_features, text.sentence).float()
                wrong, _ = self.wrong_term(disc, real_features, batch, ctx, text.sentence)
                if c.unconditional_head:
                    with ctx.autocast():
                        real_uncond = disc.uncond_logits(real_features).float()
                        fake_uncond = disc.uncond_logits(fake_features).float()
                    loss_d = combine_discriminator_terms(
                        bce_real(real_cond), bce_fake(fake_cond), wrong, bce_real(real_uncond), bce_fake(fake_uncond)
                    )
                else:
                    loss_d = combine_discriminator_terms(bce_real(real_cond), bce_fake(fake_cond), wrong)
                phase.backward(loss_d, f"loss_{name}")
            stats[f"loss_{name}"] = loss_d.detach()
            stats[f"logit_real_{name}"] = real_cond.detach().mean()
            stats[f"logit_fake_{name}"] = fake_cond.detach().mean()
            loss_d_total = loss_d_total + loss_d.detach()

        # Generator: every stage's BCE terms through the updated D_i, DAMSM on the final image, KL of the CA.
        with ctx.update("generator") as phase:
            terms = []
            for name, fake in zip(discriminator_names(c), out.images, strict=True):
                disc = ctx.nets[name]
                with ctx.autocast():
                    features = disc(fake)
                    cond = disc.cond_logits(features, text.sentence).float()
                    uncond = disc.uncond_logits(features).float() if c.unconditional_head else None
                terms.append(generator_adversarial_loss(cond, uncond))
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
