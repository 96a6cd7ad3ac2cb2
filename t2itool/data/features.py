"""Precomputed per-caption text features for `prep --caption-features SPEC`: StackGAN's char-CNN-RNN pickles, keyed
`.npz`/`.h5` files (e.g. BERT features a user computed) and `.npy` arrays in the store's image order.

`load_feature_files` parses SPEC and opens the files; `FeatureFiles.locate` maps images to rows and checks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2itool.data.pickles import load_array_pickle, load_plain_pickle
from t2itool.errors import T2IError

FEATURE_DTYPES = ("float32", "float16")
KEYED_SUFFIXES = (".npz", ".h5", ".hdf5")
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class CaptionFeaturesInfo:
    """What a prepared file says about its caption features (`Store.caption_features`)."""

    name: str  # "char-CNN-RNN", or the features file's stem
    source: str  # the files they came from, comma-separated
    sentence_dim: int  # D
    word_dim: int | None  # Dw, None without word features
    max_tokens: int | None  # T, None without word features
    sha256: str  # content hash of the stored feature arrays (see docs/data-format.md)
    dtype: str = "float32"  # storage dtype; readers always return float32


@dataclass
class FeaturePart:
    """One features file. Rows are addressed by image key, or (`keys is None`) by the store's image order."""

    path: Path
    sentence: Any  # (N, K, D) array-like: numpy array, memmap or h5py dataset
    keys: list[str] | None = None
    split: str | None = None  # with keys None: rows follow this split's images (None: every image)
    words: Any = None  # (N, K, T, Dw)
    word_lengths: Any = None  # (N, K)
    counts: np.ndarray | None = None  # (N,) captions per image when fewer than K are real
    handle: Any = None  # an open h5py.File to close

    @property
    def rows(self) -> int:
        return int(self.sentence.shape[0])

    def count(self, row: int) -> int:
        return int(self.counts[row]) if self.counts is not None else int(self.sentence.shape[1])


