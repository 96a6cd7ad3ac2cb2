"""`t2itool pretrain-damsm` (AttnGAN's DAMSM encoders on a prepared file) and `t2itool import-damsm` (AttnGAN's
released encoders converted into a t2itool checkpoint)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from t2itool.cli.common import (
    DEVICE_HELP,
    JSON_HELP,
    WORKERS_HELP,
    console,
    out,
    print_json,
    resolve_device,
    user_errors,
)
from t2itool.progress import progress_bar


def register(app: typer.Typer) -> None:
    @app.command("pretrain-damsm")
    @user_errors
    def pretrain_command(
        data: Path = typer.Option(..., "--data", help="Prepared HDF5 file (t2itool prep)."),
        out_dir: Path = typer.Option(..., "--out", help="Folder for damsm.pt, checkpoints/ and stats.jsonl."),
        preset: str = typer.Option("birds", "--preset", help="birds | coco: epochs 600, words 18/15, ckpt 50/5."),
        epochs: int | None = typer.Option(None, "--epochs", help="Total epochs (default: preset's 600)."),
        batch_size: int = typer.Option(48, "--batch-size", help="Images (and captions) per batch."),
        lr: float = typer.Option(2e-3, "--lr", help="Initial Adam learning rate (x0.98 per epoch, floor lr/10)."),
        max_words: int | None = typer.Option(None, "--max-words", help="Caption length cap (default: preset)."),
        backbone_weights: str = typer.Option(
            "imagenet",
            "--backbone-weights",
            help="Inception-v3 backbone: 'imagenet' (torchvision's weights: downloaded unless in the torch hub cache), "
            "a local .pth, or 'random' (tests).",
        ),
        train_backbone: bool = typer.Option(
            False,
            "--train-backbone",
            help="Train the Inception-v3 backbone too (batch norm in train mode); AttnGAN keeps it frozen. For data "
            "the backbone does not describe, e.g. a random backbone on the shapes data (the demo).",
        ),
        encoder_image_size: int = typer.Option(
            299, "--encoder-image-size", help="Image encoder input size (AttnGAN 299; smaller is faster, >= 75)."
        ),
        checkpoint_every: int | None = typer.Option(
            None, "--checkpoint-every", help="Epochs between checkpoints (default: preset's 50/5)."
        ),
        attention_every: int | None = typer.Option(
            None, "--attention-every", help="Epochs between attention-map images (default: --checkpoint-every; 0 off)."
        ),
        rp_images: int | None = typer.Option(None, "--rp-images", help="Test images for R-precision (default: all)."),
        workers: int = typer.Option(2, "--workers", help=f"{WORKERS_HELP} They load the batches."),
        seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and the data order."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        resume: Path | None = typer.Option(
            None, "--resume", help="Checkpoint of this run to continue from (default: start from scratch)."
        ),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Pretrain the DAMSM text and image encoders (AttnGAN) and report test R-precision per epoch."""
        from t2itool.encoders.pretrain import PretrainConfig, pretrain

        config = PretrainConfig(
            data=str(data),
            out=str(out_dir),
            preset=preset,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_words=max_words,
            backbone_weights=backbone_weights,
            train_backbone=train_backbone,
            encoder_image_size=encoder_image_size,
            checkpoint_every=checkpoint_every,
            attention_every=attention_every,
            rp_images=rp_images,
            workers=workers,
            seed=seed,
            device=resolve_device(device),
            resume=None if resume is None else str(resume),
        )
        with progress_bar(console) as bar, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-backbone warning is printed by the loop as a line of its own
            task = bar.add_task("epoch", total=None)

            def advance(total: int, steps: int) -> None:
                if steps == 0:
                    bar.reset(task, total=total)
                bar.advance(task, steps)

            result = pretrain(
                config, log=lambda line: console.print(line, highlight=False, soft_wrap=True), progress=advance
            )
        last = result.stats[-1] if result.stats else {}
        if as_json:
            print_json({"checkpoint": result.checkpoint, "epoch": result.epoch, "last": last or None})
            return
        summary = f"DAMSM checkpoint: {result.checkpoint} (epoch {result.epoch})"
        if last:
            summary += f"  test R-precision {100 * last['r_precision']:.2f}% ± {100 * last['r_precision_std']:.2f}"
        out.print(summary, highlight=False, soft_wrap=True)

    @app.command("import-damsm")
    @user_errors
    def import_command(
        text_weights: Path = typer.Argument(
            ..., metavar="TEXT_WEIGHTS", help="AttnGAN's text_encoder*.pth (e.g. text_encoder200.pth)."
        ),
        image_weights: Path = typer.Argument(
            ..., metavar="IMAGE_WEIGHTS", help="AttnGAN's image_encoder*.pth (e.g. image_encoder200.pth)."
        ),
        data: Path = typer.Option(..., "--data", help="Prepared file, ideally built with --vocab captions.pickle."),
        out_file: Path = typer.Option(..., "--out", help="t2itool DAMSM checkpoint to write."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Convert AttnGAN's released DAMSM encoders into a t2itool checkpoint for DATA's vocabulary."""
        from t2itool.data.store import Store
        from t2itool.encoders.checkpoint import import_attngan

        store = Store(data)
        damsm = import_attngan(text_weights, image_weights, store, out_file)
        if as_json:
            print_json(
                {"checkpoint": str(out_file), "vocab_size": damsm.vocab_size, "backbone": damsm.backbone,
                 "vocab_sha256": damsm.vocab_sha256}
            )  # fmt: skip
            return
        out.print(
            f"wrote {out_file}: {damsm.vocab_size} words, backbone {damsm.backbone}, vocab sha256 "
            f"{damsm.vocab_sha256[:12]}",
            highlight=False,
            soft_wrap=True,
        )
