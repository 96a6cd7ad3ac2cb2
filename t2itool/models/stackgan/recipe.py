"""StackGAN's training step, one stage at a time (hanzhanggit/StackGAN-Pytorch code/trainer.py GANTrainer.train and
code/miscc/utils.py compute_discriminator_loss / compute_generator_loss): the generator runs once, then one D update
on real, wrong and fake pairs, then one G update with the KL term of conditioning augmentation.

Stage 2 holds the stage-I generator as `generator.stage1`: frozen (eval mode, no gradients, no optimizer) and loaded
with `--init-from STAGE1_RUN:generator`. Wrong pairs follow the code (real image j with the condition of sample j + 1,
the batch's last sample has none) over the global batch via `ctx.gather`, so N processes train as one.
"""

from __future__ import annotations

import torch
from torch import nn

from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch, GANRecipe, TextNeeds
from t2itool.models.stackgan.config import StackGANConfig
from t2itool.models.stackgan.losses import (
    bce_fake,
    bce_real,
    combine_discriminator_terms,
    generator_loss,
    wrong_pairs_term,
)
from t2itool.models.stackgan.networks import (
    StageIIGenerator,
    build_discriminator,
    build_generator,
    noise_sizes,
)


class StackGANRecipe(GANRecipe):
    """Nets: generator, discriminator (of `config.stage`). Optimizers: generator, discriminator (Adam)."""

    config: StackGANConfig
    text_kinds = ("damsm", "precomputed")  # DAMSM sentence (default) or char-CNN-RNN embeddings from prep

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.text_dim)

    def features_average(self) -> int:
        return self.config.average_embeddings

    def init_targets(self) -> dict[str, str]:
        return {"generator": "generator.stage1"} if self.config.stage == 2 else {}

    def frozen_modules(self) -> tuple[str, ...]:
        return ("generator.stage1",) if self.config.stage == 2 else ()

    def lr_schedule(self, epoch: int) -> dict[str, float]:
        # trainer.py: at the start of every epoch that is a positive multiple of LR_DECAY_EPOCH, lr *= 0.5.
        factor = 0.5 ** (epoch // self.config.lr_decay_epochs)
        return {"generator": factor, "discriminator": factor}

    def build_networks(self) -> dict[str, nn.Module]:
        return {"generator": build_generator(self.config), "discriminator": build_discriminator(self.config)}

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        generator = nets["generator"]
        trainable = (
            generator.trainable_parameters() if isinstance(generator, StageIIGenerator) else generator.parameters()
        )
        return {
            "generator": torch.optim.Adam(trainable, lr=c.lr_g, betas=betas),
            "discriminator": torch.optim.Adam(nets["discriminator"].parameters(), lr=c.lr_d, betas=betas),
        }

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator, disc = ctx.nets["generator"], ctx.nets["discriminator"]
        if batch.global_size < 2:
            raise ValueError("stackgan: the wrong pairs need a global batch of at least 2 (--batch-size)")
        stage2 = c.stage == 2
        text = ctx.text(batch).sentence
        noise = {name: ctx.noise(batch, name) for name in noise_sizes(c)}
        with ctx.autocast():
            out = generator(text, **noise)  # shared by both phases, as the official step
        fake = out.image
        condition = out.mu.detach().float()
        # Wrong pairs: sample j's real image with sample (j + 1)'s condition over the global batch; the last global
        # sample's row (wrapped to sample 0) goes through the head but not into the loss.
        wrong_condition = ctx.gather(condition).roll(-1, dims=0)[ctx.local_rows(batch)]
        valid = batch.positions < batch.global_size - 1

        # Discriminator: real / wrong / fake conditional terms (+ unconditional real / fake in stage II).
        with ctx.update("discriminator") as phase:
            with ctx.autocast():
                real_features = disc(batch.images[-1])
                fake_features = disc(fake.detach())
                real_logits = disc.cond_logits(real_features, condition).float()
                wrong_logits = disc.cond_logits(real_features, wrong_condition).float()
                fake_logits = disc.cond_logits(fake_features, condition).float()
                uncond = None
                if stage2:
                    uncond = (disc.uncond_logits(real_features).float(), disc.uncond_logits(fake_features).float())
            d_real, d_fake = bce_real(real_logits), bce_fake(fake_logits)
            d_wrong = wrong_pairs_term(wrong_logits, valid, batch.global_size - 1, ctx.world_size)
            uncond_terms = (bce_real(uncond[0]), bce_fake(uncond[1])) if uncond else (None, None)
            loss_d = combine_discriminator_terms(d_real, d_wrong, d_fake, *uncond_terms)
            phase.backward(loss_d, "loss_d")

        # Generator: BCE(fake, 1) (+ unconditional) through the just-updated D, plus coeff_kl * KL of its CA.
        with ctx.update("generator") as phase:
            with ctx.autocast():
                features = disc(fake)
                g_logits = disc.cond_logits(features, condition).float()
                g_uncond = disc.uncond_logits(features).float() if stage2 else None
            loss_g = generator_loss(g_logits, out.mu.float(), out.logvar.float(), c.coeff_kl, g_uncond)
            phase.backward(loss_g, "loss_g")

        stats = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": d_real.detach(),
            "d_wrong": d_wrong.detach(),
            "d_fake": d_fake.detach(),
            "logit_real": real_logits.detach().mean(),
            "logit_fake": fake_logits.detach().mean(),
        }
        if uncond:
            stats["d_uncond_real"], stats["d_uncond_fake"] = (t.detach() for t in uncond_terms)
        return stats
