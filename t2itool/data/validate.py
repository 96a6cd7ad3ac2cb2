"""Checks of a prepared-data file: `check_file` runs when a `Store` opens it (attributes, layout, dtypes, shapes and
the values every reader indexes with: counts, offsets, token ids, splits, image shapes); `verify_content` recomputes
the content hash (`t2itool info --verify`). Each failure is one T2IError naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from t2itool.data.schema import (
    ARRAYS,
    FEATURE_ATTRS,
    FEATURES_GROUP,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_FORMATS,
    IMAGE_RESIZES,
    ROOT_ATTRS,
    ContentHash,
    features_hash,
    raw_dataset_name,
)
from t2itool.errors import T2IError

_DAMAGED = "re-run prep (the file is damaged or was not written by this t2itool)"


class _Checker:
    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path, self.file = path, file

    def fail(self, what: str) -> None:
        raise T2IError(f"{self.path}: {what}; {_DAMAGED}")

    def dataset(self, name: str, dtype: str | np.dtype, ndim: int, length: int | None = None) -> h5py.Dataset:
        obj = self.file.get(name)
        if not isinstance(obj, h5py.Dataset):
            self.fail(f"dataset {name!r} is missing")
        if obj.ndim != ndim:
            self.fail(f"dataset {name!r} has {obj.ndim} dimensions, expected {ndim}")
        if dtype == "str":
            if h5py.check_string_dtype(obj.dtype) is None:
                self.fail(f"dataset {name!r} is {obj.dtype}, expected UTF-8 strings")
        elif dtype == "bytes":
            if h5py.check_vlen_dtype(obj.dtype) != np.dtype(np.uint8):
                self.fail(f"dataset {name!r} is {obj.dtype}, expected variable-length bytes")
        elif obj.dtype != np.dtype(dtype):
            self.fail(f"dataset {name!r} is {obj.dtype}, expected {np.dtype(dtype)}")
        if length is not None and obj.shape[0] != length:
            self.fail(f"dataset {name!r} has {obj.shape[0]} entries, expected {length}")
        return obj


def _int_attr(check: _Checker, attrs: Any, name: str, minimum: int = 0) -> int:
    value = attrs.get(name)
    try:
        number = int(value)
        if number != value and not isinstance(value, (bytes, str)):
            raise ValueError
    except (TypeError, ValueError):
        check.fail(f"attribute {name!r} = {value!r} is not a whole number")
    if number < minimum:
        check.fail(f"attribute {name!r} = {number} is below {minimum}")
    return number


def _text_attr(attrs: Any, name: str) -> str | None:
    value = attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def check_file(path: Path, file: h5py.File, cache: dict[str, Any]) -> dict[str, Any]:
    """Check everything a reader relies on; returns the root attributes as plain Python values. The small arrays read
    on the way are left in `cache` (the Store's per-process cache) so checking costs no second read."""
    check = _Checker(path, file)
    attrs = file.attrs
    if _text_attr(attrs, "format") != FORMAT_NAME:
        raise T2IError(f"{path}: not a t2itool data file (run `t2itool prep ... --out {path.name}`)")
    version = attrs.get("format_version")
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise T2IError(f"{path}: data format version {version!r} is not a number; {_DAMAGED}") from None
    if version != FORMAT_VERSION:
        raise T2IError(f"{path}: data format version {version}, this t2itool reads {FORMAT_VERSION}; re-run prep")
    for name in ROOT_ATTRS:
        if name not in attrs:
            check.fail(f"attribute {name!r} is missing")
    image_format, image_resize = _text_attr(attrs, "image_format"), _text_attr(attrs, "image_resize")
    if image_format not in IMAGE_FORMATS:
        check.fail(f"image_format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if image_resize not in IMAGE_RESIZES:
        check.fail(f"image_resize {image_resize!r} is not one of {', '.join(IMAGE_RESIZES)}")
    image_size = _int_attr(check, attrs, "image_size", 1)
    vocab_size = _int_attr(check, attrs, "vocab_size", 1)
    for name in ("source", "vocab_sha256", "content_sha256", "tokenizer"):
        if _text_attr(attrs, name) is None:
            check.fail(f"attribute {name!r} is not text")

    def small(name: str) -> np.ndarray:
        cache[name] = file[name][()]
        return cache[name]

    # Shapes and dtypes of every dataset.
    num_images = check.dataset("image_captions/count", ARRAYS["image_captions/count"], 1).shape[0]
    num_captions = check.dataset("captions/lengths", ARRAYS["captions/lengths"], 1).shape[0]
    per_image = ("images/heights", "images/widths", "image_captions/first", "class_ids", "keys")
    per_caption = ("captions/offsets", "captions/image", "captions/text")
    for name, dtype in ARRAYS.items():
        length = num_images if name in per_image else num_captions if name in per_caption else None
        check.dataset(name, dtype, 1, length)
    check.dataset("vocab", "str", 1, vocab_size)
    if image_format == "raw":
        check.dataset("images/slots", "<i8", 1, num_images)
    else:
        check.dataset("images/jpeg", "bytes", 1, num_images)

    # Values every reader indexes with.
    counts, first = small("image_captions/count"), small("image_captions/first")
    if num_images and counts.min() < 1:
        check.fail("an image has no caption")
    expected_first = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]]) if num_images else first
    if int(counts.sum(dtype=np.int64)) != num_captions or not np.array_equal(first, expected_first):
        check.fail("image_captions/first and count disagree with the caption table")
    if not np.array_equal(small("captions/image"), np.repeat(np.arange(num_images, dtype=np.int32), counts)):
        check.fail("captions/image disagrees with image_captions")
    tokens, offsets, lengths = small("captions/tokens"), small("captions/offsets"), small("captions/lengths")
    if num_captions and (lengths.min() < 1 or offsets.min() < 0 or (offsets + lengths).max() > len(tokens)):
        check.fail("caption offsets/lengths point outside captions/tokens")
    if len(tokens) and (tokens.min() < 1 or tokens.max() >= vocab_size):
        check.fail(f"token ids outside 1..{vocab_size - 1} (vocab_size)")
    train, test = small("splits/train"), small("splits/test")
    for split, indices in (("train", train), ("test", test)):
        if len(indices) and (indices.min() < 0 or indices.max() >= num_images or np.any(np.diff(indices) <= 0)):
            check.fail(f"splits/{split} holds indices outside 0..{num_images - 1} or unsorted/repeated ones")
    if len(np.intersect1d(train, test)):
        check.fail("an image is in both splits")
    heights, widths = small("images/heights"), small("images/widths")
    if num_images:
        shorter = np.minimum(heights, widths)
        square = image_resize == "centre-square"
        if (square and (heights.min() != image_size or heights.max() != image_size or widths.max() != image_size
                        or widths.min() != image_size)) or (not square and np.any(shorter != image_size)):  # fmt: skip
            check.fail(f"image sizes disagree with image_size {image_size} ({image_resize})")
    if image_format == "raw" and num_images:
        slots = small("images/slots")
        shapes, group = np.unique(np.stack([heights, widths], axis=1), axis=0, return_inverse=True)
        group = group.reshape(-1)
        lowest = np.full(len(shapes), np.iinfo(np.int64).max)
        highest = np.full(len(shapes), -1, dtype=np.int64)
        np.minimum.at(lowest, group, slots)
        np.maximum.at(highest, group, slots)
        for (height, width), low, high in zip(shapes, lowest, highest, strict=True):
            name = raw_dataset_name(int(height), int(width))
            dataset = file.get(name)
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype != np.uint8:
                check.fail(f"dataset {name!r} is missing or not uint8")
            if dataset.shape[1:] != (height, width, 3):
                check.fail(f"dataset {name!r} has shape {dataset.shape}, expected (n, {height}, {width}, 3)")
            if low < 0 or high >= dataset.shape[0]:
                check.fail(f"images/slots point outside {name!r}")
    if FEATURES_GROUP in file:
        _check_features(check, file, num_captions, cache)
    return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in sorted(attrs.items())}


