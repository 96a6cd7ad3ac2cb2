"""One training step per model: t2itool's default training path against a plain PyTorch step with the same networks,
side by side in one process (alternating rounds, so load changes hit both), on the current device.

The plain step is what the official repositories do: fp32, contiguous tensors, `torch.optim.Adam` with the model's
learning rates and betas, no compile, the official order (benchmarks/plain_steps.py, one function per model: DF-GAN
2022 code/src/train.py; SSA-GAN wtliao/text2image main.py; AttnGAN code/trainer.py; DR-GAN's trainer.py and
miscc/losses.py; StackGAN-Pytorch code/trainer.py; XMC-GAN's JAX train_utils.py / xmc_gan.py; SD-GAN, which released
no code, as the paper's Siamese scheme on AttnGAN's order). It also reports the share of the plain step spent in each
phase, and for the models with a DAMSM term in G (or MA-GP in D) the share of that term (the plain step without it).
Neither path includes the generator EMA (an O(parameters) update after the step). t2itool's path is a long run's
default (channels-last where it wins, compiled generator: its compile time falls in the untimed warm-up); the plain
DF-GAN and SSA-GAN steps run the discriminators with nn.Conv2d layers (t2itool's PenaltyConv2d replaced).

    python benchmarks/bench_step.py [--models dfgan,dfgan-ssacn] [--image-size 64 --batch-size 16 --width 32]
    python benchmarks/bench_step.py --models attngan,sdgan,drgan,stackgan,xmcgan   # the other registered models
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

import torch
from plain_steps import DAMSM_MODELS, PLAIN_MODELS, Setup, build, plain_step, sync  # benchmarks/plain_steps.py

from t2itool.encoders import ImageEncoder, TextEncoder, load_backbone
from t2itool.models.context import StepContext
from t2itool.models.registry import get_model
from t2itool.training.speed import StepSettings, default_settings, prepare_step
from t2itool.training.stats import StatsCollector

DEFAULT_MODELS = ("dfgan", "dfgan-ssacn")


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
        if images_channels_last:  # a copy: the plain step reads the shared batch's contiguous images
            images = [im.contiguous(memory_format=torch.channels_last) for im in batch.images]
            batch = dataclasses.replace(batch, images=images)
        ctx.step, ctx.optimizer_steps = index, 0
        collector.add(recipe.train_step(batch, ctx))
        if index % 10 == 9:
            collector.reduce()

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
        # The ablations mark their phases in a copy's marks (dropped), so the shares are the full plain step's.
        if shares and name.startswith("dfgan"):
            steps["plain without MA-GP"] = plain_step(name, dataclasses.replace(setup, marks={}), gp=False)
        if shares and name in DAMSM_MODELS:
            steps["plain without DAMSM"] = plain_step(name, dataclasses.replace(setup, marks={}), damsm_on=False)
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
