"""SSA-GAN's training step (wtliao/text2image main.py): D hinge update, MA-GP update, G update with the DAMSM loss.

With `finetune_text_encoder` the text encoder and the DAMSM image encoder's projections also learn, from the DAMSM
loss on real images (main_finetune.py); the GAN only ever sees detached text embeddings. The DAMSM loss couples the
samples of a batch (a softmax over it), so it is computed over the global batch gathered from every process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from t2itool.encoders.features import TextFeatures
from t2itool.encoders.losses import sentence_loss, word_loss
from t2itool.models.blocks import matching_aware_gp
from t2itool.models.context import StepContext
from t2itool.models.dfgan_ssacn.config import SSAGANConfig
from t2itool.models.dfgan_ssacn.networks import NetD, NetG, build_head
from t2itool.models.recipe import Batch, GANRecipe, TextNeeds

# The DAMSM image encoder's trainable projections (taoxugit/AttnGAN code/model.py CNN_ENCODER state-dict names).
PROJECTION_SHAPES = {
    "emb_features.weight": lambda d: (d, 768, 1, 1),
    "emb_cnn_code.weight": lambda d: (d, 2048),
    "emb_cnn_code.bias": lambda d: (d,),
}


class ImageProjections(nn.Module):
    """The fine-tuned copy of the image encoder's projection weights, owned by the recipe so that the loop's
    optimizer and resume state include them. Filled from the DAMSM checkpoint's image encoder at the first step
    (`loaded` flag, saved with the state) and applied with `torch.func.functional_call`, the frozen trunk untouched.
    """

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.weights = nn.ParameterDict(
            {
                name.replace(".", "__"): nn.Parameter(torch.zeros(shape(embedding_dim)))
                for name, shape in PROJECTION_SHAPES.items()
            }
        )
        self.register_buffer("loaded", torch.zeros((), dtype=torch.bool))

    def parameters_by_name(self) -> dict[str, torch.Tensor]:
        return {key.replace("__", "."): value for key, value in self.weights.items()}

    @torch.no_grad()
    def load_from(self, image_encoder: nn.Module) -> None:
        source = dict(image_encoder.named_parameters())
        for name, param in self.parameters_by_name().items():
            if name not in source or source[name].shape != param.shape:
                found = tuple(source[name].shape) if name in source else "missing"
                raise RuntimeError(f"image encoder parameter {name}: expected {tuple(param.shape)}, found {found}")
            param.copy_(source[name])
        self.loaded.fill_(True)


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Every batch norm of `module` normalises with the batch's own statistics inside the block, as a module left in
    train mode does, without touching the running averages (training never reads them; evaluation and resumed runs
    keep the DAMSM checkpoint's). Modes are restored afterwards."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for norm in norms:
        norm.train(True)
        norm.track_running_stats = False  # batch statistics, running buffers neither read nor updated
    try:
        yield
    finally:
        for norm, (training, track) in zip(norms, saved, strict=True):
            norm.train(training)
            norm.track_running_stats = track


class SSAGANRecipe(GANRecipe):
    """Nets: generator, discriminator, head (+ image_projections when fine-tuning). Optimizers: generator,
    discriminator (D and head share one Adam, as the official code), text_encoder (fine-tuning only)."""

    config: SSAGANConfig
    needs_image_encoder = True  # DAMSM loss on the generated images
    text_kinds = ("damsm",)  # the DAMSM loss needs the DAMSM encoders' words and sentences

    def __init__(self, config: SSAGANConfig) -> None:
        super().__init__(config)
        self.trains_text_encoder = bool(config.finetune_text_encoder)

    @property
    def damsm_weight(self) -> float:
        return self.config.effective_damsm_weight

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.cond_dim, word_dim=self.config.cond_dim)

    def build_networks(self) -> dict[str, nn.Module]:
        c = self.config
        nets: dict[str, nn.Module] = {
            "generator": NetG(c.ngf, c.noise_dim, c.cond_dim, c.image_size, c.mask_hidden),
            "discriminator": NetD(c.ndf, c.image_size),
            "head": build_head(c.ndf, c.cond_dim, c.image_size),
        }
        if self.trains_text_encoder:
            nets["image_projections"] = ImageProjections(c.cond_dim)
        return nets

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        d_params = list(nets["discriminator"].parameters()) + list(nets["head"].parameters())
        optimizers = {
            "generator": torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas),
            "discriminator": torch.optim.Adam(d_params, lr=c.lr_d, betas=betas),
        }
        if self.trains_text_encoder:
            if text_encoder is None:
                raise ValueError("finetune_text_encoder needs the text encoder passed to build_optimizers")
            params = list(text_encoder.parameters()) + list(nets["image_projections"].parameters())
            optimizers["text_encoder"] = torch.optim.Adam(params, lr=c.lr_text_encoder, betas=(0.0, 0.9))
        return optimizers

    # --- DAMSM ------------------------------------------------------------------------------------------------
    def _image_features(self, ctx: StepContext, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DAMSM regions (B, D, R, R) and code (B, D); with fine-tuning through the recipe's projection weights."""
        assert ctx.image_encoder is not None, "dfgan-ssacn needs the DAMSM image encoder (needs_image_encoder)"
        if not self.trains_text_encoder:
            return ctx.image_encoder(images)
        projections = ctx.nets["image_projections"]
        if not bool(projections.loaded):
            projections.load_from(ctx.image_encoder)
        if not self.config.finetune_batch_statistics:
            return functional_call(ctx.image_encoder, projections.parameters_by_name(), (images,), strict=False)
        # main_finetune.py leaves the image encoder in train mode: Inception's batch norm uses batch statistics.
        with batch_statistics(ctx.image_encoder):
            return functional_call(ctx.image_encoder, projections.parameters_by_name(), (images,), strict=False)

    def _damsm(
        self, regions_code: tuple[torch.Tensor, torch.Tensor], text: TextFeatures, batch: Batch, ctx: StepContext
    ) -> torch.Tensor:
        """DAMSM loss L_w + L_s (or one of them, `damsm_terms`) over the global batch, with the config's gammas
        (SSA-GAN keeps 5, 5, 10 whatever the DAMSM checkpoint's pretraining used, so `ctx.damsm` is deliberately not
        consulted) and same-class masking.
        Image features keep their gradient through the gather; text features keep theirs only when fine-tuning."""
        regions, code = regions_code
        c = self.config
        live = text.sentence.requires_grad
        class_ids = ctx.gather(batch.class_ids) if c.mask_same_class else None
        loss = regions.new_zeros((), dtype=torch.float32)
        # damsm_terms "sentence" / "word": the ablations of wtliao/text2image miscc/losses_s.py / losses_w.py.
        if c.damsm_terms in ("both", "word"):
            loss = loss + word_loss(
                ctx.gather(regions.float(), grad=True), ctx.gather(text.words, grad=live), ctx.gather(text.lengths),
                class_ids, c.gamma1, c.gamma2, c.gamma3,
            )  # fmt: skip
        if c.damsm_terms in ("both", "sentence"):
            loss = loss + sentence_loss(
                ctx.gather(code.float(), grad=True), ctx.gather(text.sentence, grad=live), class_ids, c.gamma3
            )
        return loss

    # --- one step ---------------------------------------------------------------------------------------------
    def _mismatch_loss(
        self, head: nn.Module, real_features: torch.Tensor, batch: Batch, ctx: StepContext, sentence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """½-weighted term of the official code: image i with the sentence of sample i + 1, i < B - 1 (B - 1 pairs),
        over the global batch; scaled so that averaging gradients over processes gives the mean over B - 1 pairs."""
        gathered = ctx.gather(sentence)
        positions = batch.positions
        valid = positions + 1 < batch.global_size
        if not bool(valid.any()):
            return real_features.new_zeros(()), real_features.new_zeros(0)
        partner = gathered[positions[valid] + 1]
        with ctx.autocast():
            logits = head(real_features[valid], partner).float()
        pairs = max(batch.global_size - 1, 1)
        return F.relu(1.0 + logits).sum() * ctx.world_size / pairs, logits

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.config
        generator, disc, head = ctx.nets["generator"], ctx.nets["discriminator"], ctx.nets["head"]
        real = batch.images[-1]
        assert real.shape[1:] == (3, c.image_size, c.image_size), f"real images {tuple(real.shape)}"
        stats: dict[str, torch.Tensor | float] = {}

        # Text: the fine-tuned encoder learns from DAMSM on real images; the GAN gets detached embeddings either way.
        if self.trains_text_encoder:
            with ctx.update("text_encoder") as phase:
                live = ctx.encode_text(batch.tokens, batch.lengths, grad=True)
                with ctx.autocast():
                    real_damsm = self._damsm(self._image_features(ctx, real), live, batch, ctx)
                phase.backward(real_damsm, "loss_damsm_real")
            stats["loss_damsm_real"] = real_damsm.detach()
            text = live.detach()
        else:
            text = ctx.text(batch)
        sentence = text.sentence
        noise = ctx.noise(batch, "z")
        with ctx.autocast():
            fake, masks = generator(noise, sentence)  # shared by the D and G updates, as the official step

        # Discriminator: hinge_real + 1/2 (hinge_fake + hinge_mismatch); MA-GP here too unless it gets its own step.
        joint_gp = not c.magp_separate_step
        with ctx.update("discriminator") as phase:
            images = real.detach().requires_grad_(joint_gp)
            cond = sentence.detach().requires_grad_(joint_gp)
            with ctx.autocast():
                real_features = disc(images)
                real_logits = head(real_features, cond).float()
                fake_logits = head(disc(fake.detach()), sentence).float()
            loss_mismatch, mismatch_logits = self._mismatch_loss(head, real_features, batch, ctx, sentence)
            loss_d = F.relu(1.0 - real_logits).mean() + 0.5 * (F.relu(1.0 + fake_logits).mean() + loss_mismatch)
            if joint_gp:
                gp = matching_aware_gp(real_logits, (images, cond), c.gp_weight, c.gp_power, ctx.grad_scale)
                loss_d = loss_d + gp
            phase.backward(loss_d, "loss_d")

        # MA-GP as a separate update (official code): 2 E ||(dC/dx, dC/ds)||^6 on real, matching pairs.
        if not joint_gp:
            with ctx.update("discriminator") as phase:
                images = real.detach().requires_grad_(True)
                cond = sentence.detach().requires_grad_(True)
                with ctx.autocast():
                    gp_logits = head(disc(images), cond).float()
                gp = matching_aware_gp(gp_logits, (images, cond), c.gp_weight, c.gp_power, ctx.grad_scale)
                phase.backward(gp, "ma_gp")

        # Generator: -E[logit] + w * DAMSM(fake); D, head and the encoders take no gradient in this phase.
        with ctx.update("generator") as phase:
            with ctx.autocast():
                g_logits = head(disc(fake), sentence).float()
                loss_adv = -g_logits.mean()
                loss_g = loss_adv
                if self.damsm_weight > 0:
                    loss_damsm = self._damsm(self._image_features(ctx, fake), text, batch, ctx)
                    loss_g = loss_g + self.damsm_weight * loss_damsm
                    stats["loss_damsm"] = loss_damsm.detach()
            phase.backward(loss_g, "loss_g")

        stats.update(
            loss_d=loss_d.detach(),
            loss_g=loss_g.detach(),
            loss_g_adv=loss_adv.detach(),
            ma_gp=gp.detach(),
            logit_real=real_logits.detach().mean(),
            logit_fake=fake_logits.detach().mean(),
            logit_mismatch=mismatch_logits.detach().mean() if mismatch_logits.numel() else 0.0,
            mask_mean=masks[-1].detach().mean(),
        )
        return stats