def _check_features(check: _Checker, file: h5py.File, num_captions: int, cache: dict[str, Any]) -> None:
    group = file[FEATURES_GROUP]
    if not isinstance(group, h5py.Group):
        check.fail(f"{FEATURES_GROUP!r} is not a group")
    for name in FEATURE_ATTRS:
        if name not in group.attrs:
            check.fail(f"caption feature attribute {name!r} is missing")
    dtype = _text_attr(group.attrs, "dtype")
    if dtype not in ("float32", "float16"):
        check.fail(f"caption features dtype {dtype!r} is not float32 or float16")
    sentence_dim = _int_attr(check, group.attrs, "sentence_dim", 1)
    word_dim = _int_attr(check, group.attrs, "word_dim")
    max_tokens = _int_attr(check, group.attrs, "max_tokens")
    sentence = check.dataset(f"{FEATURES_GROUP}/sentence", dtype, 2, num_captions)
    if sentence.shape[1] != sentence_dim:
        check.fail(f"caption features are {sentence.shape[1]} wide, sentence_dim says {sentence_dim}")
    if word_dim:
        words = check.dataset(f"{FEATURES_GROUP}/words", dtype, 3, num_captions)
        if words.shape[1:] != (max_tokens, word_dim):
            check.fail(f"word features {words.shape[1:]} disagree with (max_tokens, word_dim) {(max_tokens, word_dim)}")
        check.dataset(f"{FEATURES_GROUP}/word_lengths", "<i4", 1, num_captions)
        lengths = file[f"{FEATURES_GROUP}/word_lengths"][()]
        cache[f"{FEATURES_GROUP}/word_lengths"] = lengths
        if len(lengths) and (lengths.min() < 0 or lengths.max() > max_tokens):
            check.fail(f"word lengths outside 0..{max_tokens}")