@dataclass
class FeatureFiles:
    """Every file of one SPEC, with the dimensions they share."""

    name: str
    parts: list[FeaturePart]
    sentence_dim: int
    word_dim: int | None
    max_tokens: int | None
    dtype: str = "float32"
    _by_key: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return ",".join(f"{part.path.parent.name}/{part.path.name}" for part in self.parts)

    def locate(
        self, keys: list[str], splits: list[str], counts: list[int], final: bool = True
    ) -> list[tuple[int, int]]:
        """(part, row) of every image, checking caption counts. `final=False` (before images are read): rows of
        files in store order cannot be matched yet (unreadable images will be dropped), only bounded."""
        located: list[tuple[int, int] | None] = [None] * len(keys)
        for part_index, part in enumerate(self.parts):
            if part.keys is not None:
                continue
            positions = [i for i, split in enumerate(splits) if part.split is None or split == part.split]
            which = f"the {part.split} images" if part.split else "images"
            if part.rows > len(positions) or (final and part.rows != len(positions)):
                raise T2IError(
                    f"{part.path}: {part.rows} rows, the data has {len(positions)} {which} "
                    "(rows must follow the store's image order: see `t2itool info FILE --list`)"
                )
            if final:
                for row, position in enumerate(positions):
                    located[position] = (part_index, row)
        for position, key in enumerate(keys):
            if located[position] is None and key in self._by_key:
                located[position] = self._by_key[key]
        for position, where in enumerate(located):
            if where is None:
                if not final and any(part.keys is None for part in self.parts):
                    continue
                files = ", ".join(str(part.path) for part in self.parts)
                raise T2IError(f"{files}: no features for image {keys[position]!r} (the first of the images missing)")
            part = self.parts[where[0]]
            if part.count(where[1]) != counts[position]:
                raise T2IError(
                    f"{part.path}: image {keys[position]!r} has {part.count(where[1])} caption rows, the data has "
                    f"{counts[position]} captions for it; features must be given for exactly the captions kept"
                )
        return [where for where in located if where is not None]

    def image_rows(self, where: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(sentence (k, D), words (k, T, Dw) zero past each length or None, lengths (k,) or None), as float32."""
        part = self.parts[where[0]]
        row, count = where[1], part.count(where[1])
        sentence = np.asarray(part.sentence[row][:count], dtype=np.float32)
        if not np.isfinite(sentence).all():
            raise T2IError(f"{part.path}: row {row} holds NaN or infinite values")
        if part.words is None:
            return sentence, None, None
        words = np.array(part.words[row][:count], dtype=np.float32)
        lengths = np.asarray(part.word_lengths[row][:count]).astype(np.int64)
        if lengths.min(initial=0) < 0 or lengths.max(initial=0) > words.shape[1]:
            raise T2IError(f"{part.path}: row {row}: word_lengths outside 0..{words.shape[1]}")
        for caption, length in enumerate(lengths):
            words[caption, length:] = 0.0
        if not np.isfinite(words).all():
            raise T2IError(f"{part.path}: row {row} holds NaN or infinite word features")
        return sentence, words, lengths.astype(np.int32)

    def close(self) -> None:
        for part in self.parts:
            if part.handle is not None:
                part.handle.close()
                part.handle = None


def resolve_spec(spec: str, root: str | os.PathLike | None = None) -> list[tuple[str | None, Path]]:
    """SPEC -> [(split or None, path)]. `train=A,test=B` names a file per split; a bare file name found as
    ROOT/train/NAME (cub, coco: StackGAN's layout) means ROOT/train/NAME and ROOT/test/NAME; otherwise one path."""
    spec = spec.strip()
    if not spec:
        raise T2IError("--caption-features: give a file, or train=PATH,test=PATH")
    if "=" in spec:
        files: list[tuple[str | None, Path]] = []
        for piece in spec.split(","):
            split, sep, value = piece.partition("=")
            split = split.strip()
            if not sep or split not in _SPLITS or not value.strip():
                raise T2IError(f"--caption-features {spec!r}: expected train=PATH,test=PATH")
            if split in (name for name, _ in files):
                raise T2IError(f"--caption-features {spec!r}: split {split} given twice")
            files.append((split, Path(value.strip())))
        return files
    path = Path(spec)
    if root is not None and len(path.parts) == 1 and (Path(root) / "train" / spec).is_file():
        return [(split, Path(root) / split / spec) for split in _SPLITS if (Path(root) / split / spec).is_file()]
    return [(None, path)]


def load_feature_files(spec: str, root: str | os.PathLike | None = None, dtype: str = "float32") -> FeatureFiles:
    """Open every file of SPEC and check that they agree on dimensions (each file is read or mapped once)."""
    if dtype not in FEATURE_DTYPES:
        raise T2IError(f"--caption-features-dtype {dtype!r}: choose one of {', '.join(FEATURE_DTYPES)}")
    parts = []
    try:
        for split, path in resolve_spec(spec, root):
            parts.append(_load_part(path, split))
        return _combine(parts, dtype)
    except BaseException:
        for part in parts:
            if part.handle is not None:
                part.handle.close()
        raise


def feature_name(path: Path) -> str:
    """StackGAN names its files <encoder>-embeddings.pickle: the encoder's name; otherwise the file stem."""
    stem = path.stem
    return stem[: -len("-embeddings")] if stem.endswith("-embeddings") else stem


def _combine(parts: list[FeaturePart], dtype: str) -> FeatureFiles:
    first = parts[0]
    sentence_dim = int(first.sentence.shape[2])
    has_words = first.words is not None
    word_dim = int(first.words.shape[3]) if has_words else None
    max_tokens = int(first.words.shape[2]) if has_words else None
    by_key: dict[str, tuple[int, int]] = {}
    for index, part in enumerate(parts):
        if int(part.sentence.shape[2]) != sentence_dim:
            raise T2IError(f"{part.path}: sentence features of width {part.sentence.shape[2]}, {first.path} has "
                           f"{sentence_dim}")  # fmt: skip
        if (part.words is not None) != has_words:
            raise T2IError(f"{part.path}: word features in some files of --caption-features but not in others")
        if has_words and tuple(part.words.shape[2:]) != (max_tokens, word_dim):
            raise T2IError(f"{part.path}: word features (T, Dw) = {tuple(part.words.shape[2:])}, {first.path} has "
                           f"{(max_tokens, word_dim)}")  # fmt: skip
        for row, key in enumerate(part.keys or []):
            if key in by_key:
                raise T2IError(f"{part.path}: image {key!r} appears twice in --caption-features")
            by_key[key] = (index, row)
    if any(part.keys is None for part in parts) and any(part.keys is not None for part in parts):
        raise T2IError("--caption-features: mix of .npy (store order) and keyed files; use one kind")
    return FeatureFiles(feature_name(first.path), parts, sentence_dim, word_dim, max_tokens, dtype, by_key)


def _check_array(path: Path, name: str, array: Any, ndim: int, kinds: str, expected: str) -> None:
    if array.ndim != ndim or array.dtype.kind not in kinds:
        raise T2IError(f"{path}: {name!r} is {array.dtype} {tuple(array.shape)}; expected {expected}")


def _keys(path: Path, values: Any) -> list[str]:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "USO":
        raise T2IError(f"{path}: 'keys' must be a 1-D array of image keys (strings)")
    keys = []
    for value in array.tolist():
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise T2IError(f"{path}: an image key is not UTF-8") from None
        if not isinstance(value, str):
            raise T2IError(f"{path}: 'keys' must hold strings (found {type(value).__name__})")
        keys.append(value)
    return keys


def _load_part(path: Path, split: str | None) -> FeaturePart:
    if not path.is_file():
        raise T2IError(f"--caption-features: {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".pickle" or suffix == ".pkl":
        return _pickle_part(path, split)
    if suffix == ".npy":
        try:
            sentence = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise T2IError(f"{path}: not a .npy array ({str(exc).splitlines()[0]})") from None
        _check_array(path, "array", sentence, 3, "fiu", "images x captions x D numbers")
        return FeaturePart(path, sentence, keys=None, split=split)
    if suffix in KEYED_SUFFIXES:
        return _keyed_part(path, split)
    raise T2IError(f"--caption-features {path}: unknown kind; use a .pickle (StackGAN), .npz, .h5 or .npy file")


def _pickle_part(path: Path, split: str | None) -> FeaturePart:
    names = path.parent / "filenames.pickle"
    if not names.is_file():
        raise T2IError(f"{path}: StackGAN's pickles list their rows in a filenames.pickle beside them; none at {names}")
    keys = load_plain_pickle(names)
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise T2IError(f"{names}: expected a list of image keys")
    sentence = load_array_pickle(path, "an images x captions x D array of embeddings")
    if sentence.ndim != 3:
        raise T2IError(f"{path}: embeddings of shape {sentence.shape}; expected images x captions x D")
    if len(keys) != sentence.shape[0]:
        raise T2IError(f"{path}: {sentence.shape[0]} rows, {names} lists {len(keys)} images")
    return FeaturePart(path, sentence, keys=keys, split=split)


def _keyed_part(path: Path, split: str | None) -> FeaturePart:
    handle = None
    if path.suffix.lower() == ".npz":
        try:
            store: Any = np.load(path, allow_pickle=False)
            names = set(store.files)
        except (ValueError, OSError) as exc:
            raise T2IError(f"{path}: not a .npz archive ({str(exc).splitlines()[0]})") from None

        def get(name: str) -> Any:
            try:
                return store[name]
            except ValueError as exc:  # an object array needs pickle: refused
                raise T2IError(f"{path}: {name!r} cannot be read without pickle ({exc})") from None
    else:
        import h5py

        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise T2IError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0]})") from None
        names = {name for name in handle if isinstance(handle[name], h5py.Dataset)}

        def get(name: str) -> Any:
            dataset = handle[name]
            return dataset.asstr()[()] if name == "keys" and dataset.dtype.kind == "O" else dataset

    try:
        for required in ("keys", "sentence"):
            if required not in names:
                raise T2IError(f"{path}: no {required!r} array (expected keys, sentence[, words, word_lengths])")
        keys = _keys(path, get("keys"))
        sentence = get("sentence")
        _check_array(path, "sentence", sentence, 3, "fiu", "images x captions x D numbers")
        if len(keys) != sentence.shape[0]:
            raise T2IError(f"{path}: {len(keys)} keys but {sentence.shape[0]} rows of sentence features")
        words = word_lengths = counts = None
        if ("words" in names) != ("word_lengths" in names):
            raise T2IError(f"{path}: 'words' and 'word_lengths' come together; one of them is missing")
        if "words" in names:
            words, word_lengths = get("words"), np.asarray(get("word_lengths"))
            _check_array(path, "words", words, 4, "fiu", "images x captions x T x Dw numbers")
            _check_array(path, "word_lengths", word_lengths, 2, "iu", "images x captions integers")
            if tuple(words.shape[:2]) != tuple(sentence.shape[:2]) or word_lengths.shape != sentence.shape[:2]:
                raise T2IError(f"{path}: words {tuple(words.shape)} / word_lengths {word_lengths.shape} do not match "
                               f"sentence {tuple(sentence.shape)} in images x captions")  # fmt: skip
        if "caption_counts" in names:
            counts = np.asarray(get("caption_counts"))
            _check_array(path, "caption_counts", counts, 1, "iu", "one integer per image")
            if len(counts) != len(keys) or counts.min(initial=1) < 1 or counts.max(initial=0) > sentence.shape[1]:
                raise T2IError(f"{path}: 'caption_counts' must give 1..{sentence.shape[1]} for each of {len(keys)} "
                               "images")  # fmt: skip
        return FeaturePart(path, sentence, keys, split, words, word_lengths, counts, handle)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
