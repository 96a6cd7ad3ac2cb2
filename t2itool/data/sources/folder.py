"""A user's own captioned images: `<name>.txt` beside each image (one caption per line) or one `captions.jsonl`
of {"image": relpath, "captions": [...]}; an optional split file, else a seeded 90/10 train/test split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from t2itool.data.prepare import (
    PrepOptions,
    PrepSummary,
    SourceItem,
    load_image_file,
    require_dir,
    require_file,
    run_prep,
)
from t2itool.data.sources.cub import read_text
from t2itool.errors import T2IError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TEST_FRACTION = 0.1


def _read_split(path: Path, keys: list[str]) -> dict[str, str]:
    """Split file: one `<key> <train|test>` per line."""
    known = set(keys)
    split = {}
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("train", "test"):
            raise T2IError(f"{path}:{number}: expected '<image key> train|test'")
        if parts[0] not in known:
            raise T2IError(f"{path}:{number}: unknown image {parts[0]!r}")
        split[parts[0]] = parts[1]
    missing = [key for key in keys if key not in split]
    if missing:
        raise T2IError(f"{path}: no split given for {len(missing)} images (first: {missing[0]})")
    return split


def folder_items(
    root: str | os.PathLike, split_file: str | os.PathLike | None = None, seed: int = 0
) -> list[SourceItem]:
    root = require_dir(root, "images with captions (<name>.txt per image, or captions.jsonl)")
    entries: list[tuple[str, Path, list[str], str]] = []  # key, image, captions, caption source
    jsonl = root / "captions.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(read_text(jsonl).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, captions = record["image"], record["captions"]
            except (ValueError, KeyError, TypeError):
                raise T2IError(
                    f'{jsonl}:{number}: expected {{"image": "relative/path.jpg", "captions": [...]}}'
                ) from None
            if not isinstance(image, str) or not image.strip():
                raise T2IError(f'{jsonl}:{number}: "image" is {image!r}; expected a relative path (a string)')
            if not isinstance(captions, list) or not all(isinstance(text, str) for text in captions):
                raise T2IError(f"{jsonl}:{number}: captions must be a list of strings")
            if any("\x00" in text for text in captions):
                raise T2IError(f"{jsonl}:{number}: a caption holds a NUL character")
            key = str(Path(image).with_suffix("")).replace(os.sep, "/")
            entries.append((key, root / image, captions, f"{jsonl}:{number}"))
    else:
        for image in sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES):
            text_file = image.with_suffix(".txt")
            if not text_file.is_file():
                raise T2IError(f"{text_file}: no such file (captions of {image.name}, one per line)")
            key = str(image.relative_to(root).with_suffix("")).replace(os.sep, "/")
            entries.append((key, image, read_text(text_file).split("\n"), str(text_file)))
    if not entries:
        raise T2IError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) and no captions.jsonl")
    keys = [entry[0] for entry in entries]
    if len(set(keys)) != len(keys):
        raise T2IError(f"{root}: two images share a name without extension; rename one")
    if split_file is not None:
        split = _read_split(require_file(split_file, "'<image key> train|test' lines"), keys)
    else:
        order = np.random.default_rng([seed, 0x5B117]).permutation(len(keys))
        num_test = round(len(keys) * TEST_FRACTION)
        test = {keys[int(index)] for index in order[:num_test]}
        split = {key: "test" if key in test else "train" for key in keys}
    return [
        SourceItem(key, captions, index, split[key], load_image_file, (str(image), None), source)
        for index, (key, image, captions, source) in enumerate(entries)
    ]


def build_folder(
    root: str | os.PathLike,
    out: str | os.PathLike,
    split_file: str | os.PathLike | None = None,
    seed: int = 0,
    **options: Any,
) -> PrepSummary:
    """`prep folder`: `split_file` lines are '<image key> train|test', else a 90/10 split seeded by `seed`;
    `options` are PrepOptions fields."""
    opts = PrepOptions(**options)
    items = folder_items(root, split_file, seed)
    return run_prep(items, out, opts, source="folder", extra_attrs={"seed": seed})
