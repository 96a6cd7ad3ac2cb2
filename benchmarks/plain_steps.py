"""The plain training steps of `benchmarks/bench_step.py`: per model, one step with t2itool's networks written as the
official training code orders it (fp32, contiguous tensors, `torch.optim.Adam` with the model's learning rates and
betas, no compile, one process), using t2itool's loss helpers where they compute the same value. Each step records
the time of its phases with `mark_phase` (the shares bench_step prints).

Also here, so that both paths use one copy: `Setup` (sizes, frozen encoders, the synthetic batch), `build` (a model's
networks at the benchmark's sizes) and `mark_phase`; bench_step imports them.

Sources of the orders: DF-GAN 2022 code/src/train.py; SSA-GAN wtliao/text2image main.py; AttnGAN taoxugit/AttnGAN
code/trainer.py; DR-GAN Tan-H-C/DR-GAN-Distribution-Regularization-for-Text-to-Image-Generation trainer.py and
miscc/losses.py; StackGAN hanzhanggit/StackGAN-Pytorch code/trainer.py; XMC-GAN google-research/
xmcgan_image_generation xmcgan/train_utils.py and xmcgan/xmc_gan.py (JAX); SD-GAN released no code: the paper's
Siamese scheme on AttnGAN's trainer.py order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.encoders.losses import sentence_loss, word_loss
from t2itool.models.blocks import with_torch_convs
from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.staged_gan import bce_fake, bce_real, combine_discriminator_terms
from t2itool.models.drgan.losses import (
    dnm_discriminator_terms,
    generator_internal_term,
    rirm_loss,
    semantic_disentangling_loss,
)
from t2itool.models.recipe import Batch
from t2itool.models.registry import get_model
from t2itool.models.sdgan.losses import branch_features, contrastive_loss
from t2itool.models.stackgan import losses as stackgan_losses
from t2itool.models.stackgan.networks import noise_sizes
from t2itool.models.xmcgan.losses import (
    hinge_d_loss,
    hinge_g_loss,
    image_contrastive_loss,
    sentence_contrastive_loss,
    word_region_loss,
)
from t2itool.training.config import parse_overrides

# Base widths set to --width for whichever of these a model's config has; XMC-GAN's frozen ImageNet network is off
# (its weight file is a download).
WIDTH_KEYS = ("ngf", "ndf", "gf_dim", "df_dim")
FIXED_VALUES = {"image_encoder": "none"}
# Models whose plain G loss has a DAMSM term (bench_step's "plain without DAMSM" ablation).
DAMSM_MODELS = ("dfgan-ssacn", "attngan", "sdgan", "drgan")


@dataclass
class Setup:
    """Everything both paths share: sizes, the frozen encoders and one synthetic batch."""

    device: torch.device
    image_size: int
    batch_size: int
    width: int
    vocab_size: int = 100
    encoder_image_size: int = 299
    text_encoder: nn.Module | None = None
    image_encoder: nn.Module | None = None
    batch: Batch | None = None
    marks: dict[str, list[float]] = field(default_factory=dict)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(setup: Setup, image_sizes: tuple[int, ...]) -> Batch:
    """One synthetic batch with images at every size the model trains on, and a second caption per sample (SD-GAN's
    pairs; ignored by the others)."""
    g = torch.Generator().manual_seed(0)
    b, t = setup.batch_size, 18
    tokens = torch.randint(1, setup.vocab_size, (b, t), generator=g)
    return Batch(
        images=[torch.rand(b, 3, size, size, generator=g) * 2 - 1 for size in image_sizes], tokens=tokens,
        lengths=torch.full((b,), t), class_ids=torch.arange(b), indices=torch.arange(b),
        caption_indices=torch.arange(b), positions=torch.arange(b), global_size=b,
        tokens2=tokens.flip(0), lengths2=torch.full((b,), t), pair_label=torch.arange(b) % 2,
    ).to(setup.device)  # fmt: skip


def build(name: str, setup: Setup) -> tuple[object, dict[str, nn.Module]]:
    spec = get_model(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    values = {"image_size": setup.image_size, **dict.fromkeys(WIDTH_KEYS, setup.width), **FIXED_VALUES}
    values = {key: value for key, value in values.items() if key in fields}
    config = spec.make_config(None, parse_overrides(spec.config_cls, values, "--set"))
    recipe = spec.recipe_cls(config)
    torch.manual_seed(0)
    nets = {key: net.to(setup.device).train() for key, net in recipe.build_networks().items()}
    if setup.batch is None or [im.shape[-1] for im in setup.batch.images] != list(recipe.image_sizes()):
        setup.batch = make_batch(setup, tuple(recipe.image_sizes()))
    return recipe, nets


def mark_phase(setup: Setup, label: str, since: float) -> float:
    """Record the time since `since` under `label` (device synchronised) and return now."""
    sync(setup.device)
    now = time.perf_counter()
    setup.marks.setdefault(label, []).append(now - since)
    return now


# --- pieces shared by several official codes ----------------------------------------------------------------------
def encode_text(setup: Setup, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Frozen DAMSM text encoder: words (B, D, T), sentence (B, D) and the padding mask (B, T) the AttnGAN-family
    trainers form as (captions == 0)[:, :T]."""
    with torch.no_grad():
        words, sent = setup.text_encoder(tokens, lengths)
    return words, sent, (tokens == 0)[:, : words.shape[2]]


