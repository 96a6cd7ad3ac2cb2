"""The streaming writer of a prepared-data file: images one by one, then captions, vocabulary, splits, caption features
and the root attributes, hashing everything in the order docs/data-format.md gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from t2itool import __version__
from t2itool.data.features import FeatureFiles
from t2itool.data.schema import (
    BYTES_DTYPE,
    FEATURES_GROUP,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_FORMATS,
    SPLITS,
    STR_DTYPE,
    ContentHash,
    features_hash,
    raw_dataset_name,
)
from t2itool.data.text import TOKENIZER_NAME, Vocabulary
from t2itool.errors import T2IError
from t2itool.fileio import GuardedFile


@dataclass
class StoreMetadata:
    """Everything except the images, for the images in the order they were added to the writer."""

    source: str
    keys: list[str]
    class_ids: list[int]
    captions: list[list[str]]  # caption texts per image
    caption_ids: list[list[list[int]]]  # token ids per caption per image (full length)
    vocab: Vocabulary
    splits: dict[str, list[int]]  # split name -> image indices
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    features: FeatureFiles | None = None  # precomputed caption features (`prep --caption-features`)
    feature_rows: list[tuple[int, int]] | None = None  # (file, row) of every image in `features`


class StoreWriter:
    """Streams images into `path` (normally a temporary file) and hashes everything it stores, in order.

    Images keep their aspect ratio (shorter side = `image_size`) unless `square`, where they are `image_size` squares.
    Raw images go into one dataset per shape, `images/raw/{H}x{W}` (n, H, W, 3) with one chunk per image, so reading
    an image is one whole-chunk read (as fast as the older single square array); JPEG bytes into `images/jpeg`.
    """

    def __init__(
        self, path: str | os.PathLike, image_size: int, image_format: str = "raw", square: bool = False
    ) -> None:
        if image_format not in IMAGE_FORMATS:
            raise T2IError(f"--image-format {image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
        self.image_size = int(image_size)
        self.image_format = image_format
        self.square = bool(square)
        self.num_images = 0
        self._hash = ContentHash()
        self._heights: list[int] = []
        self._widths: list[int] = []
        self._slots: list[int] = []
        self._by_shape: dict[tuple[int, int], h5py.Dataset] = {}
        self._closed = False
        # HDF5 writes through a GuardedFile: a failed write (disk full) is recorded and reported by `_check`, never
        # seen by HDF5, which would otherwise crash at process exit. track_times=False everywhere: the file bytes
        # depend only on the content, not on when it was written.
        self._sink = GuardedFile(path)
        try:
            self._file = h5py.File(self._sink, "w", libver=("earliest", "v110"), track_order=False)
        except BaseException:
            self._sink.close()
            raise
        if image_format == "jpeg":
            self._jpeg = self._file.create_dataset(
                "images/jpeg", shape=(0,), maxshape=(None,), dtype=BYTES_DTYPE, chunks=(256,), track_times=False
            )

    def check_shape(self, height: int, width: int) -> None:
        size = self.image_size
        if (self.square and (height, width) != (size, size)) or (not self.square and min(height, width) != size):
            expected = f"{size} x {size}" if self.square else f"a shorter side of {size}"
            raise ValueError(f"image {self.num_images}: {height} x {width}, expected {expected}")

    def add_image(self, image: np.ndarray | bytes, height: int | None = None, width: int | None = None) -> int:
        """Append one image: uint8 (H, W, 3) for raw; JPEG bytes and the decoded `height`, `width` for jpeg."""
        index = self.num_images
        if self.image_format == "raw":
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {index}: shape {image.shape}, expected (H, W, 3)")
            height, width = image.shape[:2]
            self.check_shape(height, width)
            payload = image.tobytes()
            dataset = self._by_shape.get((height, width))
            if dataset is None:
                dataset = self._file.create_dataset(
                    raw_dataset_name(height, width), shape=(0, height, width, 3), maxshape=(None, height, width, 3),
                    dtype=np.uint8, chunks=(1, height, width, 3), track_times=False,
                )  # fmt: skip
                self._by_shape[(height, width)] = dataset
            slot = dataset.shape[0]
            dataset.resize(slot + 1, axis=0)
            dataset[slot] = image
            self._slots.append(slot)
        else:
            if height is None or width is None:
                raise ValueError("jpeg images need their height and width")
            self.check_shape(height, width)
            payload = bytes(image)
            self._jpeg.resize((index + 1,))
            self._jpeg[index] = np.frombuffer(payload, dtype=np.uint8)
        self._check()
        self._hash.image(payload)
        self._heights.append(int(height))
        self._widths.append(int(width))
        self.num_images += 1
        return index

    def _array(self, name: str, values: np.ndarray) -> None:
        self._hash.array(name, values)
        self._file.create_dataset(name, data=values, track_times=False)

    def _strings(self, name: str, values: list[str]) -> None:
        self._hash.strings(name, values)
        self._file.create_dataset(name, data=np.array(values, dtype=object), dtype=STR_DTYPE, track_times=False)

    def finish(self, meta: StoreMetadata) -> str:
        """Write captions, splits, vocabulary, features and root attributes; close; return the content sha256."""
        num = self.num_images
        if not (len(meta.keys) == len(meta.class_ids) == len(meta.captions) == len(meta.caption_ids) == num):
            raise ValueError("metadata lengths disagree with the number of images written")
        if self.image_format == "raw":  # not hashed: the pixels are, and the slots follow from the shapes
            self._file.create_dataset("images/slots", data=np.asarray(self._slots, np.int64), track_times=False)
        self._array("images/heights", np.asarray(self._heights, dtype=np.int32))
        self._array("images/widths", np.asarray(self._widths, dtype=np.int32))
        counts = np.array([len(ids) for ids in meta.caption_ids], dtype=np.int32)
        first = np.zeros(num, dtype=np.int64)
        first[1:] = np.cumsum(counts)[:-1]
        flat_captions = [ids for per_image in meta.caption_ids for ids in per_image]
        lengths = np.array([len(ids) for ids in flat_captions], dtype=np.int32)
        offsets = np.zeros(len(flat_captions), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths, dtype=np.int64)[:-1]
        tokens = np.fromiter((t for ids in flat_captions for t in ids), dtype=np.int32, count=int(lengths.sum()))
        if tokens.size and (tokens.min() <= 0 or tokens.max() >= len(meta.vocab)):
            raise ValueError("token ids outside 1..vocab_size-1")
        self._array("captions/tokens", tokens)
        self._array("captions/offsets", offsets)
        self._array("captions/lengths", lengths)
        self._array("captions/image", np.repeat(np.arange(num, dtype=np.int32), counts))
        self._strings("captions/text", [text for per_image in meta.captions for text in per_image])
        self._array("image_captions/first", first)
        self._array("image_captions/count", counts)
        self._array("class_ids", np.asarray(meta.class_ids, dtype=np.int32).reshape(num))
        self._strings("keys", meta.keys)
        self._strings("vocab", meta.vocab.words)
        for split in SPLITS:
            self._array(f"splits/{split}", np.asarray(sorted(meta.splits.get(split, [])), dtype=np.int64))
        if meta.features is not None:
            assert meta.feature_rows is not None and len(meta.feature_rows) == num
            self._features(meta.features, meta.feature_rows, counts)
        content = self._hash.hexdigest()
        attrs = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "source": meta.source,
            "tokenizer": TOKENIZER_NAME,
            "image_size": self.image_size,
            "image_format": self.image_format,
            "image_resize": "centre-square" if self.square else "shorter-side",
            "vocab_size": len(meta.vocab),
            "vocab_sha256": meta.vocab.sha256,
            "content_sha256": content,
            "t2itool_version": __version__,
            **meta.extra_attrs,
        }
        for name in sorted(attrs):
            self._file.attrs[name] = attrs[name]
        self._check()
        self.close()
        self._check()  # the close flushes everything HDF5 still held
        return content

    def _features(self, files: FeatureFiles, rows: list[tuple[int, int]], counts: np.ndarray) -> None:
        """The `caption_features` group: one row per caption, in caption order; hashed image by image."""
        total, dtype = int(counts.sum()), np.dtype(files.dtype)
        group = self._file.create_group(FEATURES_GROUP, track_order=False)
        row_bytes = files.sentence_dim * dtype.itemsize
        sentence = group.create_dataset(
            "sentence", shape=(total, files.sentence_dim), dtype=dtype, track_times=False,
            chunks=(max(1, min(total, (64 << 10) // row_bytes)), files.sentence_dim),
        )  # fmt: skip
        words = lengths = None
        if files.word_dim is not None:
            shape = (total, files.max_tokens, files.word_dim)
            words = group.create_dataset("words", shape=shape, dtype=dtype, chunks=(1, *shape[1:]), track_times=False)
            lengths = np.zeros(total, dtype=np.int32)
        digest = features_hash(files.sentence_dim, files.word_dim, files.max_tokens, dtype, total)
        start = 0
        for where in rows:
            sentence_rows, word_rows, word_lengths = files.image_rows(where)
            stop = start + len(sentence_rows)
            sentence_rows = sentence_rows.astype(dtype)
            sentence[start:stop] = sentence_rows
            digest.update(sentence_rows.tobytes())
            if words is not None:
                word_rows = word_rows.astype(dtype)
                words[start:stop] = word_rows
                lengths[start:stop] = word_lengths
                digest.update(word_rows.tobytes())
                digest.update(word_lengths.astype("<i4").tobytes())
            start = stop
        if lengths is not None:
            group.create_dataset("word_lengths", data=lengths, track_times=False)
        sha = digest.hexdigest()
        self._hash.features(sha)
        attrs = {
            "name": files.name,
            "source": files.source,
            "sentence_dim": files.sentence_dim,
            "word_dim": files.word_dim or 0,
            "max_tokens": files.max_tokens or 0,
            "dtype": dtype.name,
            "sha256": sha,
        }
        for name in sorted(attrs):
            group.attrs[name] = attrs[name]

    def _check(self) -> None:
        """Raise the first write error of the underlying file (an OSError: disk full, file-size limit, ...)."""
        self._sink.raise_error()

    def close(self) -> None:
        """Close the file once (writes cannot fail inside HDF5, see GuardedFile; a second close is never tried)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            self._sink.close()
