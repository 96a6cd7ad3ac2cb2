"""`t2itool info FILE [--json]`: validate a prepared file and print what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from t2itool.cli.common import out, user_errors
from t2itool.errors import T2IError


def describe(path: str | Path, examples: int = 3) -> dict[str, Any]:
    """Counts, sizes, hashes and a few decoded captions of a prepared file, after checking its consistency."""
    from t2itool.data.store import Store

    store = Store(path)
    train, test = store.split_indices("train"), store.split_indices("test")
    if (
        len(np.intersect1d(train, test))
        or (len(train) + len(test))
        and max(np.max(train, initial=-1), np.max(test, initial=-1)) >= store.num_images
    ):
        raise T2IError(f"{path}: split indices overlap or point outside the images; re-run prep")
    counts = [len(store.caption_indices(i)) for i in range(store.num_images)]
    if sum(counts) != store.num_captions:
        raise T2IError(f"{path}: caption counts disagree with the caption table; re-run prep")
    vocab = store.vocab
    if vocab.sha256 != store.vocab_sha256:
        raise T2IError(f"{path}: vocabulary hash mismatch; the file is damaged, re-run prep")
    picks = np.linspace(0, store.num_captions - 1, num=min(examples, store.num_captions)).astype(int)
    return {
        "path": str(path),
        "source": store.source,
        "format_version": int(store.attrs["format_version"]),
        "images": store.num_images,
        "captions": store.num_captions,
        "train_images": int(len(train)),
        "test_images": int(len(test)),
        "train_captions": int(sum(counts[i] for i in train)),
        "test_captions": int(sum(counts[i] for i in test)),
        "vocab_size": len(vocab),
        "image_size": store.image_size,
        "image_format": store.image_format,
        "classes": int(len(np.unique(store.class_ids))),
        "examples": [
            {
                "key": store.keys[store.caption_image(int(c))],
                "text": store.caption_text(int(c)),
                "decoded": vocab.decode(store.caption_tokens(int(c))),
            }
            for c in picks
        ],  # fmt: skip
        "vocab_sha256": store.vocab_sha256,
        "content_sha256": store.content_sha256,
        "t2itool_version": str(store.attrs.get("t2itool_version", "")),
    }


def register(app: typer.Typer) -> None:
    @app.command("info")
    @user_errors
    def info(
        file: Path = typer.Argument(..., help="A file written by `t2itool prep`."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    ) -> None:
        """Validate a prepared data file and print its counts, vocabulary, image size and hashes."""
        details = describe(file)
        if as_json:
            out.print_json(json.dumps(details))
            return
        for key, value in details.items():
            if key == "examples":
                out.print("examples:")
                for example in value:
                    out.print(f"  {example['key']}: {example['text']}", markup=False, highlight=False)
            else:
                out.print(f"{key}: {value}", markup=False, highlight=False)
