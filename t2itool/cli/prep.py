"""`t2itool prep {cub,coco,folder,shapes}`: turn a dataset into one HDF5 file (see docs/data-format.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from t2itool.cli.common import JSON_HELP, WORKERS_HELP, console, print_json, sigterm_like_ctrl_c, user_errors
from t2itool.data.prepare import PrepSummary

PREP_TERMINATED = "nothing was written (the temporary file was removed)"


prep_app = typer.Typer(help="Prepare a dataset as one HDF5 file.", no_args_is_help=True, rich_markup_mode=None)

OUT = typer.Option(..., "--out", help="HDF5 file to write (written to a temporary file, then renamed).")
IMAGE_SIZE = typer.Option(
    304, "--image-size", help="Shorter side of the stored images (304 = the 256 crop's 76/64 margin)."
)
SQUARE = typer.Option(
    False, "--square", help="Store the centre square (bicubic) instead of the whole image with its aspect ratio."
)
IMAGE_FORMAT = typer.Option("raw", "--image-format", help="raw (uint8, fast to read) or jpeg (smaller).")
WORKERS = typer.Option(
    None, "--workers", help=f"{WORKERS_HELP} They decode, crop and resize (default: one per CPU core)."
)
AS_JSON = typer.Option(False, "--json", help=JSON_HELP)
STRICT = typer.Option(False, "--strict", help="Fail on the first unreadable image instead of skipping it.")
VOCAB = typer.Option(
    None,
    "--vocab",
    help="AttnGAN captions.pickle whose vocabulary (and token ids) to use (default: built from the captions).",
)
MIN_COUNT = typer.Option(0, "--min-word-count", help="Keep words seen at least this often (0 = all, as AttnGAN).")
FEATURES = typer.Option(
    None,
    "--caption-features",
    help="Precomputed per-caption text features to store: StackGAN's char-CNN-RNN-embeddings.pickle (a bare name is "
    "looked up in ROOT/train and ROOT/test), train=PATH,test=PATH, a keyed .npz/.h5 or a .npy in store order "
    "(docs/data-format.md) (default: none).",
)
FEATURES_DTYPE = typer.Option(
    "float32", "--caption-features-dtype", help="Storage of the caption features: float32 or float16 (half the size)."
)


def _options(
    image_size: int,
    image_format: str,
    vocab: Path | None,
    min_word_count: int,
    workers: int | None,
    strict: bool,
    caption_features: str | None = None,
    caption_features_dtype: str = "float32",
    square: bool = False,
) -> dict[str, Any]:
    """The shared flags as PrepOptions fields, with the imported vocabulary loaded."""
    from t2itool.data.text import load_attngan_vocabulary
    from t2itool.errors import T2IError

    if vocab is not None and min_word_count:
        raise T2IError("--min-word-count cannot be combined with --vocab (the imported vocabulary is used as is)")
    return {
        "image_size": image_size,
        "image_format": image_format,
        "vocab": None if vocab is None else load_attngan_vocabulary(vocab),
        "min_word_count": min_word_count,
        "workers": workers,
        "strict": strict,
        "caption_features": caption_features,
        "caption_features_dtype": caption_features_dtype,
        "square": square,
    }


def report(summary: PrepSummary, as_json: bool = False) -> None:
    if as_json:
        print_json(summary.as_dict())
        return
    splits = ", ".join(f"{name} {count}" for name, count in summary.split_images.items())
    side = summary.image_size
    shape = f"{side}x{side} px squares" if summary.square else f"shorter side {side} px"
    console.print(
        f"wrote {summary.out}: {summary.images} images ({splits}), {summary.captions} captions, "
        f"vocabulary {summary.vocab_size}, {shape} {summary.image_format}, "
        f"{summary.images / max(summary.seconds, 1e-9):.0f} images/s",
        highlight=False,
    )
    if summary.unknown_words:
        console.print(f"[yellow]{summary.unknown_words} tokens not in the imported vocabulary were dropped[/]")
    if summary.short_images:
        console.print(f"[yellow]{summary.short_images} images have fewer captions than usual[/]")
    if summary.failed:
        console.print(f"[yellow]skipped {len(summary.failed)} unreadable images:[/]")
        for key, reason in summary.failed[:20]:
            console.print(f"  {key}: {reason}", highlight=False, markup=False)
        if len(summary.failed) > 20:
            console.print(f"  ... and {len(summary.failed) - 20} more")


@prep_app.command("cub")
@user_errors
@sigterm_like_ctrl_c(PREP_TERMINATED)
def prep_cub(
    root: Path = typer.Argument(
        ..., metavar="ROOT", help="AttnGAN's birds folder (CUB_200_2011/, text/, train/, test/)."
    ),
    out: Path = OUT,
    image_size: int = IMAGE_SIZE,
    image_format: str = IMAGE_FORMAT,
    vocab: Path | None = VOCAB,
    min_word_count: int = MIN_COUNT,
    workers: int | None = WORKERS,
    strict: bool = STRICT,
    caption_features: str | None = FEATURES,
    caption_features_dtype: str = FEATURES_DTYPE,
    square: bool = SQUARE,
    as_json: bool = AS_JSON,
) -> None:
    """CUB-200-2011 in AttnGAN's layout, with its bounding-box crop."""
    from t2itool.data.sources.cub import build_cub

    options = _options(
        image_size,
        image_format,
        vocab,
        min_word_count,
        workers,
        strict,
        caption_features,
        caption_features_dtype,
        square,
    )
    report(build_cub(root, out, **options), as_json)


