"""`t2itool info FILE [--json]`: validate a prepared file and print what it holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import typer

from t2itool.cli.common import JSON_HELP, out, print_json, user_errors
from t2itool.errors import T2IError


def describe(path: str | Path, examples: int = 3, verify: bool = False) -> dict[str, Any]:
    """Counts, sizes, hashes and a few decoded captions of a prepared file. Opening it checks its layout, dtypes and
    indices (`Store`); `verify` also recomputes the content hash from every stored byte."""
    from t2itool.data.store import Store

    store = Store(path)
    train, test = store.split_indices("train"), store.split_indices("test")
    counts = np.asarray(store.caption_counts)
    vocab = store.vocab
    if vocab.sha256 != store.vocab_sha256:
        raise T2IError(f"{path}: vocabulary hash mismatch: the file is damaged; re-run prep")
    verified = store.verify() if verify else None
    picks = np.linspace(0, store.num_captions - 1, num=min(examples, store.num_captions)).astype(int)
    return {
        "path": str(path),
        "source": store.source,
        "format_version": int(store.attrs["format_version"]),
        "images": store.num_images,
        "captions": store.num_captions,
        "train_images": int(len(train)),
        "test_images": int(len(test)),
        "train_captions": int(counts[train].sum()),
        "test_captions": int(counts[test].sum()),
        "vocab_size": len(vocab),
        "image_size": store.image_size,
        "image_format": store.image_format,
        "image_resize": store.image_resize,
        "classes": int(len(np.unique(store.class_ids))),
        "examples": [
            {
                "key": store.keys[store.caption_image(int(c))],
                "text": store.caption_text(int(c)),
                "decoded": vocab.decode(store.caption_tokens(int(c))),
            }
            for c in picks
        ],  # fmt: skip
        "caption_features": None if store.caption_features is None else asdict(store.caption_features),
        "vocab_sha256": store.vocab_sha256,
        "content_sha256": store.content_sha256,
        "t2itool_version": str(store.attrs.get("t2itool_version", "")),
        **({"verified": verified is not None} if verify else {}),
    }


def list_images(path: str | Path) -> Iterator[dict[str, Any]]:
    """One record per image in the file's order (the order `.npy` caption features follow): index, key, split and
    the stored captions in their order (the order of feature rows per image)."""
    from t2itool.data.store import Store

    store = Store(path)
    split_of = np.full(store.num_images, "", dtype=object)
    for split in ("train", "test"):
        split_of[store.split_indices(split)] = split
    for index in range(store.num_images):
        captions = [store.caption_text(c) for c in store.caption_indices(index)]
        yield {"index": index, "key": store.keys[index], "split": split_of[index], "captions": captions}


def features_line(features: dict[str, Any] | None) -> str:
    """One line about the stored caption features: name, widths, storage, source files, hash prefix."""
    if features is None:
        return "none"
    words = (
        f"words {features['max_tokens']} x {features['word_dim']}" if features["word_dim"] is not None else "no words"
    )
    return (
        f"{features['name']} (sentence {features['sentence_dim']}, {words}, {features['dtype']}) "
        f"from {features['source']}, sha256 {features['sha256'][:12]}"
    )


def register(app: typer.Typer) -> None:
    @app.command("info")
    @user_errors
    def info(
        file: Path = typer.Argument(..., help="A file written by `t2itool prep`.", metavar="FILE"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
        list_all: bool = typer.Option(
            False, "--list", help="Print one JSON line per image (index, key, split, captions) in the file's order."
        ),
        verify: bool = typer.Option(
            False, "--verify", help="Also recompute the content hash from every stored byte (reads the whole file)."
        ),
    ) -> None:
        """Check a prepared data file (layout, dtypes, indices; --verify: content hash) and print its counts,
        vocabulary, image size and hashes. A damaged file ends in one error line and exit code 2."""
        if list_all:
            for record in list_images(file):
                print(json.dumps(record, ensure_ascii=False))
            return
        details = describe(file, verify=verify)
        if as_json:
            print_json(details)
            return
        for key, value in details.items():
            if key == "examples":
                out.print("examples:")
                for example in value:
                    out.print(f"  {example['key']}: {example['text']}", markup=False, highlight=False)
            elif key == "caption_features":
                out.print(f"caption_features: {features_line(value)}", markup=False, highlight=False)
            else:
                out.print(f"{key}: {value}", markup=False, highlight=False)
