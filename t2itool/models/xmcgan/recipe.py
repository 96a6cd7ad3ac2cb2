"""XMC-GAN's training step (google-research/xmcgan_image_generation xmcgan/train_utils.py train_step, xmcgan/xmc_gan.py
train_d and train_g_d): d_steps discriminator updates, each on its own sub-batch, and one generator update.

The code splits its batch into d_steps parts; `train_d` updates D on every part but the last; `train_g_d` then takes
D's and G's gradients from one forward pass on the last part and applies both, so G's gradient is taken through D as
it was before D's last update, and D's last update sees images of G as it was before G's update. Here the phases run
D (parts 0..k-2), G (part k-1), D (part k-1, with the fakes generated before G's update): the same arithmetic.

Losses (xmc_gan.py calculate_contrastive_loss, nets/xmc_net.py Discriminator), all weights 1.0 by default:
  D: hinge_d + sentence-image(real) + word-region(real)
  G: hinge_g + sentence-image(fake) + word-region(fake) + image-image(D features) + image-image(frozen network)
The contrastive terms couple the samples of a batch; they are computed over the global sub-batch gathered from every
process with gradients (`ctx.gather(x, grad=True)`), so N processes train like one. The code computes them per device
(7 images); on one process with the whole batch both agree.
"""

from __future__ import annotations

import torch
from torch import nn

from t2itool.encoders.features import TextFeatures
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch, GANRecipe, TextNeeds
from t2itool.models.xmcgan.config import XMCGANConfig
from t2itool.models.xmcgan.image_features import build_image_features
from t2itool.models.xmcgan.losses import (
    hinge_d_loss,
    hinge_g_loss,
    image_contrastive_loss,
    sentence_contrastive_loss,
    word_region_loss,
)
from t2itool.models.xmcgan.networks import Discriminator, build_discriminator, build_generator

IMAGE_FEATURES = "image_features"  # the frozen ImageNet network's entry in the recipe's networks


