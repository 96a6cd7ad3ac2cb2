"""One training step per model: t2itool's default training path against a plain PyTorch step with the same networks,
side by side in one process (alternating rounds, so load changes hit both), on the current device.

The plain step is what the official repositories do: fp32, contiguous tensors, `torch.optim.Adam` with its defaults,
no compile, the official order (DF-GAN 2022 code/src/train.py: D on real / mismatched / fake pairs + MA-GP in one
backward, D step, then G step; SSA-GAN wtliao/text2image main.py: D hinge step, MA-GP step, G step with the DAMSM loss
through the image encoder; AttnGAN taoxugit/AttnGAN code/trainer.py: one update per stage discriminator in turn, then
G on every stage's terms, the DAMSM loss and KL). It also reports the share of the plain step spent in each phase.
Every registered model runs on t2itool's path (`--models sdgan,drgan,...`); those without a plain step print their
ms/step alone. Neither path includes the generator EMA (an O(parameters) update after the step). t2itool's path is a
long run's default (channels-last where it wins, compiled generator: its compile time falls in the untimed warm-up);
the plain DF-GAN and SSA-GAN steps run the discriminators with nn.Conv2d layers (t2itool's PenaltyConv2d replaced).

    python benchmarks/bench_step.py [--models dfgan,dfgan-ssacn] [--image-size 64 --batch-size 16 --width 32]
    python benchmarks/bench_step.py --sweep --options eager   # ms/step over batch sizes and 64/128/256 px
    python benchmarks/bench_step.py --device cuda    # the default path there (channels-last + compile); --extra bf16
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.encoders import ImageEncoder, TextEncoder, load_backbone
from t2itool.encoders.losses import sentence_loss, word_loss
from t2itool.models.blocks import with_torch_convs
from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.staged_gan import (
    bce_fake,
    bce_real,
    combine_discriminator_terms,
    generator_adversarial_loss,
)
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.models.registry import get_model
from t2itool.training.config import parse_overrides
from t2itool.training.speed import StepSettings, default_settings, prepare_step
from t2itool.training.stats import StatsCollector

PLAIN_MODELS = ("dfgan", "dfgan-ssacn", "attngan")
DEFAULT_MODELS = ("dfgan", "dfgan-ssacn")
# Base widths set to --width for whichever of these a model's config has; XMC-GAN's frozen ImageNet network is off
# (its weight file is a download).
WIDTH_KEYS = ("ngf", "ndf", "gf_dim", "df_dim")
FIXED_VALUES = {"image_encoder": "none"}


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


def make_setup(args: argparse.Namespace, image_size: int, batch_size: int) -> Setup:
    device = torch.device(args.device)
    setup = Setup(device, image_size, batch_size, args.width, encoder_image_size=args.encoder_image_size)
    torch.manual_seed(0)
    image_encoder = ImageEncoder(image_size=args.encoder_image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random backbone costs the same time as a real one
        load_backbone(image_encoder, "random")
    setup.image_encoder = image_encoder.to(device).eval().requires_grad_(False)
    setup.text_encoder = TextEncoder(setup.vocab_size).to(device).eval().requires_grad_(False)
    return setup


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


# --- t2itool's default path ---------------------------------------------------------------------------------------
def default_step(name: str, setup: Setup, settings: StepSettings) -> Callable[[int], None]:
    """One step as the training loop runs it with its default settings (batch layout, step, stats)."""
    spec = get_model(name)
    recipe, nets = build(name, setup)
    optimizers = recipe.build_optimizers(nets, None)
    image_encoder = copy.deepcopy(setup.image_encoder) if recipe.needs_image_encoder else None
    nets, images_channels_last = prepare_step(nets, optimizers, recipe, setup.device, settings, (image_encoder,))
    ctx = StepContext(
        device=setup.device, seed=0, amp=settings.amp, nets=nets, optimizers=optimizers,
        text_encoder=setup.text_encoder, batch_size=setup.batch_size,
        image_encoder=image_encoder,
        noise_streams={stream.name: stream for stream in spec.noise_streams(recipe.config)},
    )  # fmt: skip
    collector = StatsCollector(setup.device)

    def step(index: int) -> None:
        batch = setup.batch
        if images_channels_last:
            batch.images = [im.contiguous(memory_format=torch.channels_last) for im in batch.images]
        ctx.step, ctx.optimizer_steps = index, 0
        collector.add(recipe.train_step(batch, ctx))
        if index % 10 == 9:
            collector.reduce()

    return step


# --- the plain step (official order) ------------------------------------------------------------------------------
def mark_phase(setup: Setup, label: str, since: float) -> float:
    """Record the time since `since` under `label` (device synchronised) and return now."""
    sync(setup.device)
    now = time.perf_counter()
    setup.marks.setdefault(label, []).append(now - since)
    return now


def magp(logits: torch.Tensor, inputs: tuple[torch.Tensor, torch.Tensor], weight: float, power: float) -> torch.Tensor:
    """DF-GAN code/lib/modules.py MA_GP: 2 * mean(||(dC/dx, dC/ds)||_2 ^ 6), create_graph for the D backward."""
    grads = torch.autograd.grad(
        logits, inputs, grad_outputs=torch.ones_like(logits), retain_graph=True, create_graph=True
    )
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
    return weight * flat.square().sum(dim=1).sqrt().pow(power).mean()


def plain_step(name: str, setup: Setup, gp: bool = True, damsm: bool = True) -> Callable[[int], None]:
    """The official step with the same networks; `gp` / `damsm` False drop that term (for the phase shares)."""
    if name == "attngan":
        return plain_attngan_step(setup, damsm)
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
        if damsm:
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


def plain_attngan_step(setup: Setup, damsm: bool = True) -> Callable[[int], None]:
    """AttnGAN's code/trainer.py step with t2itool's networks: each D_i zero_grad / backward / step in turn on
    (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3 (code/miscc/losses.py
    discriminator_loss), then G on every stage's BCE terms + lambda * DAMSM of the last image + KL, with a plain
    backward that also fills the discriminators' gradients, as the code's does. BCE on logits (the code's heads end
    in a sigmoid and use nn.BCELoss: the same value)."""
    recipe, nets = build("attngan", setup)
    c = recipe.config
    betas = (c.beta1, c.beta2)
    generator = nets["generator"]
    names = [name for name in nets if name != "generator"]
    opt_g = torch.optim.Adam(generator.parameters(), lr=c.lr_g, betas=betas)
    opt_d = {name: torch.optim.Adam(nets[name].parameters(), lr=c.lr_d, betas=betas) for name in names}
    device, b = setup.device, setup.batch_size

    def step(_: int) -> None:
        start = time.perf_counter()
        batch = setup.batch
        with torch.no_grad():
            words, sent = setup.text_encoder(batch.tokens, batch.lengths)
        mask = (batch.tokens == 0)[:, : words.shape[2]]
        z = torch.randn(b, c.z_dim, device=device)
        eps = torch.randn(b, c.cond_dim, device=device)
        out = generator(z, eps, sent, words, mask)
        now = mark_phase(setup, "G forward", start)
        for name, real, fake in zip(names, batch.images, out.images, strict=True):
            disc = nets[name]
            disc.zero_grad()
            real_features, fake_features = disc(real), disc(fake.detach())
            err_d = combine_discriminator_terms(
                bce_real(disc.cond_logits(real_features, sent)),
                bce_fake(disc.cond_logits(fake_features, sent)),
                bce_fake(disc.cond_logits(real_features[: b - 1], sent[1:b])),  # the code's wrong pairs, local
                bce_real(disc.uncond_logits(real_features)),
                bce_fake(disc.uncond_logits(fake_features)),
            )
            err_d.backward()
            opt_d[name].step()
        now = mark_phase(setup, "D updates", now)
        generator.zero_grad()
        err_g = torch.zeros((), device=device)
        for name, fake in zip(names, out.images, strict=True):
            features = nets[name](fake)
            err_g = err_g + generator_adversarial_loss(
                nets[name].cond_logits(features, sent), nets[name].uncond_logits(features)
            )
        if damsm:
            regions, code = setup.image_encoder(out.images[-1])
            w_loss = word_loss(regions, words, batch.lengths, batch.class_ids, c.gamma1, c.gamma2, c.gamma3)
            err_g = err_g + c.damsm_lambda * (w_loss + sentence_loss(code, sent, batch.class_ids, c.gamma3))
        (err_g + kl_loss(out.mu, out.logvar)).backward()
        opt_g.step()
        mark_phase(setup, "G update (with DAMSM)", now)

    return step


# --- timing -------------------------------------------------------------------------------------------------------
def time_rounds(steps: dict[str, Callable[[int], None]], args: argparse.Namespace, device: torch.device) -> dict:
    """Median ms/step of each variant over `rounds` alternating rounds of `steps_per_round` steps (after warm-up)."""
    counters = dict.fromkeys(steps, 0)
    for label, step in steps.items():
        for _ in range(args.warmup):
            step(counters[label])
            counters[label] += 1
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(counters[label])
                counters[label] += 1
            sync(device)
            times[label].append((time.perf_counter() - start) * 1000 / args.steps)
    return {label: statistics.median(values) for label, values in times.items()}


def compare(name: str, args: argparse.Namespace, image_size: int, batch_size: int, shares: bool) -> dict:
    setup = make_setup(args, image_size, batch_size)
    settings = default_settings(setup.device)  # a long run's: compile on (its compile time is in the warm-up)
    if args.options:
        settings = settings.with_options(args.options)
    steps = {"t2itool": default_step(name, setup, settings)}
    for extra in args.extra.split(",") if args.extra else []:
        steps[f"t2itool {extra}"] = default_step(name, setup, settings.with_options(extra))
    if name in PLAIN_MODELS:
        steps["plain"] = plain_step(name, setup)
        if shares and name.startswith("dfgan"):
            steps["plain without MA-GP"] = plain_step(name, setup, gp=False)
        if shares and name in ("dfgan-ssacn", "attngan"):
            steps["plain without DAMSM"] = plain_step(name, setup, damsm=False)
    setup.marks.clear()
    result = time_rounds(steps, args, setup.device)
    result["marks"] = {label: 1000 * statistics.median(values) for label, values in setup.marks.items()}
    result["settings"] = settings
    return result


def print_comparison(name: str, result: dict, args: argparse.Namespace) -> None:
    ours = result["t2itool"]
    line = f"{name}: t2itool {ours:.1f} ms/step ({result['settings'].describe()})"
    if "plain" in result:
        plain = result["plain"]
        line += f"; plain {plain:.1f} ms/step; ratio {ours / plain:.2f}x"
    print(line, flush=True)
    for label, value in result.items():
        if label.startswith("t2itool "):
            plain = result.get("plain", ours)
            print(f"  {label}: {value:.1f} ms/step, ratio {value / plain:.2f}x", flush=True)
    if "plain" not in result:
        return
    plain = result["plain"]
    parts = []
    marks = result["marks"]
    for label, value in marks.items():
        if "without" not in label:
            parts.append(f"{label} {100 * value / plain:.0f}%")
    if "plain without MA-GP" in result:
        parts.append(f"of which MA-GP {100 * (plain - result['plain without MA-GP']) / plain:.0f}%")
    if "plain without DAMSM" in result:
        parts.append(f"of which DAMSM {100 * (plain - result['plain without DAMSM']) / plain:.0f}%")
    print(f"  plain step shares: {', '.join(parts)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated registered models (plain baselines: {', '.join(PLAIN_MODELS)})",
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=32, help="base widths: ngf = ndf, or gf_dim = df_dim")
    parser.add_argument("--encoder-image-size", type=int, default=80, help="DAMSM image encoder input (official 299)")
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant (kernels warm up slowly)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--extra",
        default="",
        help="comma-separated extra t2itool variants, each '+'-joined options on top of the defaults: "
        "channels-last, contiguous, compile, eager, bf16, fp32, loop-adam (e.g. channels-last+compile,bf16)",
    )
    parser.add_argument(
        "--options",
        default="",
        help="'+'-joined options applied to t2itool's default path itself (e.g. eager: skip compiling, as for a "
        "sweep, where every size compiles anew)",
    )
    parser.add_argument("--no-shares", dest="shares", action="store_false", help="skip the phase-share ablations")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sweep", action="store_true", help="ms/step of the default path over sizes")
    parser.add_argument("--sweep-batches", default="8,16,32")
    parser.add_argument("--sweep-sizes", default="64,128,256")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA device on this machine (run without --device or with --device cpu)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = args.models.split(",")
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    if not args.sweep:
        print(f"{args.image_size} px, batch {args.batch_size}, width {args.width}", flush=True)
        for name in models:
            print_comparison(name, compare(name, args, args.image_size, args.batch_size, args.shares), args)
        return
    sizes = [int(s) for s in args.sweep_sizes.split(",")]
    batches = [int(b) for b in args.sweep_batches.split(",")]
    print("| model | px | batch | t2itool ms/step | plain ms/step | ratio | t2itool img/s |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        for size in sizes:
            for batch_size in batches:
                result = compare(name, args, size, batch_size, shares=False)
                ours, plain = result["t2itool"], result.get("plain")
                ratio = f"{ours / plain:.2f}" if plain else "-"
                plain_text = f"{plain:.0f}" if plain else "-"
                print(
                    f"| {name} | {size} | {batch_size} | {ours:.0f} | {plain_text} | {ratio} | "
                    f"{batch_size * 1000 / ours:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
