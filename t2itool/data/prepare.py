"""The prep pipeline every source shares: tokenize, build or import the vocabulary, decode/crop/resize images on a
process pool (results consumed in input order, so the file is identical for any worker count), and write atomically.

Images keep their aspect ratio: the shorter side becomes --image-size exactly as torchvision's `Resize(int)` does it
(PIL bilinear; the longer side truncated), the resize AttnGAN and DF-GAN apply before their random crop. `--square`
keeps the older centre square (bicubic).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2itool import cancel
from t2itool.cancel import Terminated
from t2itool.data.features import load_feature_files
from t2itool.data.schema import IMAGE_FORMATS, encode_jpeg
from t2itool.data.text import Vocabulary, tokenize
from t2itool.data.writer import StoreMetadata, StoreWriter
from t2itool.errors import T2IError
from t2itool.fileio import atomic_path, check_writable

# Below this many images a pool costs more than it saves.
POOL_MIN_IMAGES = 256


@dataclass
class SourceItem:
    """One image as a source describes it. `load(*load_args)` must be a top-level function returning the RGB image at
    any size (a PIL image or a uint8 (H, W, 3) array); prep resizes it."""

    key: str
    captions: list[str]
    class_id: int
    split: str
    load: Callable[..., np.ndarray]
    load_args: tuple
    caption_source: str = ""  # file the captions came from, for error messages


@dataclass
class PrepSummary:
    out: str
    source: str
    images: int
    captions: int
    split_images: dict[str, int]
    vocab_size: int
    image_size: int
    image_format: str
    square: bool
    content_sha256: str
    vocab_sha256: str
    seconds: float
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    unknown_words: int = 0  # tokens dropped because an imported vocabulary lacks them
    short_images: int = 0  # images with fewer captions than the source's usual count

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


PrepCancelled = Terminated  # a stop request (the CLI's SIGTERM handler): prep stops as on Ctrl-C, temporary removed
request_cancel = cancel.request  # ask a running `run_prep` to stop at its next image
clear_cancel = cancel.clear
_check_cancel = cancel.check


def resolve_workers(workers: int | None) -> int:
    """Worker processes besides the main one: None = one per CPU core; 0 = none (the main process does the work),
    the meaning `--workers` has in every command."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 0:
        raise T2IError(f"--workers {workers}: must be 0 (none: the main process works) or a positive number")
    return workers


def resize_shorter_side(image: Any, size: int) -> np.ndarray:
    """PIL image -> uint8 (H, W, 3) with min(H, W) = `size`, aspect kept: torchvision `Resize(size)` on a PIL image
    (bilinear; longer side int(size * long / short); unchanged when already that size)."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def resize_square(image: Any, size: int) -> np.ndarray:
    """PIL image -> uint8 (size, size, 3): shorter side to `size` (bicubic), then the centre square (`--square`)."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def bbox_crop_box(width: int, height: int, bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """AttnGAN's CUB crop: square of half-side int(0.75 max(w, h)) around the box centre, clamped to the image."""
    x, y, w, h = bbox
    radius = int(max(w, h) * 0.75)
    center_x, center_y = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return (
        max(0, center_x - radius),
        max(0, center_y - radius),
        min(width, center_x + radius),
        min(height, center_y + radius),
    )


def load_image_file(path: str, bbox: Sequence[float] | None = None) -> Any:
    """Decode an image file to RGB and, for CUB, apply the bounding-box crop (a PIL image at its own size)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if bbox is not None:
            image = image.crop(bbox_crop_box(image.width, image.height, bbox))
        return image


def fit_image(image: Any, size: int, square: bool) -> np.ndarray:
    """A loader's image (PIL or uint8 array) as stored: shorter side `size`, or the `size` centre square."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"loader returned {image.dtype} {image.shape}, expected uint8 (H, W, 3)")
        if (square and image.shape[:2] == (size, size)) or (not square and min(image.shape[:2]) == size):
            return image
        image = Image.fromarray(image)
    return resize_square(image, size) if square else resize_shorter_side(image, size)


