"""`t2itool sample`: images from a snapshot for free text, a captions file or a data file's split."""

from __future__ import annotations

from pathlib import Path

import typer

from t2itool.cli.common import (
    DEVICE_HELP,
    JSON_HELP,
    console,
    print_json,
    resolve_device,
    sigterm_like_ctrl_c,
    user_errors,
)
from t2itool.errors import T2IError


def parse_truncation(value: str | None) -> float | None | str:
    """None (flag absent) -> the preset's default; "none" -> plain N(0, I); else a positive float."""
    if value is None:
        return "default"
    if value.strip().lower() == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        raise T2IError(f"--truncation {value!r}: expected a number or 'none'") from None
    if number <= 0:
        raise T2IError(f"--truncation {value}: must be positive")
    return number


def run_sample(
    snapshot_path: Path,
    out: Path,
    texts: list[str],
    captions: Path | None,
    split: str | None,
    data: Path | None,
    per_caption: int,
    seed: int,
    truncation: str | None,
    batch_size: int,
    device: str,
    visualize: bool,
    as_json: bool = False,
) -> dict:
    """Sample as the `sample` command does; returns the JSON summary it prints with --json."""
    from t2itool import sampling
    from t2itool.data.text import Vocabulary
    from t2itool.training.checkpoint import load_snapshot

    sources = sum([bool(texts), captions is not None, split is not None])
    if sources != 1:
        raise T2IError("give exactly one caption source: --text (repeatable), --captions FILE or --split test")
    trunc = parse_truncation(truncation)
    device = resolve_device(device)
    snap = load_snapshot(snapshot_path, device=device)
    store = None
    if split is not None:
        from t2itool.data.store import Store

        if data is None:  # the data file of the run the snapshot belongs to
            data = sampling.run_data_file(snap.path)
        store = Store(data)
        prompts = sampling.prompts_from_split(store, split, snap.vocab_sha256)
    elif snap.text.kind == "precomputed":
        raise T2IError(
            f"{snap.path}: the model conditions on {snap.text.describe()}, which exist only for the captions of its "
            "data file, so free text cannot be encoded; use --split test --data FILE"
        )
    else:
        prompts = sampling.prompts_from_texts(
            texts or sampling.read_captions_file(captions), Vocabulary(snap.vocab_words)
        )
    jobs = sampling.jobs_for(prompts, per_caption, seed)
    result = sampling.sample(
        snap, jobs, out, truncation=trunc, batch_size=batch_size, device=device, visualize=visualize, console=console,
        store=store,
    )  # fmt: skip
    for text, words in result.missing_words.items():
        console.print(f"[yellow]warning:[/] not in the vocabulary, dropped from {text!r}: {', '.join(words)}")
    used = snap.spec.default_truncation(snap.config) if trunc == "default" else trunc
    summary = {
        "out": str(out), "images": len(result.records), "samples": str(out / "samples.jsonl"),
        "grid": None if result.grid is None else str(result.grid), "snapshot": str(snap.path), "step": snap.step,
        "truncation": used, "device": device, "data": None if data is None else str(data),
        "missing_words": result.missing_words,
    }  # fmt: skip
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"{len(result.records)} images in {out} (samples.jsonl, grid.png); snapshot step {snap.step}, "
            f"truncation {used}"
        )
    return summary


def register(app: typer.Typer) -> None:
    @app.command("sample")
    @user_errors
    @sigterm_like_ctrl_c("no samples were written (the staged images were removed)")
    def sample_command(
        snapshot: Path = typer.Argument(
            ..., help="A run folder (its newest snapshot) or a snapshot-<step>.pt file.", metavar="SNAPSHOT"
        ),
        out: Path = typer.Option(..., "--out", help="Folder for the PNGs, samples.jsonl and grid.png."),
        text: list[str] = typer.Option([], "--text", help="A caption (repeat for several)."),
        captions: Path | None = typer.Option(
            None,
            "--captions",
            help="A text file, one caption a line (default: none; give one of --text, --captions, --split).",
        ),
        split: str | None = typer.Option(
            None, "--split", help="Every caption of this split (e.g. test) of --data (default: none)."
        ),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="The prepared data file for --split (default: the data file named in the config.json of the "
            "snapshot's run).",
        ),
        per_caption: int = typer.Option(1, "--per-caption", help="Images per caption (seeds SEED, SEED+1, ...)."),
        seed: int = typer.Option(0, "--seed", help="First seed; an image depends only on (snapshot, caption, seed)."),
        truncation: str | None = typer.Option(
            None, "--truncation", help="Noise truncation (default: the model preset's; 'none' for plain N(0, I))."
        ),
        batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass (does not change images)."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        visualize: bool = typer.Option(
            False, "--visualize", help="Also save the model's maps (masks; AttnGAN: a word-attention figure per image)."
        ),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Generate images from text with a trained snapshot."""
        run_sample(
            snapshot,
            out,
            text,
            captions,
            split,
            data,
            per_caption,
            seed,
            truncation,
            batch_size,
            device,
            visualize,
            as_json,
        )