class XMCGANRecipe(GANRecipe):
    """Nets: generator, discriminator (+ image_features, frozen, when the image-image loss on a pretrained network is
    on). Optimizers: generator, discriminator (Adam, as the code's train_utils.create_train_state)."""

    config: XMCGANConfig
    text_kinds = ("damsm", "precomputed")
    default_ema = 0.999  # coco_xmc.py polyak_decay

    @property
    def uses_image_features(self) -> bool:
        return self.config.image_encoder != "none" and self.config.image_features_weight > 0

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.sentence_dim, word_dim=self.config.word_dim)

    def sub_batches(self) -> int:
        return int(self.config.d_steps)

    def frozen_modules(self) -> tuple[str, ...]:
        return (IMAGE_FEATURES,) if self.uses_image_features else ()

    def build_networks(self) -> dict[str, nn.Module]:
        c = self.config
        nets: dict[str, nn.Module] = {"generator": build_generator(c), "discriminator": build_discriminator(c)}
        if self.uses_image_features:
            # A missing or wrong weight file ends here in one T2IError naming the file (before any run folder).
            nets[IMAGE_FEATURES] = build_image_features(c.image_encoder, c.image_encoder_weights)
        return nets

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "generator": torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas),
            "discriminator": torch.optim.Adam(nets["discriminator"].parameters(), lr=c.lr_d, betas=betas),
        }

    # --- losses over the global sub-batch ----------------------------------------------------------------------
    def _sentence(self, features: torch.Tensor, embedding: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        gathered = ctx.gather(features, grad=True), ctx.gather(embedding, grad=True)
        return sentence_contrastive_loss(*gathered, tau=self.config.tau_sentence)

    def _word(self, regions: torch.Tensor, text: TextFeatures, ctx: StepContext) -> torch.Tensor:
        c = self.config
        words = ctx.gather(text.words)
        mask = ctx.gather(text.mask.to(torch.uint8)).bool()  # bool all_gather is not supported by every backend
        return word_region_loss(
            ctx.gather(regions, grad=True), words, mask, rho1=c.rho1, rho2=c.rho2, scale=c.word_region_scale
        )

    def _discriminate(
        self, disc: Discriminator, real: torch.Tensor, fake: torch.Tensor, sentence: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """D on concat(real, fake) with the sentences once, as the code: (real logits, fake logits, pooled features,
        sentence embedding, region maps), features and regions with the real rows first."""
        with ctx.autocast():
            out = disc(torch.cat([real, fake]), sentence)
        real_logits, fake_logits = out.logits.float().chunk(2)
        return real_logits, fake_logits, out.features.float(), out.sentence_embedding.float(), out.regions.float()

    # --- phases -------------------------------------------------------------------------------------------------
    def _d_phase(
        self, part: Batch, text: TextFeatures, fake: torch.Tensor, ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        c = self.config
        n = len(part)
        with ctx.update("discriminator") as phase:
            real_logits, fake_logits, features, embedding, regions = self._discriminate(
                ctx.nets["discriminator"], part.images[-1], fake.detach(), text.sentence, ctx
            )
            hinge = hinge_d_loss(real_logits, fake_logits)
            loss = hinge
            stats = {"loss_d_hinge": hinge.detach()}
            if c.sentence_weight > 0:
                sentence = self._sentence(features[:n], embedding, ctx)
                loss = loss + c.sentence_weight * sentence
                stats["loss_d_sentence"] = sentence.detach()
            if c.word_weight > 0:
                word = self._word(regions[:n], text, ctx)
                loss = loss + c.word_weight * word
                stats["loss_d_word"] = word.detach()
            phase.backward(loss, "loss_d")
        stats["loss_d"] = loss.detach()
        stats.update(logit_real=real_logits.detach().mean(), logit_fake=fake_logits.detach().mean())
        return stats

    def _g_phase(
        self, part: Batch, text: TextFeatures, fake: torch.Tensor, ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        c = self.config
        n = len(part)
        real = part.images[-1]
        with ctx.update("generator") as phase:
            _, fake_logits, features, embedding, regions = self._discriminate(
                ctx.nets["discriminator"], real, fake, text.sentence, ctx
            )
            hinge = hinge_g_loss(fake_logits)
            loss = hinge
            stats = {"loss_g_hinge": hinge.detach()}
            if c.sentence_weight > 0:
                sentence = self._sentence(features[n:], embedding, ctx)
                loss = loss + c.sentence_weight * sentence
                stats["loss_g_sentence"] = sentence.detach()
            if c.word_weight > 0:
                word = self._word(regions[n:], text, ctx)
                loss = loss + c.word_weight * word
                stats["loss_g_word"] = word.detach()
            if c.image_weight > 0:
                fake_features, real_features = ctx.gather(features[n:], grad=True), ctx.gather(features[:n])
                image = image_contrastive_loss(fake_features, real_features, tau=c.tau_image)
                loss = loss + c.image_weight * image
                stats["loss_g_image"] = image.detach()
            if self.uses_image_features:
                network = ctx.nets[IMAGE_FEATURES]
                with ctx.autocast():
                    fake_pretrained = network(fake).float()
                    with torch.no_grad():
                        real_pretrained = network(real).float()
                pretrained = image_contrastive_loss(
                    ctx.gather(fake_pretrained, grad=True), ctx.gather(real_pretrained), tau=c.tau_image_features
                )
                loss = loss + c.image_features_weight * pretrained
                stats["loss_g_image_features"] = pretrained.detach()
            phase.backward(loss, "loss_g")
        stats["loss_g"] = loss.detach()
        return stats

    # --- one step -----------------------------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator = ctx.nets["generator"]
        size = c.image_size
        assert batch.images[-1].shape[1:] == (3, size, size), f"real images {tuple(batch.images[-1].shape)}"
        parts = batch.split(c.d_steps)
        texts = [ctx.text(part) for part in parts]
        # Every part's fakes come from G before this step's update (the code generates them inside train_d and
        # train_g_d from the same parameters); only the last part's keep their graph, for G's phase.
        fakes = []
        for index, (part, text) in enumerate(zip(parts, texts, strict=True)):
            with torch.set_grad_enabled(index == len(parts) - 1), ctx.autocast():
                fakes.append(generator(ctx.noise(part, "z"), text.sentence, text.words, text.mask).image)

        for part, text, fake in zip(parts[:-1], texts[:-1], fakes[:-1], strict=True):
            self._d_phase(part, text, fake, ctx)
        stats: dict[str, torch.Tensor | float] = {}
        stats.update(self._g_phase(parts[-1], texts[-1], fakes[-1], ctx))
        stats.update(self._d_phase(parts[-1], texts[-1], fakes[-1], ctx))
        return stats
