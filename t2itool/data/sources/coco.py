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


def _attngan_items(root: Path) -> list[SourceItem]:
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
                           (str(image), None), str(text_file))
            )  # fmt: skip
    return items


def _field(annotations: Path, where: str, entry: object, name: str, kind: type) -> object:
    """entry[name], checked to be of `kind` (an int that is not a bool, or a non-empty str)."""
    if not isinstance(entry, dict):
        raise T2IError(f"{annotations}: {where} is not an object")
    value = entry.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        expected = "an integer" if kind is int else "a non-empty string"
        raise T2IError(f"{annotations}: {where}: {name!r} is {value!r}; expected {expected}")
    return value


def _read_annotations(annotations: Path) -> tuple[list[dict], dict[int, list[str]]]:
    """COCO's captions JSON: images sorted by id, and each image's captions in caption-id order, fields checked."""
    try:
        data = json.loads(annotations.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise T2IError(f"{annotations}: not UTF-8 JSON ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise T2IError(f"{annotations}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise T2IError(f"{annotations}: not a COCO captions file (expected an object with an 'images' list)")
    if not isinstance(data.get("annotations"), list):
        raise T2IError(f"{annotations}: not a COCO captions file (expected an 'annotations' list)")
    for index, entry in enumerate(data["images"]):
        _field(annotations, f"images[{index}]", entry, "id", int)
        _field(annotations, f"images[{index}]", entry, "file_name", str)
    for index, entry in enumerate(data["annotations"]):
        for name, kind in (("id", int), ("image_id", int), ("caption", str)):
            _field(annotations, f"annotations[{index}]", entry, name, kind)
    images = sorted(data["images"], key=lambda entry: entry["id"])
    by_image: dict[int, list[str]] = {entry["id"]: [] for entry in images}
    for entry in sorted(data["annotations"], key=lambda entry: entry["id"]):
        by_image.setdefault(entry["image_id"], []).append(entry["caption"])
    return images, by_image


def _official_items(root: Path) -> list[SourceItem]:
    items = []
    for split, name in (("train", "train2014"), ("test", "val2014")):
        annotations = require_file(root / "annotations" / f"captions_{name}.json", f"COCO's {name} captions JSON")
        folder = require_dir(root / name, f"the {name} images")
        images, by_image = _read_annotations(annotations)
        for entry in images:
            key = Path(entry["file_name"]).stem
            items.append(
                SourceItem(key, by_image[entry["id"]], len(items), split, load_image_file,
                           (str(folder / entry["file_name"]), None), f"{annotations} (image {entry['id']})")
            )  # fmt: skip
    return items


def coco_items(root: str | os.PathLike) -> tuple[list[SourceItem], str]:
    root = require_dir(root, "a COCO folder (AttnGAN layout or the official 2014 release)")
    if (root / "annotations").is_dir():
        return _official_items(root), "official-2014"
    if (root / "train" / "filenames.pickle").exists() or (root / "text").is_dir():
        return _attngan_items(root), "attngan"
    raise T2IError(
        f"{root}: neither AttnGAN's coco layout (images/, text/, train/filenames.pickle) "
        "nor the official one (annotations/captions_train2014.json, train2014/)"
    )


def build_coco(root: str | os.PathLike, out: str | os.PathLike, **options: Any) -> PrepSummary:
    """`prep coco`; `options` are PrepOptions fields."""
    opts = PrepOptions(**options)
    items, layout = coco_items(root)
    return run_prep(
        items, out, opts, source="coco", max_captions=CAPTIONS_PER_IMAGE, extra_attrs={"layout": layout}, root=root
    )
