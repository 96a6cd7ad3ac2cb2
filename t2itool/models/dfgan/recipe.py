"""DF-GAN's training step: one D update (hinge + mismatched text + MA-GP, one backward), then one G update
(tobran/DF-GAN code/lib/perpare.py and code/src/train.py of the 2022 code, in that order).

Mismatched pairs are formed over the global batch (image j with the sentence of sample j - 1, as the 2022 code's roll
of real features by one), via `ctx.gather`, so N processes with B/N samples each compute the same loss as one with B.
"""

from __future__ import annotations

import torch
from torch import nn

from t2itool.models.blocks import hinge_d_loss, hinge_g_loss, matching_aware_gp
from t2itool.models.context import StepContext
from t2itool.models.dfgan.config import DFGANConfig
from t2itool.models.dfgan.networks import NetD, NetG, build_head
from t2itool.models.recipe import Batch, GANRecipe, TextNeeds


class DFGANRecipe(GANRecipe):
    """Nets: generator, discriminator, head. Optimizers: generator, discriminator (D and head share one Adam)."""

    config: DFGANConfig

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.cond_dim)

    def build_networks(self) -> dict[str, nn.Module]:
        c = self.config
        return {
            "generator": NetG(c.ngf, c.noise_dim, c.cond_dim, c.image_size),
            "discriminator": NetD(c.ndf, c.image_size),
            "head": build_head(c.ndf, c.cond_dim),
        }

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        d_params = list(nets["discriminator"].parameters()) + list(nets["head"].parameters())
        return {
            "generator": torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas),
            "discriminator": torch.optim.Adam(d_params, lr=c.lr_d, betas=betas),
        }

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator, disc, head = ctx.nets["generator"], ctx.nets["discriminator"], ctx.nets["head"]
        text = ctx.text(batch)
        images = batch.images[-1].detach().requires_grad_(True)
        sentence = text.sentence.detach().requires_grad_(True)
        # Global roll: sample j's image meets sample (j - 1)'s sentence, whatever the split over processes.
        mismatched = ctx.gather(text.sentence).roll(1, dims=0)[ctx.local_rows(batch)]
        noise = ctx.noise(batch, "z")
        with ctx.autocast():
            fake = generator(noise, text.sentence)  # shared by both phases, as the official step

        # Discriminator: hinge on real / fake / mismatched pairs plus MA-GP on (image, sentence), one backward.
        with ctx.update("discriminator") as phase:
            with ctx.autocast():
                real_features = disc(images)
                real_logits = head(real_features, sentence).float()
                mismatch_logits = head(real_features, mismatched).float()
                fake_logits = head(disc(fake.detach()), text.sentence).float()
            gp = matching_aware_gp(real_logits, (images, sentence), c.gp_weight, c.gp_power, ctx.grad_scale)
            loss_d = hinge_d_loss(real_logits, fake_logits, mismatch_logits) + gp
            phase.backward(loss_d, "loss_d")

        # Generator: -E[C(D(G(z, s)), s)] through the just-updated discriminator.
        with ctx.update("generator") as phase:
            with ctx.autocast():
                g_logits = head(disc(fake), text.sentence).float()
            loss_g = hinge_g_loss(g_logits)
            phase.backward(loss_g, "loss_g")

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "ma_gp": gp.detach(),
            "logit_real": real_logits.detach().mean(),
            "logit_fake": fake_logits.detach().mean(),
            "logit_mismatch": mismatch_logits.detach().mean(),
        }