def damsm(setup: Setup, c: object, images: torch.Tensor, words, sent, lengths, class_ids) -> torch.Tensor:
    """Unweighted L_w + L_s of `images` under the frozen DAMSM image encoder (AttnGAN code/miscc/losses.py
    words_loss + sent_loss, as the AttnGAN family's generator_loss calls them; `class_ids` None: no masking)."""
    regions, code = setup.image_encoder(images)
    w_loss = word_loss(regions, words, lengths, class_ids, c.gamma1, c.gamma2, c.gamma3)
    return w_loss + sentence_loss(code, sent, class_ids, c.gamma3)


def staged_d_loss(disc, real_features, fake_features, real_sent, fake_sent, unconditional: bool) -> torch.Tensor:
    """AttnGAN code/miscc/losses.py discriminator_loss on encoded images: (uncond_real + cond_real) / 2 +
    (uncond_fake + cond_fake + cond_wrong) / 3, wrong = real features [:B-1] with sentences [1:B] (BCE on logits:
    the code's heads end in a sigmoid and use nn.BCELoss, the same value)."""
    b = real_features.shape[0]
    uncond = (bce_real(disc.uncond_logits(real_features)), bce_fake(disc.uncond_logits(fake_features)))
    return combine_discriminator_terms(
        bce_real(disc.cond_logits(real_features, real_sent)),
        bce_fake(disc.cond_logits(fake_features, fake_sent)),
        bce_fake(disc.cond_logits(real_features[: b - 1], real_sent[1:b])),
        *(uncond if unconditional else (None, None)),
    )


def staged_g_term(disc, features, sent, unconditional: bool) -> torch.Tensor:
    """AttnGAN code/miscc/losses.py generator_loss, one stage: BCE(cond(D(fake), s), 1) (+ BCE(uncond, 1))."""
    term = bce_real(disc.cond_logits(features, sent))
    return term + bce_real(disc.uncond_logits(features)) if unconditional else term


def update_stage_discriminators(nets, opt_d, reals, fakes, real_sent, fake_sent, unconditional: bool) -> None:
    """trainer.py's D loop: each stage D in turn zero_grad, `staged_d_loss` on its real and (detached) fake images,
    backward, step."""
    for name, real, fake in zip(opt_d, reals, fakes, strict=True):
        disc = nets[name]
        disc.zero_grad()
        staged_d_loss(disc, disc(real), disc(fake.detach()), real_sent, fake_sent, unconditional).backward()
        opt_d[name].step()


def stage_optimizers(nets: dict[str, nn.Module], c: object) -> tuple[torch.optim.Optimizer, dict]:
    """trainer.py define_optimizers: Adam for G and one per stage D, the config's learning rates and betas."""
    betas = (c.beta1, c.beta2)
    opt_g = torch.optim.Adam(nets["generator"].parameters(), lr=c.lr_g, betas=betas)
    names = [name for name in nets if name != "generator"]
    return opt_g, {name: torch.optim.Adam(nets[name].parameters(), lr=c.lr_d, betas=betas) for name in names}


