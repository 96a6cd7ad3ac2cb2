"""COCO-2014 in AttnGAN's layout (images/, text/<key>.txt, {train,test}/filenames.pickle) or the official release
(annotations/captions_{train,val}2014.json with {train,val}2014/ image folders). The first 5 valid captions are kept.
"""

from __future__ import annotations

import json
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
from t2itool.data.sources.cub import _key_list, read_text
from t2itool.errors import T2IError

CAPTIONS_PER_IMAGE = 5


def _attngan_items(root: Path, image_size: int) -> list[SourceItem]:
    images = require_dir(root / "images", "the COCO JPEGs images/<key>.jpg")
    require_dir(root / "text", "caption files text/<key>.txt")
    items = []
    for split in ("train", "test"):
        for key in _key_list(require_file(root / split / "filenames.pickle", f"the {split} key list")):
            image = images / f"{key}.jpg"
            if not image.is_file():  # DF-GAN's variant keeps train2014/ and val2014/ subfolders
                sub = "train2014" if "train" in key else "val2014"
                image = images / sub / f"{key}.jpg" if (images / sub / f"{key}.jpg").is_file() else image
            text_file = root / "text" / f"{key}.txt"
            if not text_file.is_file():
                raise T2IError(f"{text_file}: no such file (captions of {key})")
            items.append(
                SourceItem(key, read_text(text_file).split("\n"), len(items), split, load_image_file,
                           (str(image), image_size, None), str(text_file))
            )  # fmt: skip
    return items


def _official_items(root: Path, image_size: int) -> list[SourceItem]:
    items = []
    for split, name in (("train", "train2014"), ("test", "val2014")):
        annotations = require_file(root / "annotations" / f"captions_{name}.json", f"COCO's {name} captions JSON")
        folder = require_dir(root / name, f"the {name} images")
        try:
            data = json.loads(annotations.read_text(encoding="utf-8"))
            images = sorted(data["images"], key=lambda entry: entry["id"])
            by_image: dict[int, list[str]] = {entry["id"]: [] for entry in images}
            for entry in sorted(data["annotations"], key=lambda entry: entry["id"]):
                by_image.setdefault(entry["image_id"], []).append(entry["caption"])
        except (ValueError, KeyError, TypeError) as exc:
            raise T2IError(f"{annotations}: not a COCO captions file ({type(exc).__name__}: {exc})") from exc
        for entry in images:
            key = Path(entry["file_name"]).stem
            items.append(
                SourceItem(key, by_image[entry["id"]], len(items), split, load_image_file,
                           (str(folder / entry["file_name"]), image_size, None), f"{annotations} (image {entry['id']})")
            )  # fmt: skip
    return items


def coco_items(root: str | os.PathLike, image_size: int) -> tuple[list[SourceItem], str]:
    root = require_dir(root, "a COCO folder (AttnGAN layout or the official 2014 release)")
    if (root / "annotations").is_dir():
        return _official_items(root, image_size), "official-2014"
    if (root / "train" / "filenames.pickle").exists() or (root / "text").is_dir():
        return _attngan_items(root, image_size), "attngan"
    raise T2IError(
        f"{root}: neither AttnGAN's coco layout (images/, text/, train/filenames.pickle) "
        "nor the official one (annotations/captions_train2014.json, train2014/)"
    )


def build_coco(root: str | os.PathLike, out: str | os.PathLike, **options: Any) -> PrepSummary:
    """`prep coco`; `options` are PrepOptions fields."""
    opts = PrepOptions(**options)
    items, layout = coco_items(root, opts.image_size)
    return run_prep(items, out, opts, source="coco", max_captions=CAPTIONS_PER_IMAGE, extra_attrs={"layout": layout})
