"""CUB-200-2011 in AttnGAN's `birds` layout: images.txt + bounding_boxes.txt, text/<key>.txt, split filename pickles.

Images get AttnGAN's bounding-box crop (taoxugit/AttnGAN code/datasets.py get_imgs) before the resize.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from t2itool.data.prepare import (
    PrepOptions,
    PrepSummary,
    SourceItem,
    load_image_file,
    require_dir,
    require_file,
    run_prep,
)
from t2itool.data.text import load_plain_pickle
from t2itool.errors import T2IError

CAPTIONS_PER_IMAGE = 10


def read_text(path: Path) -> str:
    """A caption/list file as AttnGAN reads it (UTF-8, undecodable bytes replaced); UTF-16 and NUL bytes refused."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise T2IError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise T2IError(f"{path}: holds NUL bytes, as UTF-16 text does; save it as UTF-8 text")
    return data.decode("utf-8", errors="replace")


def _key_list(path: Path) -> list[str]:
    value = load_plain_pickle(path)
    if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
        raise T2IError(f"{path}: expected a list of image keys")
    return value


def cub_items(root: str | os.PathLike) -> list[SourceItem]:
    root = require_dir(root, "AttnGAN's birds folder with CUB_200_2011/, text/, train/, test/")
    cub = require_dir(root / "CUB_200_2011", "the extracted CUB_200_2011 tarball")
    images_txt = require_file(cub / "images.txt", "'<id> <relpath>' lines")
    boxes_txt = require_file(cub / "bounding_boxes.txt", "'<id> <x> <y> <w> <h>' lines")
    require_dir(root / "text", "caption files text/<class>/<stem>.txt (extract text.zip)")
    paths = {}
    for number, line in enumerate(read_text(images_txt).splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2:
                raise T2IError(f"{images_txt}:{number}: expected '<id> <relpath>'")
            paths[parts[0]] = parts[1]
    boxes = {}
    for number, line in enumerate(read_text(boxes_txt).splitlines(), 1):
        if line.strip():
            parts = line.split()
            try:
                boxes[parts[0]] = tuple(float(value) for value in parts[1:5])
            except (ValueError, IndexError):
                raise T2IError(f"{boxes_txt}:{number}: expected '<id> <x> <y> <w> <h>'") from None
    bbox_by_key = {}
    for image_id, relpath in paths.items():
        if image_id not in boxes:
            raise T2IError(f"{boxes_txt}: no box for image id {image_id} ({relpath})")
        bbox_by_key[relpath[:-4] if relpath.endswith(".jpg") else relpath] = (relpath, boxes[image_id])
    items = []
    for split in ("train", "test"):
        keys = _key_list(require_file(root / split / "filenames.pickle", f"the {split} key list"))
        class_file = root / split / "class_info.pickle"
        class_ids = load_plain_pickle(class_file) if class_file.is_file() else None
        if class_ids is not None and (not isinstance(class_ids, list) or len(class_ids) != len(keys)):
            raise T2IError(f"{class_file}: expected one class id per key ({len(keys)})")
        for position, class_id in enumerate(class_ids or []):
            if not isinstance(class_id, int):
                raise T2IError(f"{class_file}: entry {position} is {class_id!r}; expected an integer class id")
        for position, key in enumerate(keys):
            if key not in bbox_by_key:
                raise T2IError(f"{split}/filenames.pickle: key {key!r} is not in {images_txt}")
            relpath, bbox = bbox_by_key[key]
            text_file = root / "text" / f"{key}.txt"
            if not text_file.is_file():
                raise T2IError(f"{text_file}: no such file (captions of {key})")
            captions = read_text(text_file).split("\n")
            class_id = class_ids[position] if class_ids is not None else len(items)
            items.append(
                SourceItem(key, captions, class_id, split, load_image_file,
                           (str(cub / "images" / relpath), bbox), str(text_file))
            )  # fmt: skip
    return items


def build_cub(root: str | os.PathLike, out: str | os.PathLike, **options: Any) -> PrepSummary:
    """`prep cub`; `options` are PrepOptions fields."""
    opts = PrepOptions(**options)
    items = cub_items(root)
    return run_prep(
        items, out, opts, source="cub", max_captions=CAPTIONS_PER_IMAGE, extra_attrs={"bbox_crop": 1}, root=root
    )
