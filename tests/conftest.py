"""Shared pytest fixtures: small prepared datasets that several test modules use."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shapes_h5(tmp_path_factory) -> str:
    """A small built-in shapes dataset (96 images, 76 px stored) prepared once per test session."""
    from t2itool.data.sources.shapes import build_shapes

    out = tmp_path_factory.mktemp("shapes") / "shapes.h5"
    build_shapes(out, num_images=96, image_size=76, seed=0)
    return str(out)


@pytest.fixture(scope="session")
def small_damsm(shapes_h5: str, tmp_path_factory) -> str:
    """Untrained DAMSM encoders for `shapes_h5` (image encoder input 80 px), saved once per test session."""
    from t2itool.data.store import Store
    from t2itool.encoders import ImageEncoder, TextEncoder, save_damsm

    store = Store(shapes_h5)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("damsm") / "damsm.pt"
    save_damsm(path, TextEncoder(len(store.vocab)), ImageEncoder(image_size=80), store=store)
    return str(path)


def _jpeg(path, size: tuple[int, int], seed: int, textured: bool = False) -> None:
    """A small JPEG with a distinct coloured block so crops can be checked; `textured`: smooth noise instead of a
    flat background, so that every window of the image differs from every other."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    array = np.full((size[1], size[0], 3), rng.integers(0, 255, size=3), dtype=np.uint8)
    if textured:
        noise = Image.fromarray(rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8))
        array = np.asarray(noise.resize(size, Image.Resampling.BICUBIC)).copy()
    array[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


def make_cub(root, num_train: int = 6, num_test: int = 3, class_info: bool = True):
    """A CUB tree in AttnGAN's `birds` layout with Python-2-style protocol-2 pickles."""
    import pickle

    cub = root / "CUB_200_2011"
    keys, lines, boxes = [], [], []
    for index in range(num_train + num_test):
        cls = f"{1 + index % 3:03d}.Bird_{index % 3}"
        key = f"{cls}/Bird_{index % 3}_{index:04d}_{100 + index}"
        keys.append(key)
        width, height = 80 + 4 * index, 60 + 2 * index
        _jpeg(cub / "images" / f"{key}.jpg", (width, height), index)
        lines.append(f"{index + 1} {key}.jpg")
        boxes.append(f"{index + 1} {10.0 + index} {8.0} {30.0} {20.0 + index}")
        text = root / "text" / f"{key}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        captions = [f"this bird number {index} has a yellow-crowned head and it's small"] + [
            f"a bird with {word} wings, caption {j}" for j, word in enumerate(["red", "blue", "café"] * 3)
        ]
        text.write_text("\n".join(captions[:10]) + "\n", encoding="utf-8")
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    for split, part in (("train", keys[:num_train]), ("test", keys[num_train:])):
        (root / split).mkdir(parents=True, exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as handle:
            pickle.dump(part, handle, protocol=2)
        if class_info:
            with open(root / split / "class_info.pickle", "wb") as handle:
                pickle.dump([int(key[:3]) for key in part], handle, protocol=2)
    return root


def make_coco_official(root, num_train: int = 4, num_val: int = 2, size=(96, 64), textured: bool = False):
    """The official COCO-2014 layout: annotations/captions_{train,val}2014.json and image folders of `size` images."""
    import json

    caption_id = 1
    for name, count, base in (("train2014", num_train, 10), ("val2014", num_val, 500)):
        images, annotations = [], []
        for index in range(count):
            image_id = base + index
            file_name = f"COCO_{name}_{image_id:012d}.jpg"
            _jpeg(root / name / file_name, size, image_id, textured)
            images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1], "license": 1,
                           "coco_url": "", "flickr_url": "", "date_captured": ""})  # fmt: skip
            for j in range(7 if index == 0 else 5):
                text = "!!!" if j == 1 else f"A photo number {image_id} of a dog, caption {j}."
                annotations.append({"id": caption_id, "image_id": image_id, "caption": text})
                caption_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        document = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
        (root / "annotations" / f"captions_{name}.json").write_text(json.dumps(document))
    return root


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory):
    return make_cub(tmp_path_factory.mktemp("birds"))


def python2_array_pickle(array) -> bytes:
    """The bytes Python 2.7's `cPickle.dump(array, f, protocol=2)` writes for a C-ordered numeric numpy array
    (StackGAN's embedding pickles): numpy.core.multiarray._reconstruct + BUILD with the raw data as a py2 str."""
    import struct

    import numpy as np

    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    array = array.astype(dtype)

    def short_string(text: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return (b"U" + bytes([len(text)]) if len(text) < 256 else b"T" + struct.pack("<i", len(text))) + text

    def small_int(value: int) -> bytes:  # BININT1 / BININT
        return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)

    shape = b"(" + b"".join(small_int(n) for n in array.shape) + b"t"
    kind = f"{dtype.kind}{dtype.itemsize}".encode()
    order = b"|" if dtype.itemsize == 1 else b"<"
    dtype_pickle = (
        b"cnumpy\ndtype\n" + short_string(kind) + b"K\x00K\x01\x87R"
        + b"(K\x03" + short_string(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )  # fmt: skip
    return (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_string(b"b") + b"\x87R"
        + b"(K\x01" + shape + dtype_pickle + b"I00\n" + short_string(array.tobytes()) + b"tb."
    )  # fmt: skip


def add_char_cnn_rnn(root, dim: int = 16, seed: int = 0):
    """StackGAN's embeddings beside a CUB/COCO tree's filenames.pickle: per split, a Python-2 protocol-2 pickle of
    a float32 array images x 10 x dim in filenames.pickle order. Returns {split: array}."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "test"):
        keys = pickle.load(open(root / split / "filenames.pickle", "rb"))
        arrays[split] = rng.standard_normal((len(keys), 10, dim)).astype(np.float32)
        (root / split / "char-CNN-RNN-embeddings.pickle").write_bytes(python2_array_pickle(arrays[split]))
    return arrays


@pytest.fixture(scope="session")
def learning_data(tmp_path_factory):
    """Shapes data and a DAMSM checkpoint shared by the slow learning tests (tests/learning.py)."""
    from learning import make_learning_data

    return make_learning_data(tmp_path_factory.mktemp("learning"))
