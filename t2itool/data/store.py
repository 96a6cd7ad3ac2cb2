"""The prepared-data HDF5 file: its schema, the streaming writer, and the lazy, picklable `Store` reader.

The format is documented in docs/data-format.md; bump FORMAT_VERSION on any change to it.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from t2itool import __version__
from t2itool.data.text import TOKENIZER_NAME, Vocabulary
from t2itool.errors import T2IError

FORMAT_NAME = "t2itool-captions"
FORMAT_VERSION = 1
IMAGE_FORMATS = ("raw", "jpeg")
SPLITS = ("train", "test")
JPEG_QUALITY = 95

_STR = h5py.string_dtype("utf-8")
_BYTES = h5py.vlen_dtype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
    """Deterministic JPEG bytes of a uint8 (H, W, 3) image (fixed quality, no metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def decode_jpeg(data: np.ndarray | bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


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


class StoreWriter:
    """Streams images into `path` (normally a temporary file) and hashes everything it stores, in order."""

    def __init__(self, path: str | os.PathLike, image_size: int, image_format: str = "raw") -> None:
        if image_format not in IMAGE_FORMATS:
            raise T2IError(f"--image-format {image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
        self.image_size = int(image_size)
        self.image_format = image_format
        self.num_images = 0
        self._digest = hashlib.sha256()
        # track_times=False everywhere: the file bytes depend only on the content, not on when it was written.
        self._file = h5py.File(path, "w", libver=("earliest", "v110"), track_order=False)
        size = self.image_size
        if image_format == "raw":
            self._images = self._file.create_dataset(
                "images", shape=(0, size, size, 3), maxshape=(None, size, size, 3), dtype=np.uint8,
                chunks=(1, size, size, 3), track_times=False,
            )  # fmt: skip
        else:
            self._images = self._file.create_dataset(
                "images", shape=(0,), maxshape=(None,), dtype=_BYTES, chunks=(256,), track_times=False
            )

    def add_image(self, image: np.ndarray | bytes) -> int:
        """Append one image: uint8 (S, S, 3) for raw, JPEG bytes for jpeg. Returns its index."""
        index = self.num_images
        if self.image_format == "raw":
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if image.shape != (self.image_size, self.image_size, 3):
                raise ValueError(
                    f"image {index}: shape {image.shape}, expected {(self.image_size, self.image_size, 3)}"
                )
            payload = image.tobytes()
            self._images.resize(index + 1, axis=0)
            self._images[index] = image
        else:
            payload = bytes(image)
            self._images.resize(index + 1, axis=0)
            self._images[index] = np.frombuffer(payload, dtype=np.uint8)
        self._digest.update(len(payload).to_bytes(8, "little"))
        self._digest.update(payload)
        self.num_images += 1
        return index

    def _array(self, name: str, values: np.ndarray) -> None:
        self._digest.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
        self._digest.update(np.ascontiguousarray(values).tobytes())
        self._file.create_dataset(name, data=values, track_times=False)

    def _strings(self, name: str, values: list[str]) -> None:
        encoded = [value.encode("utf-8") for value in values]
        self._digest.update(f"{name}:str:{len(values)}".encode())
        for value in encoded:
            self._digest.update(len(value).to_bytes(8, "little"))
            self._digest.update(value)
        self._file.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR, track_times=False)

    def finish(self, meta: StoreMetadata) -> str:
        """Write captions, splits, vocabulary and root attributes; close; return the content sha256."""
        num = self.num_images
        if not (len(meta.keys) == len(meta.class_ids) == len(meta.captions) == len(meta.caption_ids) == num):
            raise ValueError("metadata lengths disagree with the number of images written")
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
        content = self._digest.hexdigest()
        attrs = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "source": meta.source,
            "tokenizer": TOKENIZER_NAME,
            "image_size": self.image_size,
            "image_format": self.image_format,
            "vocab_size": len(meta.vocab),
            "vocab_sha256": meta.vocab.sha256,
            "content_sha256": content,
            "t2itool_version": __version__,
            **meta.extra_attrs,
        }
        for name in sorted(attrs):
            self._file.attrs[name] = attrs[name]
        self._file.close()
        return content

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


class Store:
    """Read-only view of a prepared file, opened lazily once per process, so it pickles into DataLoader workers."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise T2IError(f"{self.path}: no such file (expected a file written by `t2itool prep`)")
        self._handle: h5py.File | None = None
        self._pid = -1
        self._cache: dict[str, Any] = {}
        file = self._file()
        if file.attrs.get("format") != FORMAT_NAME:
            raise T2IError(f"{self.path}: not a t2itool data file (run `t2itool prep ... --out {self.path.name}`)")
        version = int(file.attrs["format_version"])
        if version != FORMAT_VERSION:
            raise T2IError(
                f"{self.path}: data format version {version}, this t2itool reads {FORMAT_VERSION}; re-run prep"
            )
        self.attrs: dict[str, Any] = {
            k: (v.item() if isinstance(v, np.generic) else v) for k, v in sorted(file.attrs.items())
        }
        self.image_size: int = int(self.attrs["image_size"])
        self.image_format: str = str(self.attrs["image_format"])
        self.source: str = str(self.attrs["source"])
        self.vocab_sha256: str = str(self.attrs["vocab_sha256"])
        self.content_sha256: str = str(self.attrs["content_sha256"])
        self.num_images: int = int(file["image_captions/count"].shape[0])
        self.num_captions: int = int(file["captions/lengths"].shape[0])

    def _file(self) -> h5py.File:
        # A handle opened before a fork must not be shared with the child: reopen in every new process.
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise T2IError(f"{self.path}: cannot be opened as HDF5 ({exc})") from exc
            self._pid = os.getpid()
            self._cache = {}  # dataset handles of another process's file are no use here
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"], state["_cache"] = None, -1, {}
        return state

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._cache = None, {}

    def _small(self, name: str) -> np.ndarray:
        """Small per-image/per-caption arrays, read once per process."""
        if name not in self._cache:
            self._cache[name] = self._file()[name][()]
        return self._cache[name]

    def _text(self, name: str) -> list[str]:
        if name not in self._cache:
            self._cache[name] = list(self._file()[name].asstr()[()])
        return self._cache[name]

    @property
    def vocab(self) -> Vocabulary:
        if "_vocab" not in self._cache:
            self._cache["_vocab"] = Vocabulary(self._text("vocab"))
        return self._cache["_vocab"]

    @property
    def keys(self) -> list[str]:
        return self._text("keys")

    @property
    def class_ids(self) -> np.ndarray:
        return self._small("class_ids")

    def split_indices(self, split: str) -> np.ndarray:
        """Image indices of `split` ("train", "test" or "all")."""
        if split == "all":  # every image, whatever its split
            return np.arange(self.num_images, dtype=np.int64)
        if split not in SPLITS:
            raise T2IError(f"split {split!r}: choose one of train, test, all")
        return self._small(f"splits/{split}")

    def image(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) image `index` (one read of one chunk)."""
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"image index {index} outside 0..{self.num_images - 1}")
        file = self._file()
        if "_images" not in self._cache:  # the group lookup costs as much as reading a small image
            self._cache["_images"] = file["images"]
        data = self._cache["_images"][index]
        return data if self.image_format == "raw" else decode_jpeg(data)

    def image_bytes(self, index: int) -> bytes:
        """The stored bytes of image `index` (JPEG for jpeg files, raw pixels otherwise)."""
        return bytes(np.asarray(self._file()["images"][int(index)]).tobytes())

    def caption_indices(self, image_index: int) -> range:
        first = int(self._small("image_captions/first")[image_index])
        return range(first, first + int(self._small("image_captions/count")[image_index]))

    def caption_tokens(self, caption_index: int) -> np.ndarray:
        """int64 token ids of caption `caption_index`, full length (no padding)."""
        start = int(self._small("captions/offsets")[caption_index])
        length = int(self._small("captions/lengths")[caption_index])
        return self._small("captions/tokens")[start : start + length].astype(np.int64)

    @property
    def caption_images(self) -> np.ndarray:
        """Image index of every caption (int array, one entry per caption)."""
        return self._small("captions/image")

    def caption_length(self, caption_index: int) -> int:
        return int(self._small("captions/lengths")[caption_index])

    def caption_text(self, caption_index: int) -> str:
        return self._text("captions/text")[caption_index]

    def caption_image(self, caption_index: int) -> int:
        return int(self._small("captions/image")[caption_index])

    def identity(self) -> dict[str, Any]:
        """What checkpoints record about their data: path, vocabulary size and hash, content hash."""
        return {
            "path": str(self.path.resolve()),
            "source": self.source,
            "vocab_size": len(self.vocab),
            "vocab_sha256": self.vocab_sha256,
            "content_sha256": self.content_sha256,
            "image_size": self.image_size,
        }