def _process(task: tuple[Callable[..., Any], tuple, int, bool, str]) -> tuple[bool, Any]:
    load, args, size, square, image_format = task
    try:
        image = fit_image(load(*args), size, square)
        height, width = image.shape[:2]
        return True, (encode_jpeg(image) if image_format == "jpeg" else image, height, width)
    except Exception as exc:  # any decode failure is reported per image, not fatal (unless --strict)
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def _worker_init() -> None:
    """Pool workers die on SIGTERM (the pool's own terminate()) instead of inheriting the CLI's handler."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _results(tasks: list, workers: int):
    if workers < 1 or len(tasks) < POOL_MIN_IMAGES:
        for task in tasks:
            yield _process(task)
        return
    # fork (where available) starts fast and needs no `__main__` guard in the caller; workers only run PIL/numpy.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    with context.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_process, tasks, chunksize=chunksize)


@dataclass
class PrepOptions:
    """What every source shares: the `prep` flags of the same names."""

    image_size: int = 304  # stored shorter side (the 256 crop's 76/64 margin)
    image_format: str = "raw"  # raw | jpeg
    square: bool = False  # store the centre square instead of the whole image (format-1 behaviour)
    vocab: Vocabulary | None = None  # imported vocabulary; None = build from all captions
    min_word_count: int = 0
    workers: int | None = None  # worker processes: None = one per core, 0 = none (the main process)
    strict: bool = False  # an unreadable image is fatal instead of skipped
    show_progress: bool = True
    caption_features: str | None = None  # SPEC of precomputed per-caption features (t2itool.data.features)
    caption_features_dtype: str = "float32"  # float32 | float16 storage


def run_prep(
    items: Sequence[SourceItem],
    out: str | os.PathLike,
    options: PrepOptions,
    *,
    source: str,
    max_captions: int | None = None,  # keep the first N valid captions per image (AttnGAN's CAPTIONS_PER_IMAGE)
    extra_attrs: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,  # where a bare --caption-features NAME is looked up (ROOT/train/NAME)
) -> PrepSummary:
    """Write `items` to `out` (atomically). Unreadable images are skipped and listed, or fatal with `strict`."""
    start = time.perf_counter()
    image_size, image_format, vocab = options.image_size, options.image_format, options.vocab
    min_word_count, workers, strict, show_progress = (
        options.min_word_count,
        options.workers,
        options.strict,
        options.show_progress,
    )
    if image_format not in IMAGE_FORMATS:
        raise T2IError(f"--image-format {image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
    if image_size < 8:
        raise T2IError(f"--image-size {image_size}: must be at least 8")
    if min_word_count < 0:
        raise T2IError(f"--min-word-count {min_word_count}: must be >= 0")
    if not items:
        raise T2IError(f"{source}: no images found")
    workers = resolve_workers(workers)
    check_writable(out)  # a folder, a path under a file or a read-only folder fails now, not after the images

    # Captions: AttnGAN's rule keeps the first `max_captions` captions that have at least one token.
    token_lists: list[list[list[str]]] = []
    caption_texts: list[list[str]] = []
    short = 0
    for item in items:
        _check_cancel()
        kept_tokens, kept_texts = [], []
        for text in item.captions:
            tokens = tokenize(text)
            if tokens:
                kept_tokens.append(tokens)
                kept_texts.append(text.replace("\ufffd\ufffd", " ").strip())
            if max_captions and len(kept_tokens) == max_captions:
                break
        if not kept_tokens:
            raise T2IError(f"{item.caption_source or item.key}: no captions (empty caption file?); add at least one")
        short += bool(max_captions) and len(kept_tokens) < max_captions
        token_lists.append(kept_tokens)
        caption_texts.append(kept_texts)

    features = None
    if options.caption_features is not None:
        # Opened and matched against the sources before the images are read: a wrong file fails in seconds.
        features = load_feature_files(options.caption_features, root, options.caption_features_dtype)
        keys, splits_of = [item.key for item in items], [item.split for item in items]
        try:
            features.locate(keys, splits_of, [len(tokens) for tokens in token_lists], final=False)
        except BaseException:
            features.close()
            raise
    tasks = [(item.load, item.load_args, image_size, options.square, image_format) for item in items]
    with atomic_path(out, suffix=".h5") as tmp:
        writer = StoreWriter(tmp, image_size, image_format, options.square)
        kept: list[int] = []
        failed: list[tuple[str, str]] = []
        try:
            with _progress(show_progress) as progress:
                task_id = progress.add_task(f"prep {source}", total=len(tasks)) if progress else None
                for index, (ok, result) in enumerate(_results(tasks, workers)):
                    _check_cancel()
                    if ok:
                        writer.add_image(*result)
                        kept.append(index)
                    elif strict:
                        raise T2IError(f"{items[index].key}: unreadable image ({result}); fix it or drop --strict")
                    else:
                        failed.append((items[index].key, result))
                    if progress:
                        progress.advance(task_id)
            if not kept:
                raise T2IError(f"{source}: none of the {len(items)} images could be read (first: {failed[0][1]})")
            if vocab is None:
                vocab = Vocabulary.build(
                    (tokens for index in kept for tokens in token_lists[index]), min_word_count=min_word_count
                )
            unknown = 0
            caption_ids: list[list[list[int]]] = []
            texts: list[list[str]] = []
            for index in kept:
                per_image_ids, per_image_texts = [], []
                for tokens, text in zip(token_lists[index], caption_texts[index], strict=True):
                    ids, missing = vocab.encode(tokens)
                    unknown += len(missing)
                    if ids:  # a caption made only of dropped words carries nothing
                        per_image_ids.append(ids)
                        per_image_texts.append(text)
                if not per_image_ids:
                    raise T2IError(f"{items[index].key}: no caption has a word in the vocabulary (--min-word-count?)")
                caption_ids.append(per_image_ids)
                texts.append(per_image_texts)
            splits: dict[str, list[int]] = {"train": [], "test": []}
            for new_index, index in enumerate(kept):
                splits.setdefault(items[index].split, []).append(new_index)
            feature_rows = None
            if features is not None:
                kept_keys, kept_splits = [items[i].key for i in kept], [items[i].split for i in kept]
                feature_rows = features.locate(kept_keys, kept_splits, [len(ids) for ids in caption_ids])
            meta = StoreMetadata(
                source=source,
                keys=[items[index].key for index in kept],
                class_ids=[items[index].class_id for index in kept],
                captions=texts,
                caption_ids=caption_ids,
                vocab=vocab,
                splits=splits,
                extra_attrs={"min_word_count": min_word_count, **(extra_attrs or {})},
                features=features,
                feature_rows=feature_rows,
            )
            _check_cancel()
            content = writer.finish(meta)
            _check_cancel()
        finally:
            writer.close()
            if features is not None:
                features.close()
    return PrepSummary(
        out=str(out),
        source=source,
        images=len(kept),
        captions=sum(len(ids) for ids in caption_ids),
        split_images={name: len(indices) for name, indices in splits.items()},
        vocab_size=len(vocab),
        image_size=image_size,
        image_format=image_format,
        square=options.square,
        content_sha256=content,
        vocab_sha256=vocab.sha256,
        seconds=time.perf_counter() - start,
        failed=failed,
        unknown_words=unknown,
        short_images=int(short),
    )


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(show: bool) -> Any:
    if not show:
        return _NoProgress()
    from t2itool.progress import progress_bar

    return progress_bar()


def require_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise T2IError(f"{path}: no such folder (expected {what})")
    return path


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"{path}: no such file (expected {what})")
    return path