@prep_app.command("coco")
@user_errors
@sigterm_like_ctrl_c(PREP_TERMINATED)
def prep_coco(
    root: Path = typer.Argument(..., metavar="ROOT", help="AttnGAN's coco folder or the official 2014 release."),
    out: Path = OUT,
    image_size: int = IMAGE_SIZE,
    image_format: str = IMAGE_FORMAT,
    vocab: Path | None = VOCAB,
    min_word_count: int = MIN_COUNT,
    workers: int | None = WORKERS,
    strict: bool = STRICT,
    caption_features: str | None = FEATURES,
    caption_features_dtype: str = FEATURES_DTYPE,
    square: bool = SQUARE,
    as_json: bool = AS_JSON,
) -> None:
    """COCO-2014 (train2014 = train, val2014 = test), first 5 valid captions per image."""
    from t2itool.data.sources.coco import build_coco

    options = _options(
        image_size,
        image_format,
        vocab,
        min_word_count,
        workers,
        strict,
        caption_features,
        caption_features_dtype,
        square,
    )
    report(build_coco(root, out, **options), as_json)


@prep_app.command("folder")
@user_errors
@sigterm_like_ctrl_c(PREP_TERMINATED)
def prep_folder(
    root: Path = typer.Argument(..., metavar="ROOT", help="Images with same-named .txt captions, or a captions.jsonl."),
    out: Path = OUT,
    split_file: Path | None = typer.Option(
        None, "--split", help="File of '<image key> train|test' lines (default: a seeded 90/10 split)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the 90/10 split when no --split is given."),
    image_size: int = IMAGE_SIZE,
    image_format: str = IMAGE_FORMAT,
    vocab: Path | None = VOCAB,
    min_word_count: int = MIN_COUNT,
    workers: int | None = WORKERS,
    strict: bool = STRICT,
    caption_features: str | None = FEATURES,
    caption_features_dtype: str = FEATURES_DTYPE,
    square: bool = SQUARE,
    as_json: bool = AS_JSON,
) -> None:
    """Your own captioned images."""
    from t2itool.data.sources.folder import build_folder

    options = _options(
        image_size,
        image_format,
        vocab,
        min_word_count,
        workers,
        strict,
        caption_features,
        caption_features_dtype,
        square,
    )
    report(build_folder(root, out, split_file=split_file, seed=seed, **options), as_json)


@prep_app.command("shapes")
@user_errors
@sigterm_like_ctrl_c(PREP_TERMINATED)
def prep_shapes(
    out: Path = OUT,
    num_images: int = typer.Option(2048, "--num-images", help="How many images to draw."),
    seed: int = typer.Option(0, "--seed", help="Everything (shapes, captions, split) follows from it."),
    image_size: int = typer.Option(304, "--image-size", help="Stored size (304 for 256 crops, 76 for 64 crops)."),
    image_format: str = IMAGE_FORMAT,
    workers: int = typer.Option(
        0, "--workers", help=f"{WORKERS_HELP} They draw (drawing is cheap: 0 is usually fastest)."
    ),
    caption_features: str | None = FEATURES,
    caption_features_dtype: str = FEATURES_DTYPE,
    as_json: bool = AS_JSON,
) -> None:
    """The built-in coloured-shapes dataset (the demo's and the tests')."""
    from t2itool.data.sources.shapes import build_shapes

    summary = build_shapes(
        out, num_images, image_size, seed, workers, image_format, show_progress=True,
        caption_features=caption_features, caption_features_dtype=caption_features_dtype,
    )  # fmt: skip
    report(summary, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(prep_app, name="prep")
