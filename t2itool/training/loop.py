"""The one training loop every model runs through, and `train()`, its Python entry point.

`train(...)` resolves the config; `run(config)` checks everything (preflight), creates the run folder and starts the
processes (none, `--nproc`, `--gpus`, or joins torchrun); each process runs `training_loop(spec=..., **options)`:
data -> recipe.train_step -> EMA -> stats / grids / checkpoints.
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
from torch import nn

from t2itool.encoders import load_damsm
from t2itool.encoders.features import TextFeatures
from t2itool.encoders.kinds import TextSource
from t2itool.errors import T2IError
from t2itool.models import ModelSpec, get_model
from t2itool.models.context import StepContext
from t2itool.models.recipe import NonFiniteLoss
from t2itool.noise import draw_rows
from t2itool.training import checkpoint, dist, speed, sync_batchnorm
from t2itool.training.batches import GridCaptions, ShardedBatches, open_data
from t2itool.training.config import TrainConfig, resolve_config, run_name, validate
from t2itool.training.ema import EMA
from t2itool.training.evaluate import Evaluator
from t2itool.training.preflight import needs_damsm, preflight
from t2itool.training.stats import StatsCollector, StatsWriter, progress_fields, render_grid, save_grid


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


def run(config: TrainConfig) -> TrainResult:
    """Check everything, create the numbered run folder (config.json first), start the run's processes and return
    rank 0's result. A failed check leaves nothing behind."""
    validate(config)
    spec = get_model(config.model)
    options = dataclasses.asdict(config)
    if dist.launched_by_torchrun():
        preflight(config, spec, int(os.environ["WORLD_SIZE"]))
        return TrainResult(**_worker(options, None))
    if config.gpus:
        dist.select_gpus(config.gpus)
        world_size = len(config.gpus)
    else:
        world_size = config.nproc
    preflight(config, spec, world_size)
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
        spec = get_model(options["model"])
        return training_loop(
            spec=spec, run_dir=run_dir, device=device, **{k: v for k, v in options.items() if k != "device"}
        )
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
    spec: ModelSpec,  # the registered model
    run_dir: str,  # numbered run folder (exists, config.json written)
    device: torch.device,  # this process's device
    model: str,  # registered model name (spec.name)
    data: str,  # prepared HDF5 file
    damsm: str,  # DAMSM checkpoint (text encoder, image encoder); "" when the recipe needs none
    model_config: dict[str, Any],  # resolved model config values
    text: str = "damsm",  # text source: damsm | precomputed
    steps: int | None = None,  # total steps to reach (None: from epochs)
    epochs: int | None = None,  # total epochs to reach when steps is None
    batch_size: int = 8,  # per process
    seed: int = 0,  # init, data order and noise
    crop_margin: bool = True,  # resize to 76/64 of the crop before cropping (official); false: CelebA-style
    amp: str = "none",  # none | bf16 | fp16
    channels_last: bool | None = None,  # channels-last networks and images (None: speed.default_settings)
    compile: bool | None = None,  # torch.compile the generator (None: speed.default_settings)
    resume: str | None = None,  # state file or run folder to continue from
    init_from: str | None = None,  # RUN_OR_FILE[:net,...]: networks loaded before step 0 (not when resuming)
    workers: int = 2,  # DataLoader workers per process
    grid_every: int = 1000,  # steps between sample grids
    grid_size: int = 16,  # captions (rows) in a grid
    snapshot_every: int = 5000,  # steps between snapshot + state
    keep: int = 3,  # last K snapshots / states kept
    ema: float | None = None,  # generator EMA decay (None: recipe default, 0: off)
    status_every: int = 10,  # steps between status lines
    eval_every: int = 0,  # steps between evaluations (0: none)
    metrics: list[str] | None = None,  # fid, kid, is, r_precision, shapes_agreement
    eval_images: int = 1000,  # test captions per evaluation
    inception_weights: str | None = None,  # TF-Inception weights for fid/kid/is
    **_ignored: Any,  # launcher-only options (out, preset, gpus, nproc, ...)
) -> dict[str, Any]:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    run_path = Path(run_dir)
    dist.set_log_file(run_path / "log.txt")  # rank 0's console lines are mirrored there (print0, status lines)

    # Model, recipe and precision.
    config = spec.make_config(None, model_config)
    recipe = spec.recipe_cls(config)
    if amp == "fp16" and device.type != "cuda":
        raise T2IError("--amp fp16 needs a CUDA device (fp16 autocast/GradScaler); on CPU use --amp bf16 or none")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    # Data, text source and DAMSM encoders (the DAMSM loader refuses a vocabulary that differs from the data's).
    store, dataset = open_data(data, recipe, seed, text, crop_margin)
    text_encoder = image_encoder = None
    damsm_settings: dict[str, Any] = {}
    if needs_damsm(text, recipe):
        encoders = load_damsm(damsm, store=store, device=device)
        text_encoder, image_encoder, damsm_settings = encoders.text_encoder, encoders.image_encoder, encoders.gammas
        text_encoder.to(device).eval().requires_grad_(False)
        if recipe.trains_text_encoder:
            text_encoder.train().requires_grad_(True)
        image_encoder.to(device).eval().requires_grad_(False)
    text_source = TextSource.damsm(text_encoder) if text == "damsm" else TextSource.precomputed(store)
    order = ShardedBatches(len(dataset), batch_size, world_size, rank, seed, recipe.sub_batches())
    total_steps = steps if steps is not None else (epochs or 0) * order.steps_per_epoch
    streams = spec.noise_streams(config)

    # Networks (same init on every rank: seeded before building), staged weights, frozen parts, optimizers, EMA.
    torch.manual_seed(seed)
    nets = recipe.build_networks()
    if "generator" not in nets:
        raise TypeError(f"{type(recipe).__name__}.build_networks() must return a 'generator'")
    if init_from is not None and resume is None:
        for line in checkpoint.load_init_from(init_from, nets, dict(recipe.init_targets())):
            dist.print0(f"init from {init_from}: {line}")
    frozen = [checkpoint.module_at(nets, path) for path in recipe.frozen_modules()]
    for module in frozen:
        module.requires_grad_(False)
    if world_size > 1 and config.sync_batchnorm:
        nets = {name: sync_batchnorm.convert(net) for name, net in nets.items()}
    nets = {name: net.to(device) for name, net in nets.items()}
    settings = speed.default_settings(device, amp, channels_last, compile, total_steps)
    channels_last = False  # for the batch images: only when some network takes channels-last
    if settings.channels_last:  # where it wins (speed.channels_last_names)
        nets, channels_last = speed.to_channels_last(nets, device, (image_encoder,))

    def set_train_mode() -> None:
        for net in nets.values():
            net.train()
        for module in frozen:
            module.eval()

    set_train_mode()
    optimizers = recipe.build_optimizers(nets, text_encoder if recipe.trains_text_encoder else None)
    _check_frozen_not_optimized(frozen, optimizers)
    if settings.foreach:
        speed.tune_optimizers(optimizers, device)
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    ema_beta = recipe.default_ema if ema is None else ema
    generator_frozen = [path.partition(".")[2] for path in recipe.frozen_modules() if path.startswith("generator.")]
    generator_ema = EMA(nets["generator"], ema_beta, generator_frozen) if ema_beta else None
    torch.manual_seed(seed * 1009 + rank)  # per-rank stream for anything a recipe draws from the global RNG

    # Resume: networks, optimizers, EMA, scaler, step and RNG states (data order is a function of seed and step).
    step, resumed_run = 0, None
    if resume is not None:
        state_path, state = checkpoint.load_state(resume)
        resumed_run = state_path.parent.parent
        for name, net in nets.items():
            net.load_state_dict(state["nets"][name])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if generator_ema is not None and state.get("ema") is not None:
            generator_ema.load_state_dict(state["ema"])
        elif generator_ema is not None:  # EMA switched on at resume: start it from the resumed weights
            generator_ema = EMA(nets["generator"], ema_beta, generator_frozen)
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if state.get("text_encoder") is not None and text_encoder is not None:
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

    if settings.compile:  # after EMA's copy and the resumed weights: the compiled module keeps its state-dict names
        speed.compile_networks(nets, speed.COMPILED, device)

    ctx = StepContext(
        device=device, seed=seed, rank=rank, world_size=world_size, amp=amp, nets=nets, optimizers=optimizers,
        text_kind=text, text_encoder=text_encoder,
        image_encoder=image_encoder if recipe.needs_image_encoder else None,
        scaler=scaler, damsm=damsm_settings, noise_streams={s.name: s for s in streams}, batch_size=batch_size,
        sub_batches=recipe.sub_batches(),
    )  # fmt: skip

    def apply_lr_schedule(epoch: int) -> dict[str, float]:
        """Set every scheduled optimizer's learning rates for `epoch`; returns them for the stats."""
        rates = {}
        for name, factor in recipe.lr_schedule(epoch).items():
            if name not in optimizers:
                raise KeyError(
                    f"{type(recipe).__name__}.lr_schedule names optimizer {name!r}; built: {list(optimizers)}"
                )
            for group in optimizers[name].param_groups:
                group["lr"] = group["initial_lr"] * float(factor)
            rates[f"lr_{name}"] = optimizers[name].param_groups[0]["lr"]
        return rates

    # Outputs (rank 0 writes), fixed grid captions and noise.
    writer = StatsWriter(run_path, enabled=rank == 0)
    collector = StatsCollector(device)
    grid = GridCaptions(store, grid_size, recipe.max_words())
    grid_columns = 4
    truncation = spec.default_truncation(config)
    grid_keys = [("grid", seed, row, column) for row in range(len(grid.texts)) for column in range(grid_columns)]
    grid_noise = draw_rows(grid_keys, streams, truncation)
    grid_text = None if text == "damsm" else text_source.stored(store, grid.caption_indices)
    grid_real = grid.real_images(store, config.image_size) if rank == 0 else None

    def write_grid(at_step: int) -> None:
        if rank != 0:
            return
        generator = generator_ema.module if generator_ema is not None else nets["generator"]
        generator.eval()
        if text_encoder is not None:
            text_encoder.eval()

        def generate(rows: slice) -> torch.Tensor:
            # A compiled generator runs eager here: eval mode and the grid's batch would each cost a recompilation.
            with torch.no_grad(), ctx.autocast(), torch.compiler.set_stance("force_eager"):
                if grid_text is None:
                    tokens = grid.tokens.repeat_interleave(grid_columns, dim=0)[rows].to(device)
                    lengths = grid.lengths.repeat_interleave(grid_columns, dim=0)[rows].to(device)
                    features = text_encoder.encode(tokens, lengths)
                else:
                    index = torch.arange(len(grid.texts)).repeat_interleave(grid_columns)[rows]
                    features = _rows(grid_text, index).to(device)
                noise = {name: values[rows].to(device) for name, values in grid_noise.items()}
                return _grid_cells(spec.generate(generator, noise, features).images)

        images = render_grid(generate, len(grid_keys))
        pixels = save_grid(images, grid.texts, run_path / "grids" / f"grid-{at_step:06d}.png", grid_columns, grid_real)
        writer.image("grid", pixels, at_step)
        set_train_mode()
        if text_encoder is not None:
            text_encoder.train(recipe.trains_text_encoder)

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
            text=text_source, vocab_words=list(store.vocab.words), vocab_sha256=store.vocab_sha256,
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
                "text": text_source.record(with_weights=False),
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

    # Evaluation: rank 0 samples and scores the step's snapshot; the others wait.
    evaluator = None
    if eval_every and metrics and rank == 0:
        evaluator = Evaluator(
            run_path, data, damsm, list(metrics), eval_images, str(device), inception_weights,
            previous_run=resumed_run,
        )  # fmt: skip
    saved_at = {"step": -1, "files": (None, None)}

    def save_once(at_step: int) -> tuple[str | None, str | None]:
        if saved_at["step"] != at_step:
            saved_at["step"], saved_at["files"] = at_step, save(at_step)
        return saved_at["files"]

    def evaluate(at_step: int) -> None:
        snapshot_at_step, _ = save_once(at_step)
        if evaluator is not None:
            for record in evaluator(snapshot_at_step, at_step):
                writer.write(at_step, {f"eval/{record['metric']}": record["value"]}, jsonl=False)
        dist.barrier()

    # Ctrl-C or SIGTERM (a scheduler's kill): finish the current step, agree across ranks, save a state, stop.
    interrupted = {"flag": False}
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous_handlers = {sig: signal.signal(sig, lambda *_: interrupted.update(flag=True)) for sig in stop_signals}

    # Main loop.
    dist.print0(
        f"run folder {run_dir}: {model}, {total_steps} steps, "
        f"global batch {batch_size * world_size} ({batch_size} per process x {world_size}), {device}, "
        f"text {text_source.describe()}; step: {settings.describe()}"
    )
    if rank == 0:
        (run_path / "stats.jsonl").touch()
        write_grid(step)
    start_step, start_time, tick_time, tick_step = step, time.perf_counter(), time.perf_counter(), step
    snapshot_file = state_file = None
    stopped_early = False
    current_epoch, rates = -1, {}
    try:
        for batch in order.batches(dataset, start_step=step, total_steps=total_steps, workers=workers, device=device):
            if channels_last:
                batch.images = [im.contiguous(memory_format=torch.channels_last) for im in batch.images]
            epoch = step // order.steps_per_epoch
            if epoch != current_epoch:
                rates, current_epoch = apply_lr_schedule(epoch), epoch
            ctx.step, ctx.epoch, ctx.optimizer_steps = step, epoch, 0
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
                record = {"epoch": step // order.steps_per_epoch, **means, **rates}
                record.update(progress_fields(
                    tick_seconds=now - tick_time, tick_steps=step - tick_step, elapsed=now - start_time,
                    done_steps=step - start_step, left_steps=total_steps - step, global_batch=batch_size * world_size,
                    device=device,
                ))  # fmt: skip
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
                snapshot_file, state_file = save_once(step)
            if eval_every and step % eval_every == 0 and step != total_steps:
                evaluate(step)
            if dist.any_rank(interrupted["flag"], device):
                stopped_early = True
                break
        snapshot_file, state_file = save_once(step)
        if not stopped_early:
            write_grid(step)
            if eval_every:
                evaluate(step)
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        writer.close()
    elapsed = time.perf_counter() - start_time
    if stopped_early:
        dist.print0(f"interrupted at step {step}: state saved to {state_file}")
    dist.set_log_file(None)
    return {
        "run_dir": str(run_dir),
        "step": step,
        "snapshot": snapshot_file,
        "state": state_file,
        "interrupted": stopped_early,
        "seconds_per_step": elapsed / max(1, step - start_step),
    }


def _grid_cells(images: list[torch.Tensor]) -> torch.Tensor:
    """One grid cell per sample: the final image, or for multi-stage models every stage's image (nearest-upsampled
    to the final size) side by side, smallest first."""
    final = images[-1]
    if len(images) == 1:
        return final
    size = tuple(final.shape[-2:])
    return torch.cat([torch.nn.functional.interpolate(im.float(), size=size, mode="nearest") for im in images], -1)


def _rows(text: TextFeatures, index: torch.Tensor) -> TextFeatures:
    """Rows `index` of a TextFeatures batch."""

    def pick(value: torch.Tensor | None) -> torch.Tensor | None:
        return value[index] if value is not None else None

    return TextFeatures(pick(text.words), text.sentence[index], pick(text.mask), pick(text.lengths))


def _check_frozen_not_optimized(frozen: list[nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    frozen_ids = {id(p) for module in frozen for p in module.parameters()}
    for name, optimizer in optimizers.items():
        if any(id(p) in frozen_ids for group in optimizer.param_groups for p in group["params"]):
            raise TypeError(f"optimizer {name!r} holds parameters of a frozen module (GANRecipe.frozen_modules)")


def _keep_last_good(run_path: Path, ctx: StepContext, save: Any, step: int) -> str:
    """After a non-finite loss: if no optimizer moved in the failing step, the weights are still the good ones."""
    if ctx.optimizer_steps == 0:
        _, state_file = save(step)
        return f"state of the last good step saved to {state_file}" if state_file else "state saved by rank 0"
    return f"last good state kept in {run_path / 'states'}"
