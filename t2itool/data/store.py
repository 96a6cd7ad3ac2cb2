"""The lazy, picklable reader of a prepared-data HDF5 file (`Store`); the schema lives in `t2itool.data.schema`,
the writer in `t2itool.data.writer`, the format is documented in docs/data-format.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from t2itool.data.features import CaptionFeaturesInfo
from t2itool.data.schema import FEATURES_GROUP, SPLITS, decode_jpeg, raw_dataset_name
from t2itool.data.text import Vocabulary
from t2itool.data.validate import check_file, verify_content
from t2itool.errors import T2IError


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
        try:
            self.attrs: dict[str, Any] = check_file(self.path, file, self._cache)
        except T2IError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py reading a truncated or damaged file
            self.close()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise T2IError(f"{self.path}: cannot be read ({message}): the file is damaged; re-run prep") from None
        self.image_size: int = int(self.attrs["image_size"])  # shorter side (or square side) of the stored images
        self.image_format: str = str(self.attrs["image_format"])
        self.image_resize: str = str(self.attrs["image_resize"])  # shorter-side | centre-square
        self.source: str = str(self.attrs["source"])
        self.vocab_sha256: str = str(self.attrs["vocab_sha256"])
        self.content_sha256: str = str(self.attrs["content_sha256"])
        self.num_images: int = int(file["image_captions/count"].shape[0])
        self.num_captions: int = int(file["captions/lengths"].shape[0])
        self.caption_features: CaptionFeaturesInfo | None = None
        if FEATURES_GROUP in file:
            features = file[FEATURES_GROUP].attrs
            self.caption_features = CaptionFeaturesInfo(
                name=str(features["name"]),
                source=str(features["source"]),
                sentence_dim=int(features["sentence_dim"]),
                word_dim=int(features["word_dim"]) or None,
                max_tokens=int(features["max_tokens"]) or None,
                sha256=str(features["sha256"]),
                dtype=str(features["dtype"]),
            )

    def _file(self) -> h5py.File:
        # A handle opened before a fork must not be shared with the child: reopen in every new process.
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise T2IError(
                    f"{self.path}: cannot be opened as HDF5 ({message}); is it a t2itool prep file?"
                ) from None
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

    def _dataset(self, name: str) -> h5py.Dataset:
        """A dataset handle, looked up once per process (the lookup costs as much as reading a small image)."""
        key = f"_dataset:{name}"
        if key not in self._cache:
            self._cache[key] = self._file()[name]
        return self._cache[key]

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

    # ---- images

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"image index {index} outside 0..{self.num_images - 1}")
        return index

    def image_shape(self, index: int) -> tuple[int, int]:
        """(height, width) of stored image `index`."""
        index = self._check_index(index)
        return int(self._small("images/heights")[index]), int(self._small("images/widths")[index])

    def image(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) stored image `index` (one chunk read for raw files)."""
        height, width = self.image_shape(index)
        if self.image_format == "raw":
            return self._dataset(raw_dataset_name(height, width))[int(self._small("images/slots")[int(index)])]
        return decode_jpeg(self._dataset("images/jpeg")[int(index)])

    def square_image(self, index: int) -> np.ndarray:
        """The centre square of stored image `index` (side = its shorter side): what format-1/2 files stored."""
        image = self.image(index)
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return np.ascontiguousarray(image[top : top + side, left : left + side])

    def image_bytes(self, index: int) -> bytes:
        """The stored bytes of image `index` (JPEG for jpeg files, raw pixels otherwise)."""
        if self.image_format == "raw":
            return self.image(index).tobytes()
        return bytes(np.asarray(self._dataset("images/jpeg")[self._check_index(index)]).tobytes())

    # ---- captions

    @property
    def caption_counts(self) -> np.ndarray:
        """Number of captions of every image (int array, one entry per image)."""
        return self._small("image_captions/count")

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

    # ---- caption features

    def require_caption_features(self, words: bool = False) -> CaptionFeaturesInfo:
        info = self.caption_features
        if info is None:
            raise T2IError(f"{self.path}: no caption features; re-run prep with --caption-features FILE")
        if words and info.word_dim is None:
            raise T2IError(f"{self.path}: the caption features ({info.name}) have no word features")
        return info

    def caption_sentence(self, caption_index: int) -> np.ndarray:
        """float32 (D,) sentence features of caption `caption_index`."""
        self.require_caption_features()
        return np.asarray(self._dataset(f"{FEATURES_GROUP}/sentence")[int(caption_index)], dtype=np.float32)

    def image_sentences(self, image_index: int) -> np.ndarray:
        """float32 (captions of the image, D): the sentence features of every caption of image `image_index`."""
        self.require_caption_features()
        captions = self.caption_indices(image_index)
        block = self._dataset(f"{FEATURES_GROUP}/sentence")[captions.start : captions.stop]
        return np.asarray(block, dtype=np.float32)

    def caption_words(self, caption_index: int) -> tuple[np.ndarray, int]:
        """(float32 (T, Dw) word features zero past the length, length) of caption `caption_index`."""
        self.require_caption_features(words=True)
        words = np.asarray(self._dataset(f"{FEATURES_GROUP}/words")[int(caption_index)], dtype=np.float32)
        return words, int(self._small(f"{FEATURES_GROUP}/word_lengths")[int(caption_index)])

    def verify(self) -> dict[str, Any]:
        """Recompute the content hash from everything stored; a T2IError if the file is damaged."""
        return verify_content(self)

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
