"""The one training loop every model runs through, and `train()`, its Python entry point.

`train(...)` resolves the config and `run(config)` starts the processes (none, `--nproc`, `--gpus`, or joins torchrun);
each process runs `training_loop(**options)`: data -> recipe.train_step -> EMA -> stats / grids / checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from t2itool.errors import T2IError
from t2itool.training import checkpoint, dist
from t2itool.training.batches import GridCaptions, ShardedBatches, open_data
from t2itool.training.config import TrainConfig, resolve_config, run_name, validate
from t2itool.training.ema import EMA
from t2itool.training.recipe import NonFiniteLoss, StepContext, sample_seed
from t2itool.training.stats import StatsCollector, StatsWriter, render_grid, save_grid, truncated_noise


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: str
    step: int
    snapshot: str | None
    state: str | None
    interrupted: bool
    seconds_per_step: float


def train(model: str, **options: Any) -> TrainResult:
    """Python entry point: `train("dfgan", data=..., damsm=..., out=..., steps=20, sets={"ngf": 8})`.

    Options are TrainConfig fields plus `config_file` (TOML), `sets` (model config overrides) and `image_size`.
    """
    config_file = options.pop("config_file", None)
    sets = options.pop("sets", None)
    config = resolve_config(model, config_file=config_file, sets=sets, flags=options)
    return run(config)


def resume_model_config(resume: str, model: str) -> dict[str, Any]:
    """The model config stored in a resume state (checked to belong to `model`)."""
    path, state = checkpoint.load_state(resume)
    if state["model"] != model:
        raise T2IError(f"--resume {path}: the state is for model {state['model']!r}, not {model!r}")
    return dict(state["model_config"])


def run(config: TrainConfig) -> TrainResult:
    """Start the run's processes and return rank 0's result. Creates the numbered run folder (config.json first)."""
    validate(config)
    if config.amp == "fp16" and (config.device == "cpu" or not torch.cuda.is_available()):
        raise T2IError("--amp fp16 needs a CUDA device (fp16 autocast/GradScaler); on CPU use --amp bf16 or none")
    if config.steps is None and config.epochs is None:
        raise T2IError("give --steps or --epochs (or a --preset that sets epochs)")
    options = dataclasses.asdict(config)
    if dist.launched_by_torchrun():
        return TrainResult(**_worker(options, None))
    if config.gpus:
        dist.select_gpus(config.gpus)
        world_size = len(config.gpus)
    else:
        world_size = config.nproc
    run_dir = checkpoint.create_run_dir(config.out, run_name(config, world_size), options)
    if world_size == 1:
        return TrainResult(**_worker(options, str(run_dir)))
    return TrainResult(**dist.launch(_worker, (options, str(run_dir)), world_size))


def _worker(options: dict[str, Any], run_dir: str | None) -> dict[str, Any]:
    """One training process: join the group, pick the device, create the run folder under torchrun, train."""
    device = pick_device(options["device"], options["gpus"])
    dist.init_from_env("nccl" if device.type == "cuda" else "gloo")
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if run_dir is None:  # torchrun: rank 0 makes the folder, the others learn its name
            made = None
            if dist.is_main():
                config = TrainConfig(**options)
                made = str(checkpoint.create_run_dir(options["out"], run_name(config, dist.get_world_size()), options))
            run_dir = dist.broadcast_object(made)
        return training_loop(run_dir=run_dir, device=device, **{k: v for k, v in options.items() if k != "device"})
    finally:
        dist.cleanup()


def pick_device(requested: str, gpus: list[int] | None) -> torch.device:
    """This process's device: `--gpus` and multi-process CUDA use cuda:LOCAL_RANK; auto prefers CUDA."""
    if gpus and len(gpus) == 1 and torch.cuda.is_available():
        return torch.device("cuda", gpus[0])  # one GPU runs in-process, CUDA_VISIBLE_DEVICES untouched
    if requested == "auto":
        requested = "cuda" if gpus or torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise T2IError(f"--device {requested}: CUDA is not available on this machine")
        if requested == "cuda" or gpus or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return torch.device("cuda", dist.get_local_rank())
        return torch.device(requested)
    raise T2IError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N")


