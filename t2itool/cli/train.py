"""`t2itool train MODEL`: build the run config from preset, TOML file, flags and --set, then call the library."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import typer

from t2itool.cli.common import DEVICE_HELP, JSON_HELP, WORKERS_HELP, console, parse_key_values, print_json, user_errors
from t2itool.errors import T2IError


def parse_gpus(value: str | None) -> list[int] | None:
    """'0,1,2,3' -> [0, 1, 2, 3]; anything else is a BadParameter naming the flag."""
    if value is None:
        return None
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected comma-separated GPU ids such as 0,1,2,3") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise typer.BadParameter(f"{value!r}: expected distinct non-negative GPU ids such as 0,1,2,3")
    return ids


def train_command(
    model: str = typer.Argument(..., help="Model name (see `t2itool models`).", metavar="MODEL"),
    data: str | None = typer.Option(
        None, "--data", help="Prepared HDF5 file from `t2itool prep` (default: --resume's run's)."
    ),
    damsm: str | None = typer.Option(
        None,
        "--damsm",
        help="DAMSM checkpoint from `t2itool pretrain-damsm`, for --text damsm and DAMSM losses (default: --resume's "
        "run's).",
    ),
    text: str | None = typer.Option(
        None,
        "--text",
        help="Text source: damsm (the DAMSM encoder) or precomputed (prep --caption-features) (default: damsm).",
    ),
    out_dir: str | None = typer.Option(
        None, "--out", help="Parent folder of numbered run folders (default: runs; with --resume, the run's parent)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Paper settings: birds or coco (default: none, the model's defaults)."
    ),
    config_file: str | None = typer.Option(
        None, "--config", help="TOML file: loop options, [model] table (default: none)."
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Model config override key=value (repeatable; see `t2itool models MODEL`)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config as JSON and exit."),
    epochs: int | None = typer.Option(None, "--epochs", help="Total epochs (default: the preset's; --steps wins)."),
    steps: int | None = typer.Option(
        None, "--steps", help="Total steps (G updates); wins over epochs (default: none)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch size per process (default: 8, or the preset's)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Run seed (default: 0)."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Final resolution: 64, 128 or 256 (default: the model's)."
    ),
    device: str | None = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: auto)"),
    amp: str | None = typer.Option(None, "--amp", help="Mixed precision: none, bf16, fp16 (CUDA) (default: none)."),
    channels_last: bool | None = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Channels-last memory format (default: on; on CPU only for networks without batch norm).",
    ),
    compile_networks: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the generator; eager with one warning line if it fails "
        "(default: on for CUDA, and on CPU for runs of 2,000 steps or more).",
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Run folder or state file to continue (default: start a new run)."
    ),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        help="Start from another run's networks: RUN_OR_FILE[:net,src=dst.module] (e.g. STAGE1_RUN:generator) "
        "(default: none).",
    ),
    gpus: str | None = typer.Option(
        None, "--gpus", help="GPU ids, one process each: 0,1,2,3 (default: none).", metavar="IDS"
    ),
    nproc: int | None = typer.Option(None, "--nproc", help="CPU processes (gloo backend) (default: 1)."),
    workers: int | None = typer.Option(
        None, "--workers", help=f"{WORKERS_HELP} They load batches, per process (default: 2)."
    ),
    grid_every: int | None = typer.Option(None, "--grid-every", help="Steps between sample grids (default: 1000)."),
    snapshot_every: int | None = typer.Option(
        None, "--snapshot-every", help="Steps between snapshots/states (default: 5000)."
    ),
    keep: int | None = typer.Option(
        None, "--keep", help="Keep the last K snapshots and states (0 = all) (default: 3)."
    ),
    ema: float | None = typer.Option(
        None, "--ema", help="Generator EMA decay, e.g. 0.999 (0 = off) (default: the model's)."
    ),
    eval_every: int | None = typer.Option(
        None, "--eval-every", help="Steps between evaluations of the snapshot with --metrics (default: 0 = none)."
    ),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help="Comma-separated: fid, kid, is, r_precision, shapes_agreement (best-<metric>.pt kept) (default: none).",
    ),
    eval_images: int | None = typer.Option(None, "--eval-images", help="Test captions per evaluation (default: 1000)."),
    inception_weights: str | None = typer.Option(
        None, "--inception-weights", help="TF-Inception weights file for fid/kid/is (default: torch hub cache)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train MODEL on a prepared file with a pretrained DAMSM; writes a numbered run folder under --out."""
    from t2itool.training.config import resolve_config
    from t2itool.training.loop import run

    gpu_ids = parse_gpus(gpus)
    if steps is not None and epochs is not None:
        raise T2IError("give --steps or --epochs, not both")
    flags = dict(
        data=data, damsm=damsm, text=text, init_from=init_from, out=out_dir, preset=preset, epochs=epochs,
        steps=steps, batch_size=batch_size, seed=seed, image_size=image_size, device=device, amp=amp,
        channels_last=channels_last, compile=compile_networks, resume=resume, gpus=gpu_ids, nproc=nproc,
        workers=workers, grid_every=grid_every,
        snapshot_every=snapshot_every, keep=keep, ema=ema, eval_every=eval_every, eval_images=eval_images,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        inception_weights=inception_weights,
    )  # fmt: skip
    config = resolve_config(model, config_file=config_file, sets=parse_key_values(sets, "--set"), flags=flags)
    if dry_run:
        typer.echo(config.to_json())
        return
    result = run(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank runs this command; rank 0 reports
        return
    closing = (
        f"run folder {result.run_dir}: step {result.step}, {result.seconds_per_step:.3f} s/step, "
        f"snapshot {result.snapshot}"
    )
    with open(Path(result.run_dir) / "log.txt", "a", encoding="utf-8") as log:  # log.txt mirrors the console
        log.write(closing + "\n")
    console.print(closing, highlight=False, soft_wrap=True)
    if as_json:
        print_json(dataclasses.asdict(result))
    if result.interrupted:
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command("train")(user_errors(train_command))
