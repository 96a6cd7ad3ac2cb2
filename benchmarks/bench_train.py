"""Training speed per registered model: ms/step and images/s on the current device, side by side for a fixed
in-memory batch and through the DataLoader (with --data/--damsm), in fp32, bf16, fp16 and channels-last where supported.

    python benchmarks/bench_train.py --image-size 64 --batch-size 8 [--data F.h5 --damsm D.pt] [--models dfgan]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
from rich.console import Console
from rich.table import Table

from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.models.registry import get_model, list_models
from t2itool.training.batches import ShardedBatches, open_data
from t2itool.training.config import parse_overrides


def variants(device: torch.device) -> list[tuple[str, str, bool]]:
    """(label, amp, channels_last) the device supports."""
    result = [("fp32", "none", False), ("channels-last", "none", True)]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        result.append(("bf16", "bf16", False))
    if device.type == "cuda":
        result.append(("fp16", "fp16", False))
    return result


def encoders_for(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """Text and image encoders: from --damsm, else fresh ones (random backbone) for a synthetic vocabulary."""
    import warnings

    from t2itool.encoders import ImageEncoder, TextEncoder, load_backbone, load_damsm

    if args.damsm:
        from t2itool.data.store import Store

        store = Store(args.data)
        loaded = load_damsm(args.damsm, store=store, device=device)
        return loaded.text_encoder, loaded.image_encoder, len(store.vocab)
    image_encoder = ImageEncoder(image_size=args.encoder_image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random backbone costs the same time as a real one
        load_backbone(image_encoder, "random")
    text_encoder = TextEncoder(args.vocab_size).to(device).eval().requires_grad_(False)
    return text_encoder, image_encoder.to(device).eval().requires_grad_(False), args.vocab_size


def make_context(spec, args, device, amp, channels_last, text_encoder, image_encoder) -> tuple[object, StepContext]:
    overrides = parse_overrides(spec.config_cls, {"image_size": args.image_size, **dict(args.sets)}, "--set")
    config = spec.make_config(None, overrides)
    recipe = spec.recipe_cls(config)
    torch.manual_seed(0)
    nets = {name: net.to(device).train() for name, net in recipe.build_networks().items()}
    if channels_last:
        nets = {name: net.to(memory_format=torch.channels_last) for name, net in nets.items()}
    optimizers = recipe.build_optimizers(nets, text_encoder)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    ctx = StepContext(
        device=device, seed=0, amp=amp, nets=nets, optimizers=optimizers, text_encoder=text_encoder, scaler=scaler,
        image_encoder=image_encoder if recipe.needs_image_encoder else None,
        noise_streams={stream.name: stream for stream in spec.noise_streams(config)},
    )  # fmt: skip
    return recipe, ctx


def synthetic_batches(recipe, args, device, vocab_size: int, channels_last: bool) -> Iterator[Batch]:
    g = torch.Generator().manual_seed(0)
    b, t = args.batch_size, recipe.max_words()
    images = [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in recipe.image_sizes()]
    if channels_last:
        images = [im.contiguous(memory_format=torch.channels_last) for im in images]
    tokens = torch.randint(1, vocab_size, (b, t), generator=g)
    batch = Batch(
        images=images, tokens=tokens, lengths=torch.full((b,), t), class_ids=torch.zeros(b, dtype=torch.int64),
        indices=torch.arange(b), caption_indices=torch.arange(b), positions=torch.arange(b), global_size=b,
        tokens2=tokens.flip(0), lengths2=torch.full((b,), t), pair_label=torch.ones(b, dtype=torch.int64),
    ).to(device)  # fmt: skip
    while True:
        yield batch


def time_steps(recipe, ctx: StepContext, batches: Iterator[Batch], args, device: torch.device) -> float:
    """Milliseconds per step after warm-up."""
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        ctx.step, ctx.optimizer_steps = step, 0
        recipe.train_step(next(batches), ctx)
        if ctx.scaler is not None:
            ctx.scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000 / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated (default: all registered)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (CPU kernels warm up slowly)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=None, help="prepared file: adds the DataLoader column")
    parser.add_argument("--damsm", default=None, help="DAMSM checkpoint matching --data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=100, help="synthetic vocabulary without --damsm")
    parser.add_argument("--encoder-image-size", type=int, default=299, help="DAMSM image encoder input without --damsm")
    parser.add_argument("--variants", default=None, help="comma-separated subset of fp32,channels-last,bf16,fp16")
    parser.add_argument("--set", dest="sets", action="append", default=[], type=lambda s: tuple(s.split("=", 1)))
    args = parser.parse_args()
    if bool(args.data) != bool(args.damsm):
        parser.error("--data and --damsm go together")
    device = torch.device(args.device)
    text_encoder, image_encoder, vocab_size = encoders_for(args, device)
    models = args.models.split(",") if args.models else list_models()

    table = Table(title=f"training speed, {args.image_size} px, batch {args.batch_size}, {device}")
    for column in ("model", "variant", "ms/step (memory)", "img/s (memory)", "ms/step (loader)", "img/s (loader)"):
        table.add_column(column, justify="right")
    for name in models:
        spec = get_model(name)
        chosen = [v for v in variants(device) if args.variants is None or v[0] in args.variants.split(",")]
        for label, amp, channels_last in chosen:
            recipe, ctx = make_context(spec, args, device, amp, channels_last, text_encoder, image_encoder)
            vocab = vocab_size
            ms = time_steps(recipe, ctx, synthetic_batches(recipe, args, device, vocab, channels_last), args, device)
            row = [name, label, f"{ms:.1f}", f"{args.batch_size * 1000 / ms:.1f}", "-", "-"]
            if args.data:
                recipe, ctx = make_context(spec, args, device, amp, channels_last, text_encoder, image_encoder)
                _, dataset = open_data(args.data, recipe, seed=0, text_kind="damsm")
                order = ShardedBatches(len(dataset), args.batch_size, 1, 0, seed=0)
                loader = order.batches(
                    dataset, start_step=0, total_steps=args.warmup + args.steps, workers=args.workers, device=device
                )
                ms = time_steps(recipe, ctx, loader, args, device)
                row[4:] = [f"{ms:.1f}", f"{args.batch_size * 1000 / ms:.1f}"]
            table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