# --- DF-GAN and SSA-GAN -------------------------------------------------------------------------------------------
def magp(logits: torch.Tensor, inputs: tuple[torch.Tensor, torch.Tensor], weight: float, power: float) -> torch.Tensor:
    """DF-GAN code/lib/modules.py MA_GP: 2 * mean(||(dC/dx, dC/ds)||_2 ^ 6), create_graph for the D backward."""
    grads = torch.autograd.grad(
        logits, inputs, grad_outputs=torch.ones_like(logits), retain_graph=True, create_graph=True
    )
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
    return weight * flat.square().sum(dim=1).sqrt().pow(power).mean()


def plain_dfgan_step(name: str, setup: Setup, gp: bool = True, damsm_on: bool = True) -> Callable[[int], None]:
    """DF-GAN (code/src/train.py: D on real / mismatched / fake pairs + MA-GP in one backward, D step, then G step)
    and SSA-GAN (wtliao/text2image main.py: D hinge step, MA-GP step, G step with the DAMSM loss through the image
    encoder), the discriminators with nn.Conv2d layers (t2itool's PenaltyConv2d replaced)."""
    recipe, nets = build(name, setup)
    c = recipe.config
    generator, disc, head = nets["generator"], with_torch_convs(nets["discriminator"]), with_torch_convs(nets["head"])
    opt_g = torch.optim.Adam(generator.parameters(), lr=c.lr_g, betas=(c.beta1, c.beta2))
    opt_d = torch.optim.Adam(list(disc.parameters()) + list(head.parameters()), lr=c.lr_d, betas=(c.beta1, c.beta2))
    device, b = setup.device, setup.batch_size

    def step_dfgan(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        with torch.no_grad():
            words, sent = setup.text_encoder(batch.tokens, batch.lengths)
        imgs = batch.images[-1].detach().requires_grad_()
        sent = sent.detach().requires_grad_()
        noise = torch.randn(b, c.noise_dim, device=device)
        fake = generator(noise, sent)
        now = mark_phase(setup, "G forward", start)
        real_features = disc(imgs)
        pred_real = head(real_features, sent)
        err_real = F.relu(1.0 - pred_real).mean()
        mis_features = torch.cat((real_features[1:], real_features[:1]), dim=0)
        err_mis = F.relu(1.0 + head(mis_features, sent)).mean()
        err_fake = F.relu(1.0 + head(disc(fake.detach()), sent)).mean()
        err_d = err_real + (err_fake + err_mis) / 2.0
        if gp:
            err_d = err_d + magp(pred_real, (imgs, sent), c.gp_weight, c.gp_power)
        opt_d.zero_grad()
        err_d.backward()
        opt_d.step()
        now = mark_phase(setup, "D update (with MA-GP)", now)
        err_g = -head(disc(fake), sent).mean()
        opt_g.zero_grad()
        err_g.backward()
        opt_g.step()
        mark_phase(setup, "G update", now)

    def step_ssacn(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        with torch.no_grad():
            words, sent = setup.text_encoder(batch.tokens, batch.lengths)
        imgs = batch.images[-1]
        noise = torch.randn(b, c.noise_dim, device=device)
        fake, _ = generator(noise, sent)
        now = mark_phase(setup, "G forward", start)
        real_features = disc(imgs)
        err_real = F.relu(1.0 - head(real_features, sent)).mean()
        err_mis = F.relu(1.0 + head(real_features[: b - 1], sent[1:b])).mean()
        err_fake = F.relu(1.0 + head(disc(fake.detach()), sent)).mean()
        err_d = err_real + (err_fake + err_mis) / 2.0
        opt_d.zero_grad()
        opt_g.zero_grad()
        err_d.backward()
        opt_d.step()
        now = mark_phase(setup, "D update", now)
        if gp:
            interpolated = imgs.data.requires_grad_()
            sent_inter = sent.data.requires_grad_()
            out = head(disc(interpolated), sent_inter)
            d_loss = magp(out, (interpolated, sent_inter), c.gp_weight, c.gp_power)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            now = mark_phase(setup, "MA-GP update", now)
        err_g = -head(disc(fake), sent).mean()
        if damsm_on:
            regions, code = setup.image_encoder(fake)
            w_loss = word_loss(regions, words, batch.lengths, batch.class_ids, c.gamma1, c.gamma2, c.gamma3)
            s_loss = sentence_loss(code, sent, batch.class_ids, c.gamma3)
            err_g = err_g + 0.05 * (w_loss + s_loss)
        opt_g.zero_grad()
        opt_d.zero_grad()
        err_g.backward()
        opt_g.step()
        mark_phase(setup, "G update (with DAMSM)", now)

    return step_dfgan if name == "dfgan" else step_ssacn


# --- the AttnGAN family -------------------------------------------------------------------------------------------
def plain_attngan_step(setup: Setup, damsm_on: bool = True) -> Callable[[int], None]:
    """AttnGAN's code/trainer.py step with t2itool's networks: each D_i zero_grad / backward / step in turn on
    (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3 (code/miscc/losses.py
    discriminator_loss), then G on every stage's BCE terms + lambda * DAMSM of the last image + KL, with a plain
    backward that also fills the discriminators' gradients, as the code's does. BCE on logits (the code's heads end
    in a sigmoid and use nn.BCELoss: the same value)."""
    recipe, nets = build("attngan", setup)
    c = recipe.config
    generator = nets["generator"]
    opt_g, opt_d = stage_optimizers(nets, c)
    device, b = setup.device, setup.batch_size

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        words, sent, mask = encode_text(setup, batch.tokens, batch.lengths)
        z = torch.randn(b, c.z_dim, device=device)
        eps = torch.randn(b, c.cond_dim, device=device)
        out = generator(z, eps, sent, words, mask)
        now = mark_phase(setup, "G forward", start)
        update_stage_discriminators(nets, opt_d, batch.images, out.images, sent, sent, c.unconditional_head)
        now = mark_phase(setup, "D updates", now)
        generator.zero_grad()
        err_g = torch.zeros((), device=device)
        for name, fake in zip(opt_d, out.images, strict=True):
            err_g = err_g + staged_g_term(nets[name], nets[name](fake), sent, c.unconditional_head)
        if damsm_on:
            class_ids = batch.class_ids if c.mask_same_class else None
            err_g = err_g + c.damsm_lambda * damsm(setup, c, out.images[-1], words, sent, batch.lengths, class_ids)
        (err_g + c.kl_weight * kl_loss(out.mu, out.logvar)).backward()
        opt_g.step()
        mark_phase(setup, "G update (with DAMSM)", now)

    return step


def plain_sdgan_step(setup: Setup, damsm_on: bool = True) -> Callable[[int], None]:
    """SD-GAN released no code (gjyin91/SDGAN is empty): the paper's Siamese scheme (Sec. 3.2) in AttnGAN's
    code/trainer.py order. G runs once over both branches' 2B captions (shared weights, same z and CA noise per pair,
    so the batch norms see what t2itool's see); each D_i zero_grad / backward / step in turn on AttnGAN's
    discriminator_loss with the real and wrong-pair terms on branch 1 (the batch's real image) and the fake terms on
    both branches; then G on every stage's BCE terms + lambda * DAMSM (mean of the branches; branch 2 unmasked: its
    image's class is not in the batch) + KL + w_c * L_c (contrastive loss on the chosen stage D's pooled, normalised
    features of the two branches), a plain backward that also fills the Ds' gradients, as AttnGAN's."""
    recipe, nets = build("sdgan", setup)
    c = recipe.config
    generator = nets["generator"]
    opt_g, opt_d = stage_optimizers(nets, c)
    device, b = setup.device, setup.batch_size

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        words1, sent1, mask1 = encode_text(setup, batch.tokens, batch.lengths)
        words2, sent2, mask2 = encode_text(setup, batch.tokens2, batch.lengths2)  # same length T in this batch
        sent, words, mask = torch.cat((sent1, sent2)), torch.cat((words1, words2)), torch.cat((mask1, mask2))
        z = torch.randn(b, c.z_dim, device=device)
        eps = torch.randn(b, c.cond_dim, device=device)
        out = generator(z.repeat(2, 1), eps.repeat(2, 1), sent, words, mask)
        now = mark_phase(setup, "G forward (both branches)", start)
        update_stage_discriminators(nets, opt_d, batch.images, out.images, sent1, sent, c.unconditional_head)
        now = mark_phase(setup, "D updates", now)
        generator.zero_grad()
        err_g, siamese = torch.zeros((), device=device), None
        for index, (name, fake) in enumerate(zip(opt_d, out.images, strict=True)):
            features = nets[name](fake)
            err_g = err_g + staged_g_term(nets[name], features, sent, c.unconditional_head)
            if index == c.contrastive_stage - 1:
                siamese = branch_features(features, c.contrastive_normalize)
        err_g = err_g + c.contrastive_weight * contrastive_loss(
            siamese[:b], siamese[b:], batch.pair_label, c.contrastive_alpha, c.contrastive_margin
        )
        if damsm_on:
            final = out.images[-1]
            class_ids = batch.class_ids if c.mask_same_class else None
            loss_damsm = damsm(setup, c, final[:b], words1, sent1, batch.lengths, class_ids)
            loss_damsm = loss_damsm + damsm(setup, c, final[b:], words2, sent2, batch.lengths2, None)
            err_g = err_g + c.damsm_lambda * loss_damsm / 2
        (err_g + c.kl_weight * kl_loss(out.mu, out.logvar)).backward()
        opt_g.step()
        mark_phase(setup, "G update (with DAMSM)", now)

    return step


def frobenius(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DR-GAN miscc/losses.py: pow(torch.sum(pow(a - b, 2.0)), 0.5) over the whole batch."""
    return (a - b).pow(2.0).sum().pow(0.5)


def plain_drgan_step(setup: Setup, damsm_on: bool = True) -> Callable[[int], None]:
    """DR-GAN's trainer.py train step with t2itool's networks. G's forward with the SDL and RIRM (model.py G_NET
    returns them as erreorx; here from t2itool's SDM parts and reconstruct_real); each D_i zero_grad / backward / step
    in turn on miscc/losses.py discriminator_loss: AttnGAN's BCE terms + 0.1 * (0.01 ||resize(fake) - rec(fake)||_F +
    0.01 ||rec(real) - real_0||_F) + the D's VAE KL terms; then G on miscc/losses.py generator_loss: the DAL (each
    D_i's reconstruction of fake_i against real_0), then, in a second D_i forward on fake_i as the code's, every
    stage's BCE terms; + lambda * DAMSM of the last image + KL + the SDL/RIRM term, a plain backward that also fills
    the Ds' gradients. Every D forward runs the VAE branch (model.py D_NET*.forward returns it) with fresh noise, as
    the code's. Constants and defect switches are the config's (docs/models/drgan.md)."""
    recipe, nets = build("drgan", setup)
    c = recipe.config
    generator = nets["generator"]
    opt_g, opt_d = stage_optimizers(nets, c)
    device, b = setup.device, setup.batch_size
    first = c.stage_sizes[0]

    def d_forward(disc: nn.Module, images: torch.Tensor, sent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """model.py D_NET*.forward: features, the VAE's reconstruction, mu, logvar."""
        encoded = disc(images)
        eps_text, eps_image = (torch.randn(b, c.cond_dim, device=device) for _ in range(2))
        return (encoded.features, *disc.reconstruct(encoded, sent, eps_text, eps_image))

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        real_first = batch.images[0]
        words, sent, mask = encode_text(setup, batch.tokens, batch.lengths)
        z = torch.randn(b, c.z_dim, device=device)
        eps = torch.randn(b, c.cond_dim, device=device)
        out = generator(z, eps, sent, words, mask)
        sdl, rirm, sides = [], [], []
        for stage, parts in enumerate(out.parts):
            real = batch.images[stage]
            reconstruction, real_vector = generator.reconstruct_real(stage, real)
            side = float(real.shape[-1])
            sdl.append(semantic_disentangling_loss(*parts, real_vector, side=side, variance=c.sdl_variance))
            rirm.append(rirm_loss((reconstruction - real).square().flatten(1).sum(dim=1), side))
            sides.append(side)
        internal = generator_internal_term(sdl, sides, rirm, c.sdl_base, c.rirm_weight)
        now = mark_phase(setup, "G forward (with SDL, RIRM)", start)
        for name, real, fake in zip(opt_d, batch.images, out.images, strict=True):
            disc = nets[name]
            disc.zero_grad()
            fake = fake.detach()
            real_features, rec_real, mu_r, logvar_r = d_forward(disc, real, sent)
            fake_features, rec_fake, mu_f, logvar_f = d_forward(disc, fake, sent)
            resized = F.interpolate(fake, size=(first, first), mode="bilinear", align_corners=False)
            err_d = staged_d_loss(disc, real_features, fake_features, sent, sent, c.unconditional_head)
            err_d = err_d + dnm_discriminator_terms(
                frobenius(resized, rec_fake), frobenius(rec_real, real_first), mu_r, logvar_r, mu_f, logvar_f,
                c.dnm_weight, c.dnm_rec_weight, c.dnm_kl_weight, c.dnm_kl,
            )  # fmt: skip
            err_d.backward()
            opt_d[name].step()
        now = mark_phase(setup, "D updates (with DNM)", now)
        generator.zero_grad()
        err_g = torch.zeros((), device=device)
        for name, fake, weight in zip(opt_d, out.images, c.dal_weights, strict=True):
            err_g = err_g + weight * frobenius(d_forward(nets[name], fake, sent)[1], real_first)
        for name, fake in zip(opt_d, out.images, strict=True):
            features = d_forward(nets[name], fake, sent)[0]
            err_g = err_g + staged_g_term(nets[name], features, sent, c.unconditional_head)
        if damsm_on:
            class_ids = batch.class_ids if c.mask_same_class else None
            err_g = err_g + c.damsm_lambda * damsm(setup, c, out.images[-1], words, sent, batch.lengths, class_ids)
        (err_g + internal + c.kl_weight * kl_loss(out.mu, out.logvar)).backward()
        opt_g.step()
        mark_phase(setup, "G update (with DAMSM)", now)

    return step


# --- StackGAN and XMC-GAN -----------------------------------------------------------------------------------------
def plain_stackgan_step(setup: Setup) -> Callable[[int], None]:
    """StackGAN-Pytorch code/trainer.py GANTrainer.train (the configured stage): G forward; netD.zero_grad and
    miscc/utils.py compute_discriminator_loss (real, wrong = real features [:B-1] with conditions [1:], fake; the
    condition is the CA mean, detached; stage II adds the unconditional terms), D step; netG.zero_grad and
    compute_generator_loss + COEFF.KL * KL_loss through the updated D, a plain backward that also fills D's
    gradients, G step (Adam on the parameters that require grad: stage II's frozen stage-I generator excluded).
    BCE on logits (the code's heads end in a sigmoid and use nn.BCELoss: the same value). t2itool's step differs only
    in the wrong pairs' head batch (B rows, the last masked, for the global batch: its batch norm sees B, not B - 1)."""
    recipe, nets = build("stackgan", setup)
    c = recipe.config
    generator, disc = nets["generator"], nets["discriminator"]
    betas = (c.beta1, c.beta2)
    opt_g = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=c.lr_g, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=c.lr_d, betas=betas)
    device, b = setup.device, setup.batch_size
    stage2 = c.stage == 2

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        _, sent, _ = encode_text(setup, batch.tokens, batch.lengths)
        noise = {name: torch.randn(b, dim, device=device) for name, dim in noise_sizes(c).items()}
        out = generator(sent, **noise)
        now = mark_phase(setup, "G forward", start)
        disc.zero_grad()
        cond = out.mu.detach()
        real_features, fake_features = disc(batch.images[-1]), disc(out.image.detach())
        uncond = (None, None)
        if stage2:
            uncond = (disc.uncond_logits(real_features), disc.uncond_logits(fake_features))
        err_d = stackgan_losses.discriminator_loss(
            disc.cond_logits(real_features, cond),
            disc.cond_logits(real_features[: b - 1], cond[1:]),
            disc.cond_logits(fake_features, cond),
            *uncond,
        )
        err_d.backward()
        opt_d.step()
        now = mark_phase(setup, "D update", now)
        generator.zero_grad()
        features = disc(out.image)
        g_uncond = disc.uncond_logits(features) if stage2 else None
        err_g = stackgan_losses.generator_loss(
            disc.cond_logits(features, cond), out.mu, out.logvar, c.coeff_kl, g_uncond
        )
        err_g.backward()
        opt_g.step()
        mark_phase(setup, "G update", now)

    return step


def plain_xmcgan_step(setup: Setup) -> Callable[[int], None]:
    """XMC-GAN has no official PyTorch code: this follows the JAX code (xmcgan/train_utils.py train_step,
    xmcgan/xmc_gan.py train_d / train_g_d). The batch splits into d_steps parts; on every part but the last,
    train_d: G forward (no gradient to G), D on concat(real, fake) with the sentences, D loss = hinge + sentence and
    word-region contrastive terms of the real pairs, D step. On the last part, train_g_d: one G forward and one D
    forward give both losses (G: hinge + the fake pairs' sentence and word-region terms + image-image on D features
    [+ the frozen network's, off here]); the code's two jax.vjp of that forward are two backward passes restricted to
    D's and to G's parameters, then both steps. Text: the frozen DAMSM encoder (the code reads precomputed BERT).
    t2itool's step runs D twice on the last sub-batch (G phase, then D phase), so its spectral norms take one more
    power iteration there; otherwise the same gradients."""
    recipe, nets = build("xmcgan", setup)
    c = recipe.config
    generator, disc = nets["generator"], nets["discriminator"]
    image_features = nets.get("image_features") if recipe.uses_image_features else None
    g_params, d_params = list(generator.parameters()), list(disc.parameters())
    opt_g = torch.optim.Adam(g_params, lr=c.lr_g, betas=(c.beta1, c.beta2))
    opt_d = torch.optim.Adam(d_params, lr=c.lr_d, betas=(c.beta1, c.beta2))
    device, k = setup.device, c.d_steps

    def text_terms(features, embedding, regions, words, mask) -> torch.Tensor:
        """xmc_gan.py calculate_contrastive_loss: sentence-image + word-region terms of one side's pairs."""
        sentence = sentence_contrastive_loss(features, embedding, c.tau_sentence)
        word = word_region_loss(regions, words, mask, c.rho1, c.rho2, c.word_region_scale)
        return c.sentence_weight * sentence + c.word_weight * word

    def d_losses(real, fake, sent, words, mask):
        """D on concat(real, fake) with the sentences once; D's loss: hinge + the real pairs' terms."""
        n = real.shape[0]
        out = disc(torch.cat((real, fake)), sent)
        real_logits, fake_logits = out.logits.chunk(2)
        terms = text_terms(out.features[:n], out.sentence_embedding, out.regions[:n], words, mask)
        return hinge_d_loss(real_logits, fake_logits) + terms, out, fake_logits

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        words, sent, mask = encode_text(setup, batch.tokens, batch.lengths)
        parts = list(zip(*(t.chunk(k) for t in (batch.images[-1], sent, words, mask)), strict=True))
        for real, sent_i, words_i, mask_i in parts[:-1]:  # train_d
            with torch.no_grad():
                fake = generator(torch.randn(real.shape[0], c.z_dim, device=device), sent_i, words_i, mask_i).image
            err_d, _, _ = d_losses(real, fake, sent_i, words_i, mask_i)
            opt_d.zero_grad()
            err_d.backward()
            opt_d.step()
        now = mark_phase(setup, "D updates (G forward inside)", start)
        real, sent_k, words_k, mask_k = parts[-1]  # train_g_d
        n = real.shape[0]
        fake = generator(torch.randn(n, c.z_dim, device=device), sent_k, words_k, mask_k).image
        now = mark_phase(setup, "G forward", now)
        err_d, out, fake_logits = d_losses(real, fake, sent_k, words_k, mask_k)
        fake_features = out.features[n:]
        err_g = hinge_g_loss(fake_logits)
        err_g = err_g + text_terms(fake_features, out.sentence_embedding, out.regions[n:], words_k, mask_k)
        err_g = err_g + c.image_weight * image_contrastive_loss(fake_features, out.features[:n], c.tau_image)
        if image_features is not None:
            with torch.no_grad():
                real_pretrained = image_features(real)
            err_g = err_g + c.image_features_weight * image_contrastive_loss(
                image_features(fake), real_pretrained, c.tau_image_features
            )
        opt_d.zero_grad()
        opt_g.zero_grad()
        err_d.backward(inputs=d_params, retain_graph=True)
        err_g.backward(inputs=g_params)
        opt_d.step()
        opt_g.step()
        mark_phase(setup, "D and G update (one D forward)", now)

    return step


def plain_step(name: str, setup: Setup, gp: bool = True, damsm_on: bool = True) -> Callable[[int], None]:
    """The official step of `name` with the same networks; `gp` / `damsm_on` False drop that term (the shares)."""
    if name in ("dfgan", "dfgan-ssacn"):
        return plain_dfgan_step(name, setup, gp, damsm_on)
    if name in ("attngan", "sdgan", "drgan"):
        return {"attngan": plain_attngan_step, "sdgan": plain_sdgan_step, "drgan": plain_drgan_step}[name](
            setup, damsm_on
        )
    return {"stackgan": plain_stackgan_step, "xmcgan": plain_xmcgan_step}[name](setup)


PLAIN_MODELS = ("dfgan", "dfgan-ssacn", "attngan", "sdgan", "drgan", "stackgan", "xmcgan")