def verify_content(store: Any) -> dict[str, Any]:
    """Recompute the content hash (every image, caption, split and feature) and compare it with the stored one."""
    path, file = store.path, store._file()
    try:
        digest = ContentHash()
        for index in range(store.num_images):
            digest.image(store.image_bytes(index))
        for name, dtype in ARRAYS.items():
            if dtype == "str":
                digest.strings(name, [str(value) for value in file[name].asstr()[()]])
            else:
                digest.array(name, np.ascontiguousarray(file[name][()], dtype=np.dtype(dtype)))
        features_sha = None
        if store.caption_features is not None:
            features_sha = _features_sha(store, file)
            if features_sha != store.caption_features.sha256:
                raise T2IError(
                    f"{path}: caption features hash mismatch (stored {store.caption_features.sha256[:12]}, computed "
                    f"{features_sha[:12]}): the file is damaged; re-run prep"
                )
            digest.features(features_sha)
        computed = digest.hexdigest()
    except (OSError, ValueError, KeyError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise T2IError(f"{path}: cannot be read to the end ({message}): the file is damaged; re-run prep") from None
    if computed != store.content_sha256:
        raise T2IError(
            f"{path}: content hash mismatch (stored {store.content_sha256[:12]}, computed {computed[:12]}): "
            "the file is damaged; re-run prep"
        )
    if store.vocab.sha256 != store.vocab_sha256:
        raise T2IError(f"{path}: vocabulary hash mismatch: the file is damaged; re-run prep")
    return {"content_sha256": computed, "caption_features_sha256": features_sha}


def _features_sha(store: Any, file: h5py.File) -> str:
    info = store.caption_features
    dtype = np.dtype(info.dtype)
    sentence = file[f"{FEATURES_GROUP}/sentence"]
    words = file[f"{FEATURES_GROUP}/words"] if info.word_dim else None
    lengths = file[f"{FEATURES_GROUP}/word_lengths"][()] if info.word_dim else None
    digest = features_hash(info.sentence_dim, info.word_dim, info.max_tokens, dtype, store.num_captions)
    for image in range(store.num_images):
        captions = store.caption_indices(image)
        digest.update(np.ascontiguousarray(sentence[captions.start : captions.stop], dtype=dtype).tobytes())
        if words is not None:
            digest.update(np.ascontiguousarray(words[captions.start : captions.stop], dtype=dtype).tobytes())
            digest.update(lengths[captions.start : captions.stop].astype("<i4").tobytes())
    return digest.hexdigest()
