"""Prep of the CUB, COCO, folder and shapes sources: layouts, the bbox crop, determinism, errors, atomic output."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
from conftest import make_coco_official, make_cub
from PIL import Image
from torchvision import transforms
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.prepare import PrepOptions, bbox_crop_box, resize_square, run_prep
from t2itool.data.sources.coco import build_coco
from t2itool.data.sources.cub import build_cub
from t2itool.data.sources.folder import build_folder
from t2itool.data.sources.shapes import build_shapes, shapes_items
from t2itool.data.store import Store
from t2itool.errors import T2IError

runner = CliRunner()


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_bbox_crop_rule() -> None:
    # r = int(0.75 * 40) = 30, centre (int((20+40)/2), int((10+20)/2)) = (30, 15): clamped at the top.
    assert bbox_crop_box(200, 100, (10, 5, 40, 20)) == (0, 0, 60, 45)
    assert bbox_crop_box(200, 200, (80, 80, 20, 10)) == (75, 70, 105, 100)


def test_cub_prep_and_info_json(cub_root, tmp_path) -> None:
    out = tmp_path / "birds.h5"
    result = runner.invoke(
        app, ["prep", "cub", str(cub_root), "--out", str(out), "--image-size", "32", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert (data["images"], data["train_images"], data["test_images"], data["image_size"]) == (9, 6, 3, 32)
    assert data["captions"] == 90 and data["classes"] == 3
    store = Store(out)
    assert store.keys[0] == pickle.load(open(cub_root / "train" / "filenames.pickle", "rb"))[0]
    assert list(store.class_ids[:3]) == [1, 2, 3]
    first = store.caption_tokens(store.caption_indices(0)[0])
    assert store.vocab.decode(first) == "this bird number 0 has a yellow crowned head and it s small"
    assert "caf" in store.vocab.word_to_id and data["vocab_size"] == len(store.vocab)
    # The stored image is the bbox crop of the original, resized.
    key = store.keys[0]
    original = Image.open(cub_root / "CUB_200_2011" / "images" / f"{key}.jpg").convert("RGB")
    box = bbox_crop_box(*original.size, (10.0, 8.0, 30.0, 20.0))
    assert box == (3, 0, 47, 40)  # r = 22 around (25, 18), clamped at the top
    # The official resize of the crop (torchvision Resize(32): 44 x 40 -> 35 x 32, aspect kept), bit for bit.
    expected = np.asarray(transforms.Resize(32)(original.crop(box)))
    assert store.image(0).shape == (32, 35, 3) and np.array_equal(store.image(0), expected)
    assert store.image_shape(0) == (32, 35) and store.image_resize == "shorter-side"
    # --square keeps the older centre square of the crop (bicubic).
    square = tmp_path / "square.h5"
    result = runner.invoke(app, ["prep", "cub", str(cub_root), "--out", str(square), "--image-size", "32",
                                 "--workers", "1", "--square"])  # fmt: skip
    assert result.exit_code == 0, result.output
    squares = Store(square)
    assert squares.image_resize == "centre-square" and squares.content_sha256 != store.content_sha256
    assert np.array_equal(squares.image(0), resize_square(original.crop(box), 32))
    assert all(squares.image_shape(i) == (32, 32) for i in range(squares.num_images))


def test_same_bytes_for_any_worker_count(cub_root, tmp_path, monkeypatch) -> None:
    import t2itool.data.prepare as prepare

    monkeypatch.setattr(prepare, "POOL_MIN_IMAGES", 1)  # use the pool even for this tiny set
    one = build_cub(cub_root, tmp_path / "w1.h5", image_size=24, workers=1, show_progress=False)
    two = build_cub(cub_root, tmp_path / "w2.h5", image_size=24, workers=2, show_progress=False)
    assert one.content_sha256 == two.content_sha256
    assert sha(tmp_path / "w1.h5") == sha(tmp_path / "w2.h5")
    jpeg = build_cub(cub_root, tmp_path / "j.h5", image_size=24, image_format="jpeg", workers=2, show_progress=False)
    assert Store(tmp_path / "j.h5").image(0).shape == Store(tmp_path / "w1.h5").image(0).shape
    assert min(Store(tmp_path / "j.h5").image(0).shape[:2]) == 24 and jpeg.content_sha256 != one.content_sha256


def test_vocab_import_gives_attngan_ids(cub_root, tmp_path) -> None:
    vocab_file = tmp_path / "captions.pickle"
    words = ["<end>", "bird", "this", "a", "wings"]
    with open(vocab_file, "wb") as handle:
        pickle.dump([[], [], dict(enumerate(words)), {w: i for i, w in enumerate(words)}], handle, protocol=2)
    out = tmp_path / "v.h5"
    result = runner.invoke(app, ["prep", "cub", str(cub_root), "--out", str(out), "--image-size", "16",
                                 "--vocab", str(vocab_file), "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    store = Store(out)
    assert store.vocab.words == words
    assert list(store.caption_tokens(store.caption_indices(0)[0])) == [2, 1, 3]  # "this bird ... a ..."


def test_min_word_count(cub_root, tmp_path) -> None:
    full = build_cub(cub_root, tmp_path / "a.h5", image_size=16, workers=1, show_progress=False)
    cut = build_cub(cub_root, tmp_path / "b.h5", image_size=16, workers=1, min_word_count=20, show_progress=False)
    assert cut.vocab_size < full.vocab_size
    assert (
        "yellow" not in Store(tmp_path / "b.h5").vocab.word_to_id and "caf" in Store(tmp_path / "b.h5").vocab.word_to_id
    )


def test_coco_official_layout_first_five_valid(tmp_path) -> None:
    root = make_coco_official(tmp_path / "coco")
    summary = build_coco(root, tmp_path / "coco.h5", image_size=16, workers=1, show_progress=False)
    store = Store(tmp_path / "coco.h5")
    assert summary.split_images == {"train": 4, "test": 2} and store.keys[0] == "COCO_train2014_000000000010"
    texts = [store.caption_text(c) for c in store.caption_indices(0)]
    assert len(texts) == 5 and "!!!" not in texts and texts[-1].endswith("caption 5.")


def test_coco_attngan_layout(tmp_path) -> None:
    root = tmp_path / "coco"
    for split, keys in (("train", ["COCO_train2014_000000000001"]), ("test", ["COCO_val2014_000000000002"])):
        (root / split).mkdir(parents=True)
        pickle.dump(keys, open(root / split / "filenames.pickle", "wb"), protocol=2)
        for key in keys:
            (root / "images").mkdir(exist_ok=True)
            Image.new("RGB", (40, 30), (9, 9, 9)).save(root / "images" / f"{key}.jpg")
            (root / "text").mkdir(exist_ok=True)
            (root / "text" / f"{key}.txt").write_text("\n".join(f"a cat {j}" for j in range(6)))
    summary = build_coco(root, tmp_path / "c.h5", image_size=16, workers=1, show_progress=False)
    assert summary.captions == 10 and summary.split_images == {"train": 1, "test": 1}


def _folder(root, count: int = 10):
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (20, 30), (index * 20, 0, 0)).save(root / f"img{index}.png")
        (root / f"img{index}.txt").write_text(f"a red thing {index}\n\nsecond line\n")
    return root


def test_folder_txt_jsonl_and_split(tmp_path) -> None:
    root = _folder(tmp_path / "own")
    summary = build_folder(root, tmp_path / "f.h5", image_size=16, workers=1, show_progress=False)
    assert summary.split_images == {"train": 9, "test": 1} and summary.captions == 20
    split = tmp_path / "split.txt"
    split.write_text("\n".join(f"img{i} {'test' if i < 3 else 'train'}" for i in range(10)))
    summary = build_folder(root, tmp_path / "g.h5", image_size=16, workers=1, show_progress=False, split_file=split)
    assert list(Store(tmp_path / "g.h5").split_indices("test")) == [0, 1, 2]
    jsonl_root = tmp_path / "jsonl"
    jsonl_root.mkdir()
    Image.new("RGB", (20, 20)).save(jsonl_root / "x.jpg")
    (jsonl_root / "captions.jsonl").write_text(json.dumps({"image": "x.jpg", "captions": ["one", "two"]}) + "\n")
    summary = build_folder(jsonl_root, tmp_path / "h.h5", image_size=16, workers=1, show_progress=False)
    assert summary.images == 1 and summary.captions == 2


def test_unreadable_image_skipped_listed_or_fatal_with_strict(tmp_path) -> None:
    root = _folder(tmp_path / "own", 4)
    (root / "img2.png").write_bytes(b"not an image")
    out = tmp_path / "f.h5"
    result = runner.invoke(app, ["prep", "folder", str(root), "--out", str(out), "--image-size", "16"])
    assert result.exit_code == 0 and "skipped 1 unreadable" in result.output and "img2" in result.output
    assert Store(out).num_images == 3 and "img2" not in Store(out).keys
    strict_out = tmp_path / "s.h5"
    result = runner.invoke(app, ["prep", "folder", str(root), "--out", str(strict_out), "--strict"])
    assert result.exit_code == 2 and "img2" in result.output and not strict_out.exists()
    assert not list(tmp_path.glob(".s.h5*"))  # no temporary left behind


@pytest.mark.parametrize("remove", ["CUB_200_2011/bounding_boxes.txt", "text", "train/filenames.pickle"])
def test_cub_missing_parts_name_the_path(tmp_path, remove: str) -> None:
    import shutil

    root = make_cub(tmp_path / "birds", 2, 1)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    out = tmp_path / "x.h5"
    result = runner.invoke(app, ["prep", "cub", str(root), "--out", str(out)])
    assert result.exit_code == 2 and remove.split("/")[-1] in result.output and not out.exists()


def test_missing_root_and_empty_caption_file(tmp_path) -> None:
    result = runner.invoke(app, ["prep", "coco", str(tmp_path / "nope"), "--out", str(tmp_path / "o.h5")])
    assert result.exit_code == 2 and "nope" in result.output and "no such folder" in result.output
    root = _folder(tmp_path / "own", 2)
    (root / "img1.txt").write_text("\n  \n")
    with pytest.raises(T2IError, match="img1.txt"):
        build_folder(root, tmp_path / "e.h5", workers=1, show_progress=False)
    assert not (tmp_path / "e.h5").exists()


def test_interrupt_leaves_nothing_at_out(tmp_path) -> None:
    items = shapes_items(8, 16, 0)

    def explode(*args):
        raise KeyboardInterrupt

    items[5].load = explode  # runs in-process (below POOL_MIN_IMAGES)
    with pytest.raises(KeyboardInterrupt):
        options = PrepOptions(image_size=16, workers=1, show_progress=False)
        run_prep(items, tmp_path / "k.h5", options, source="shapes")
    assert list(tmp_path.iterdir()) == []


def test_shapes_deterministic_and_seeded(tmp_path) -> None:
    a = build_shapes(tmp_path / "a.h5", num_images=40, image_size=32, seed=3)
    b = build_shapes(tmp_path / "b.h5", num_images=40, image_size=32, seed=3)
    c = build_shapes(tmp_path / "c.h5", num_images=40, image_size=32, seed=4)
    assert a.content_sha256 == b.content_sha256 != c.content_sha256
    assert sha(tmp_path / "a.h5") == sha(tmp_path / "b.h5")
    store = Store(tmp_path / "a.h5")
    assert a.split_images == {"train": 36, "test": 4} and all(len(store.caption_indices(i)) == 5 for i in range(40))
    result = runner.invoke(app, ["prep", "shapes", "--out", str(tmp_path / "d.h5"), "--num-images", "40",
                                 "--image-size", "32", "--seed", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Store(tmp_path / "d.h5").content_sha256 == a.content_sha256


def test_info_text_and_bad_file(shapes_h5, tmp_path) -> None:
    result = runner.invoke(app, ["info", shapes_h5])
    assert result.exit_code == 0 and "images: 96" in result.stdout and "vocab_sha256" in result.stdout
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"hello")
    result = runner.invoke(app, ["info", str(bogus)])
    assert result.exit_code == 2 and "bogus.h5" in result.output


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--image-format", "png"], "--image-format"),
        (["--workers", "-1"], "--workers"),
        (["--image-size", "4"], "--image-size"),
    ],
)
def test_bad_flags_are_named(tmp_path, flags: list[str], named: str) -> None:
    root = _folder(tmp_path / "own", 2)
    result = runner.invoke(app, ["prep", "folder", str(root), "--out", str(tmp_path / "o.h5"), *flags])
    assert result.exit_code == 2 and named in result.output and not (tmp_path / "o.h5").exists()


def test_pool_skips_unreadable_image(tmp_path, monkeypatch) -> None:
    import t2itool.data.prepare as prepare

    monkeypatch.setattr(prepare, "POOL_MIN_IMAGES", 1)
    root = _folder(tmp_path / "own", 6)
    (root / "img4.png").write_bytes(b"broken")
    summary = build_folder(root, tmp_path / "p.h5", image_size=16, workers=2, show_progress=False)
    assert summary.images == 5 and [key for key, _ in summary.failed] == ["img4"]