def training_loop(
    *,
    run_dir: str,  # numbered run folder (exists, config.json written)
    device: torch.device,  # this process's device
    model: str,  # registered model name
    data: str,  # prepared HDF5 file
    damsm: str,  # DAMSM checkpoint (text encoder, image encoder)
    model_config: dict[str, Any],  # resolved model config values
    steps: int | None = None,  # total steps to reach (None: from epochs)
    epochs: int | None = None,  # total epochs to reach when steps is None
    batch_size: int = 8,  # per process
    seed: int = 0,  # init, data order and noise
    amp: str = "none",  # none | bf16 | fp16
    channels_last: bool = False,  # channels-last networks and images
    resume: str | None = None,  # state file or run folder to continue from
    workers: int = 2,  # DataLoader workers per process
    grid_every: int = 1000,  # steps between sample grids
    grid_size: int = 16,  # captions (rows) in a grid
    snapshot_every: int = 5000,  # steps between snapshot + state
    keep: int = 3,  # last K snapshots / states kept
    ema: float | None = None,  # generator EMA decay (None: recipe default, 0: off)
    status_every: int = 10,  # steps between status lines
    **_ignored: Any,  # launcher-only options (out, preset, gpus, nproc, ...)
) -> dict[str, Any]:
    from t2itool.encoders import load_damsm
    from t2itool.models.registry import get_model

    rank, world_size = dist.get_rank(), dist.get_world_size()
    run_path = Path(run_dir)

    # Model, recipe and precision.
    spec = get_model(model)
    config = spec.make_config(None, model_config)
    recipe = spec.recipe_cls(config)
    if amp == "fp16" and device.type != "cuda":
        raise T2IError("--amp fp16 needs a CUDA device (fp16 autocast/GradScaler); on CPU use --amp bf16 or none")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    # Data and encoders (the DAMSM loader refuses a vocabulary that differs from the data's).
    store, dataset = open_data(data, recipe, seed)
    encoders = load_damsm(damsm, store=store, device=device)
    text_encoder, image_encoder, damsm_settings = encoders.text_encoder, encoders.image_encoder, encoders.gammas
    text_encoder.to(device).eval().requires_grad_(False)
    if recipe.trains_text_encoder:
        text_encoder.train().requires_grad_(True)
    if image_encoder is not None:
        image_encoder.to(device).eval().requires_grad_(False)
    order = ShardedBatches(len(dataset), batch_size, world_size, rank, seed)
    total_steps = steps if steps is not None else (epochs or 0) * order.steps_per_epoch
    if steps is None and epochs is None:
        raise T2IError("give --steps or --epochs (or a --preset that sets epochs)")

    # Networks (same init on every rank: seeded before building), optimizers, EMA.
    torch.manual_seed(seed)
    nets = {name: net.to(device) for name, net in recipe.build_networks().items()}
    if "generator" not in nets:
        raise TypeError(f"{type(recipe).__name__}.build_networks() must return a 'generator'")
    if channels_last:
        nets = {name: net.to(memory_format=torch.channels_last) for name, net in nets.items()}
    for net in nets.values():
        net.train()
    optimizers = recipe.build_optimizers(nets, text_encoder)
    ema_beta = recipe.default_ema if ema is None else ema
    generator_ema = EMA(nets["generator"], ema_beta) if ema_beta else None
    torch.manual_seed(seed * 1009 + rank)  # per-rank stream for anything a recipe draws from the global RNG

    # Resume: networks, optimizers, EMA, scaler, step and RNG states (data order is a function of seed and step).
    step = 0
    if resume is not None:
        state_path, state = checkpoint.load_state(resume)
        if state["model"] != model:
            raise T2IError(f"--resume {state_path}: state is for {state['model']!r}, not {model!r}")
        for name, net in nets.items():
            net.load_state_dict(state["nets"][name])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if generator_ema is not None and state.get("ema") is not None:
            generator_ema.load_state_dict(state["ema"])
        elif generator_ema is not None:  # EMA switched on at resume: start it from the resumed weights
            generator_ema = EMA(nets["generator"], ema_beta)
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if state.get("text_encoder") is not None:
            text_encoder.load_state_dict(state["text_encoder"])
        step = int(state["step"])
        if int(state["seed"]) != seed or int(state["global_batch"]) != batch_size * world_size:
            dist.print0(
                f"note: resuming with seed/global batch {seed}/{batch_size * world_size} "
                f"(state: {state['seed']}/{state['global_batch']}); the data order changes"
            )
        rng = state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0]
        checkpoint.set_rng_state(rng)
        dist.print0(f"resumed from {state_path} at step {step}")

    ctx = StepContext(
        device=device, seed=seed, rank=rank, world_size=world_size, amp=amp, nets=nets, optimizers=optimizers,
        text_encoder=text_encoder, image_encoder=image_encoder if recipe.needs_image_encoder else None,
        scaler=scaler, damsm=damsm_settings,
    )  # fmt: skip

    # Outputs (rank 0 writes), fixed grid captions and noise.
    writer = StatsWriter(run_path, enabled=rank == 0)
    collector = StatsCollector(device)
    grid = GridCaptions(store, grid_size, recipe.max_words())
    grid_columns = 4
    truncation = spec.default_truncation(config)
    grid_noise = torch.stack(
        [
            truncated_noise(
                torch.Generator().manual_seed(sample_seed(seed, -1, i, 0)), spec.noise_dim(config), truncation
            )
            for i in range(len(grid.texts) * grid_columns)
        ]
    )

    def write_grid(at_step: int) -> None:
        if rank != 0:
            return
        generator = generator_ema.module if generator_ema is not None else nets["generator"]
        was_training, text_was_training = generator.training, text_encoder.training
        generator.eval()
        text_encoder.eval()

        def generate(noise: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), ctx.autocast():
                text = text_encoder.encode(tokens.to(device), lengths.to(device))
                return spec.generate(generator, noise.to(device), text).image

        tokens = grid.tokens.repeat_interleave(grid_columns, dim=0)
        lengths = grid.lengths.repeat_interleave(grid_columns, dim=0)
        images = render_grid(generate, tokens, lengths, grid_noise)
        save_grid(images, grid.texts, run_path / "grids" / f"grid-{at_step:06d}.png", grid_columns)
        generator.train(was_training)
        text_encoder.train(text_was_training)

    def save(at_step: int) -> tuple[str | None, str | None]:
        """Snapshot + resume state at `at_step` (every rank contributes its RNG state; rank 0 writes)."""
        rngs = [checkpoint.rng_state()]
        if world_size > 1:
            rngs = [None] * world_size
            torch.distributed.all_gather_object(rngs, checkpoint.rng_state())
        if rank != 0:
            return None, None
        snap = run_path / "snapshots" / f"snapshot-{at_step:06d}.pt"
        state_file = run_path / "states" / f"state-{at_step:06d}.pt"
        checkpoint.save_snapshot(
            snap, model=model, config=config,
            generator=generator_ema.module if generator_ema is not None else nets["generator"],
            text_encoder=text_encoder, vocab_words=list(store.vocab.words), vocab_sha256=store.vocab_sha256,
            step=at_step, data=store.identity(), ema=generator_ema is not None,
        )  # fmt: skip
        checkpoint.save_state(
            state_file,
            {
                "model": model,
                "model_config": dataclasses.asdict(config),
                "step": at_step,
                "seed": seed,
                "global_batch": batch_size * world_size,
                "nets": {name: net.state_dict() for name, net in nets.items()},
                "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                "ema": generator_ema.state_dict() if generator_ema is not None else None,
                "ema_beta": ema_beta,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "text_encoder": text_encoder.state_dict() if recipe.trains_text_encoder else None,
                "rng": rngs,
            },
        )
        checkpoint.prune(run_path / "snapshots", "snapshot", keep)
        checkpoint.prune(run_path / "states", "state", keep)
        return str(snap), str(state_file)

    # Ctrl-C: finish the current step, agree across ranks, save a state, stop.
    interrupted = {"flag": False}
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.update(flag=True))

    # Main loop.
    dist.print0(f"run folder {run_dir}: {model}, {total_steps} steps, batch {batch_size}x{world_size}, {device}")
    if rank == 0:
        (run_path / "stats.jsonl").touch()
        write_grid(step)
    start_step, start_time, tick_time, tick_step = step, time.perf_counter(), time.perf_counter(), step
    snapshot_file = state_file = None
    stopped_early = False
    try:
        for batch in order.batches(dataset, start_step=step, total_steps=total_steps, workers=workers, device=device):
            if channels_last:
                batch.images = [im.contiguous(memory_format=torch.channels_last) for im in batch.images]
            ctx.step, ctx.optimizer_steps = step, 0
            try:
                stats = recipe.train_step(batch, ctx)
            except NonFiniteLoss as exc:
                kept = _keep_last_good(run_path, ctx, save, step)
                raise T2IError(f"{exc}; stopped, {kept}") from None
            if scaler is not None:
                scaler.update()
            if generator_ema is not None:
                generator_ema.update(nets["generator"])
            collector.add(stats)
            step += 1

            # Status line and stats.jsonl once per tick.
            if step % status_every == 0 or step == total_steps:
                means = collector.reduce()
                bad = [name for name, value in means.items() if not torch.isfinite(torch.tensor(value))]
                now = time.perf_counter()
                record = {"epoch": step // order.steps_per_epoch, **means}
                record["sec_per_step"] = (now - tick_time) / max(1, step - tick_step)
                tick_time, tick_step = now, step
                writer.write(step, record)
                if bad:
                    raise T2IError(
                        f"non-finite {bad[0]} at step {step}; stopped, last good state in {run_path / 'states'}"
                    )

            # Grids and checkpoints.
            if grid_every and step % grid_every == 0 and step != total_steps:
                write_grid(step)
            if snapshot_every and step % snapshot_every == 0 and step != total_steps:
                snapshot_file, state_file = save(step)
            if dist.any_rank(interrupted["flag"], device):
                stopped_early = True
                break
        snapshot_file, state_file = save(step)
        if not stopped_early:
            write_grid(step)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        writer.close()
    elapsed = time.perf_counter() - start_time
    if stopped_early:
        dist.print0(f"interrupted at step {step}: state saved to {state_file}")
    return {
        "run_dir": str(run_dir),
        "step": step,
        "snapshot": snapshot_file,
        "state": state_file,
        "interrupted": stopped_early,
        "seconds_per_step": elapsed / max(1, step - start_step),
    }


def _keep_last_good(run_path: Path, ctx: StepContext, save: Any, step: int) -> str:
    """After a non-finite loss: if no optimizer moved in the failing step, the weights are still the good ones."""
    if ctx.optimizer_steps == 0:
        _, state_file = save(step)
        return f"state of the last good step saved to {state_file}" if state_file else "state saved by rank 0"
    return f"last good state kept in {run_path / 'states'}"
