"""The prepared-data HDF5 schema shared by the writer and the reader: names, version, the dtype of every dataset,
and the content hash (docs/data-format.md). Bump FORMAT_VERSION on any change to the layout.
"""

from __future__ import annotations

import hashlib
import io

import h5py
import numpy as np

FORMAT_NAME = "t2itool-captions"
FORMAT_VERSION = 3
IMAGE_FORMATS = ("raw", "jpeg")
IMAGE_RESIZES = ("shorter-side", "centre-square")  # aspect kept (the official transform) | today's --square
SPLITS = ("train", "test")
FEATURES_GROUP = "caption_features"
JPEG_QUALITY = 95

STR_DTYPE = h5py.string_dtype("utf-8")
BYTES_DTYPE = h5py.vlen_dtype(np.uint8)

# Every dataset after the images, in content-hash order: name -> little-endian dtype, or "str" for UTF-8 strings.
# All are one-dimensional.
ARRAYS: dict[str, str] = {
    "images/heights": "<i4",
    "images/widths": "<i4",
    "captions/tokens": "<i4",
    "captions/offsets": "<i8",
    "captions/lengths": "<i4",
    "captions/image": "<i4",
    "captions/text": "str",
    "image_captions/first": "<i8",
    "image_captions/count": "<i4",
    "class_ids": "<i4",
    "keys": "str",
    "vocab": "str",
    "splits/train": "<i8",
    "splits/test": "<i8",
}
ROOT_ATTRS = (
    "format",
    "format_version",
    "source",
    "tokenizer",
    "image_size",
    "image_format",
    "image_resize",
    "vocab_size",
    "vocab_sha256",
    "content_sha256",
)
FEATURE_ATTRS = ("name", "source", "sentence_dim", "word_dim", "max_tokens", "dtype", "sha256")


def raw_dataset_name(height: int, width: int) -> str:
    """The dataset holding every raw image of shape (height, width, 3), one chunk per image."""
    return f"images/raw/{height}x{width}"


class ContentHash:
    """sha256 over everything a file stores, fed in the documented order by the writer and by `Store.verify`."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def image(self, payload: bytes) -> None:
        self._digest.update(len(payload).to_bytes(8, "little"))
        self._digest.update(payload)

    def array(self, name: str, values: np.ndarray) -> None:
        self._digest.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
        self._digest.update(np.ascontiguousarray(values).tobytes())

    def strings(self, name: str, values: list[str]) -> None:
        self._digest.update(f"{name}:str:{len(values)}".encode())
        for value in values:
            encoded = value.encode("utf-8")
            self._digest.update(len(encoded).to_bytes(8, "little"))
            self._digest.update(encoded)

    def features(self, sha256: str) -> None:
        self._digest.update(f"{FEATURES_GROUP}:{sha256}".encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def features_hash(
    sentence_dim: int, word_dim: int | None, max_tokens: int | None, dtype: np.dtype, total: int
) -> hashlib._Hash:
    """The features hash, started with its header (dimensions, storage dtype, caption count); the caller then adds,
    image by image, the sentence rows, and with word features the word rows and the int32 lengths."""
    dims = f"D={sentence_dim}:T={max_tokens or 0}:Dw={word_dim or 0}"
    return hashlib.sha256(f"{FEATURES_GROUP}:{dims}:{np.dtype(dtype).str}:C={total}".encode())


def encode_jpeg(image: np.ndarray) -> bytes:
    """Deterministic JPEG bytes of a uint8 (H, W, 3) image (fixed quality, 4:4:4, no metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def decode_jpeg(data: np.ndarray | bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
