"""The data-side cases of the matrix in tests/test_bad_inputs.py: hostile inputs of `prep` and `info`.

To add cases: append `Case(id, setup, expect)` to CASES; `setup(folder)` builds the inputs in `folder` and returns the
command line; `expect` is a substring of the error line. `GOOD_STORE` (a small prepared file to damage) is set by the
test module's fixture.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from bad_inputs_run import PAYLOAD_MARK
from conftest import add_char_cnn_rnn, make_coco_official, make_cub, python2_array_pickle
from PIL import Image


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # builds inputs under the folder, returns the command line
    expect: str  # a substring of the one error line
    exit_code: int = 2


# ---- input builders


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _payload_pickle(folder: Path) -> bytes:
    """A pickle that would create folder/PAYLOAD_MARK if it ran (protocol 2, os.system)."""
    command = f"touch {folder / PAYLOAD_MARK}".encode()
    return b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."


def _deep_pickle(depth: int = 100_000) -> bytes:
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def cub(folder: Path, *flags: str, out: str = "out.h5") -> list[str]:
    root = folder / "birds"
    if not root.exists():
        make_cub(root, 3, 2)
    return ["prep", "cub", str(root), "--out", str(folder / out), "--image-size", "16", "--workers", "1", *flags]


def cub_with(edit: Callable[[Path], object], *flags: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        args = cub(folder, *flags)
        edit(folder / "birds")
        return args

    return setup


def cub_features(edit: Callable[[Path], object], spec: str = "char-CNN-RNN-embeddings.pickle", *flags: str):
    def setup(folder: Path) -> list[str]:
        args = cub(folder, "--caption-features", spec.format(folder=folder), *flags)
        add_char_cnn_rnn(folder / "birds", dim=8)
        edit(folder / "birds")
        return args

    return setup


def coco_with(edit: Callable[[dict], object]) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        root = make_coco_official(folder / "coco", 2, 1)
        annotations = root / "annotations" / "captions_train2014.json"
        document = json.loads(annotations.read_text())
        edit(document)
        annotations.write_text(json.dumps(document))
        return ["prep", "coco", str(root), "--out", str(folder / "out.h5"), "--image-size", "16", "--workers", "1"]

    return setup


def folder_source(folder: Path, count: int = 3) -> Path:
    root = folder / "own"
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (20, 30), (index * 40, 0, 0)).save(root / f"img{index}.png")
        (root / f"img{index}.txt").write_text(f"a red thing {index}\n")
    return root


def folder_with(edit: Callable[[Path], object], *flags: str, out: str = "out.h5") -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        root = folder_source(folder)
        edit(root)
        target = out.format(folder=folder)
        target_path = Path(target) if os.path.isabs(target) else folder / target
        return ["prep", "folder", str(root), "--out", str(target_path), "--image-size", "16", "--workers", "1", *flags]

    return setup


def jsonl(lines: list[object]) -> Callable[[Path], object]:
    def edit(root: Path) -> None:
        for path in root.glob("img*.txt"):
            path.unlink()
        _write(root / "captions.jsonl", "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                                                for line in lines))  # fmt: skip

    return edit


def shapes(*flags: str) -> Callable[[Path], list[str]]:
    return lambda folder: ["prep", "shapes", "--out", str(folder / "out.h5"), "--num-images", "12",
                           "--image-size", "16", *flags]  # fmt: skip


def vocab_case(data: bytes | Callable[[Path], bytes], *flags: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        content = data(folder) if callable(data) else data
        return cub(folder, "--vocab", str(_write(folder / "captions.pickle", content)), *flags)

    return setup


def features_file(name: str, make: Callable[[Path], object]) -> Callable[[Path], list[str]]:
    """prep shapes with --caption-features folder/name, built by make(path)."""

    def setup(folder: Path) -> list[str]:
        path = folder / name
        make(path)
        return shapes("--caption-features", str(path))(folder)

    return setup


SHAPE_KEYS = [f"shapes_{index:06d}" for index in range(12)]


def _h5(path: Path, **arrays: object) -> Path:
    with h5py.File(path, "w") as handle:
        for name, values in arrays.items():
            handle[name] = values
    return path


def _npz(**arrays: object) -> Callable[[Path], object]:
    return lambda path: np.savez(path, **arrays)


GOOD_STORE: Path = Path()


def damaged(edit: Callable[[h5py.File], object], *flags: str, raw: Callable[[Path], object] | None = None):
    def setup(folder: Path) -> list[str]:
        path = folder / "data.h5"
        shutil.copy(GOOD_STORE, path)
        if raw is not None:
            raw(path)
        else:
            with h5py.File(path, "a") as handle:
                edit(handle)
        return ["info", str(path), *flags]

    return setup


def _replace(name: str, values: np.ndarray) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        del handle[name]
        handle[name] = values

    return edit


def _flip_image_byte(path: Path) -> None:
    with h5py.File(path, "r") as handle:
        offset = handle["images/raw/16x16"].id.get_chunk_info(3).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset + 100)
        value = raw.read(1)[0]
        raw.seek(offset + 100)
        raw.write(bytes([value ^ 0xFF]))


def _truncate(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _no_op(*_: object) -> None:
    return None


CASES = [
    # prep cub: layout and field types
    Case("cub-missing-root", lambda f: ["prep", "cub", str(f / "nope"), "--out", str(f / "o.h5")], "no such folder"),
    Case("cub-images-txt-one-field", cub_with(lambda r: _write(r / "CUB_200_2011/images.txt", "1\n")), "images.txt:1"),
    Case(
        "cub-bbox-not-numeric",
        cub_with(lambda r: _write(r / "CUB_200_2011/bounding_boxes.txt", "1 a b c d\n")),
        "bounding_boxes.txt:1",
    ),
    Case(
        "cub-class-id-not-numeric",
        cub_with(lambda r: _write(r / "train/class_info.pickle", pickle.dumps(["x", 2, 3], protocol=2))),
        "class_info.pickle",
    ),
    Case(
        "cub-class-id-float",
        cub_with(lambda r: _write(r / "train/class_info.pickle", pickle.dumps([1.5, 2, 3], protocol=2))),
        "class_info.pickle",
    ),
    Case(
        "cub-class-info-wrong-length",
        cub_with(lambda r: _write(r / "train/class_info.pickle", pickle.dumps([1], protocol=2))),
        "class_info",
    ),
    Case(
        "cub-filenames-ints",
        cub_with(lambda r: _write(r / "train/filenames.pickle", pickle.dumps([1, 2], protocol=2))),
        "filenames.pickle",
    ),
    Case(
        "cub-filenames-truncated",
        cub_with(lambda r: _write(r / "train/filenames.pickle", pickle.dumps(["a", "b"], protocol=2)[:-3])),
        "filenames.pickle",
    ),
    Case(
        "cub-filenames-payload",
        cub_with(lambda r: _write(r / "train/filenames.pickle", _payload_pickle(r.parent))),
        "os.system is not allowed",
    ),
    Case(
        "cub-filenames-deep",
        cub_with(lambda r: _write(r / "train/filenames.pickle", _deep_pickle())),
        "filenames.pickle",
    ),
    Case(
        "cub-unknown-key",
        cub_with(
            lambda r: (
                _write(r / "train/filenames.pickle", pickle.dumps(["999.X/none"], protocol=2)),
                (r / "train/class_info.pickle").unlink(),
            )
        ),
        "999.X/none",
    ),
    Case("cub-caption-file-missing", cub_with(lambda r: next((r / "text").rglob("*.txt")).unlink()), "no such file"),
    Case(
        "cub-caption-utf16",
        cub_with(
            lambda r: [p.write_bytes("a red bird\nsmall\n".encode("utf-16")) for p in (r / "text").rglob("*.txt")]
        ),
        "UTF-16",
    ),
    Case(
        "cub-caption-nul",
        cub_with(lambda r: [p.write_bytes(b"a bird\x00\n") for p in (r / "text").rglob("*.txt")]),
        "NUL",
    ),
    Case(
        "cub-caption-empty",
        cub_with(lambda r: [p.write_text("\n \n") for p in (r / "text").rglob("*.txt")]),
        "no captions",
    ),
    # --vocab
    Case("vocab-missing", lambda f: cub(f, "--vocab", str(f / "none.pickle")), "no such file"),
    Case("vocab-payload", vocab_case(_payload_pickle), "os.system is not allowed"),
    Case("vocab-deeply-nested", vocab_case(_deep_pickle(5000)), "nested"),
    Case("vocab-self-referencing", vocab_case(b"\x80\x02]q\x00h\x00a."), "captions.pickle"),
    Case("vocab-not-four-items", vocab_case(pickle.dumps([1, 2], protocol=2)), "4-item list"),
    Case("vocab-not-a-pickle", vocab_case(b"hello world"), "captions.pickle"),
    Case(
        "vocab-with-min-word-count",
        vocab_case(pickle.dumps([[], [], {0: "<end>"}, {"<end>": 0}], protocol=2), "--min-word-count", "2"),
        "--min-word-count",
    ),
    # --caption-features
    Case(
        "features-wrong-caption-count",
        cub_features(
            lambda r: _write(
                r / "test/char-CNN-RNN-embeddings.pickle", python2_array_pickle(np.zeros((2, 9, 8), np.float32))
            )
        ),
        "9 caption rows",
    ),
    Case(
        "features-payload",
        cub_features(lambda r: _write(r / "train/char-CNN-RNN-embeddings.pickle", _payload_pickle(r.parent))),
        "os.system is not allowed",
    ),
    Case(
        "features-deep-pickle",
        cub_features(lambda r: _write(r / "train/char-CNN-RNN-embeddings.pickle", _deep_pickle())),
        "char-CNN-RNN-embeddings.pickle",
    ),
    Case(
        "features-self-referencing",
        cub_features(lambda r: _write(r / "train/char-CNN-RNN-embeddings.pickle", b"\x80\x02]q\x00h\x00a.")),
        "embeddings",
    ),
    Case(
        "features-object-dtype",
        cub_features(
            lambda r: _write(
                r / "train/char-CNN-RNN-embeddings.pickle",
                python2_array_pickle(np.zeros((3, 10, 8), np.float32)).replace(b"U\x02f4", b"U\x02O8"),
            )
        ),
        "not allowed",
    ),
    Case(
        "features-no-filenames-beside",
        cub_features(
            lambda r: (r / "test/filenames.pickle").rename(r / "test/keys.pickle"),
            "train={folder}/birds/train/char-CNN-RNN-embeddings.pickle,"
            "test={folder}/birds/test/char-CNN-RNN-embeddings.pickle",
        ),
        "filenames.pickle",
    ),
    Case("features-bad-split-name", cub_features(_no_op, "valid={folder}/x.npy"), "train=PATH,test=PATH"),
    Case("features-missing-file", cub_features(_no_op, "{folder}/none.npz"), "no such file"),
    Case(
        "features-unknown-kind",
        cub_features(lambda r: _write(r.parent / "f.txt", "x"), "{folder}/f.txt"),
        "unknown kind",
    ),
    Case(
        "features-dtype-float64",
        cub_features(_no_op, "char-CNN-RNN-embeddings.pickle", "--caption-features-dtype", "float64"),
        "--caption-features-dtype",
    ),
    Case(
        "features-npz-missing-image",
        features_file("f.npz", _npz(keys=np.array(SHAPE_KEYS[1:]), sentence=np.zeros((11, 5, 4)))),
        SHAPE_KEYS[0],
    ),
    Case("features-npz-no-sentence", features_file("f.npz", _npz(keys=np.array(SHAPE_KEYS))), "'sentence'"),
    Case(
        "features-npz-object-array",
        features_file(
            "f.npz", lambda p: np.savez(p, keys=np.array(SHAPE_KEYS, dtype=object), sentence=np.zeros((12, 5, 4)))
        ),
        "without pickle",
    ),
    Case(
        "features-npz-nan",
        features_file("f.npz", _npz(keys=np.array(SHAPE_KEYS), sentence=np.full((12, 5, 4), np.nan))),
        "NaN",
    ),
    Case(
        "features-npz-text-sentence",
        features_file("f.npz", _npz(keys=np.array(SHAPE_KEYS), sentence=np.full((12, 5, 4), "x"))),
        "sentence",
    ),
    Case(
        "features-npz-word-lengths-too-long",
        features_file(
            "f.npz",
            _npz(
                keys=np.array(SHAPE_KEYS),
                sentence=np.zeros((12, 5, 4)),
                words=np.zeros((12, 5, 3, 2)),
                word_lengths=np.full((12, 5), 7),
            ),
        ),
        "word_lengths",
    ),
    Case(
        "features-npz-words-without-lengths",
        features_file(
            "f.npz", _npz(keys=np.array(SHAPE_KEYS), sentence=np.zeros((12, 5, 4)), words=np.zeros((12, 5, 3, 2)))
        ),
        "word_lengths",
    ),
    Case(
        "features-h5-keys-numbers",
        features_file("f.h5", lambda p: _h5(p, keys=np.arange(12), sentence=np.zeros((12, 5, 4)))),
        "'keys'",
    ),
    Case("features-npy-wrong-rows", features_file("f.npy", lambda p: np.save(p, np.zeros((5, 5, 4)))), "5 rows"),
    Case("features-npy-2d", features_file("f.npy", lambda p: np.save(p, np.zeros((12, 4)))), "images x captions"),
    Case("features-not-npz", features_file("f.npz", lambda p: _write(p, b"not a zip")), "not a .npz"),
    # prep coco
    Case("coco-json-broken", coco_with(lambda d: d.clear()), "captions_train2014.json"),
    Case("coco-entry-without-file-name", coco_with(lambda d: d["images"][0].pop("file_name")), "file_name"),
    Case("coco-file-name-not-text", coco_with(lambda d: d["images"][0].update(file_name=7)), "file_name"),
    Case("coco-caption-int", coco_with(lambda d: d["annotations"][0].update(caption=7)), "caption"),
    Case("coco-images-not-list", coco_with(lambda d: d.update(images={"a": 1})), "images"),
    Case("coco-annotation-without-image-id", coco_with(lambda d: d["annotations"][1].pop("image_id")), "image_id"),
    Case("coco-image-id-text", coco_with(lambda d: d["images"][0].update(id="x")), "id"),
    Case(
        "coco-neither-layout",
        lambda f: ["prep", "coco", str((f / "empty").mkdir() or f / "empty"), "--out", str(f / "o.h5")],
        "neither",
    ),
    # prep folder
    Case("folder-jsonl-path-int", folder_with(jsonl([{"image": 5, "captions": ["a"]}])), "captions.jsonl:1"),
    Case("folder-jsonl-not-object", folder_with(jsonl([["img0.png", ["a"]]])), "captions.jsonl:1"),
    Case(
        "folder-jsonl-captions-text",
        folder_with(jsonl([{"image": "img0.png", "captions": "a red thing"}])),
        "captions.jsonl:1",
    ),
    Case("folder-jsonl-broken", folder_with(jsonl(['{"image": "img0.png", '])), "captions.jsonl:1"),
    Case(
        "folder-jsonl-image-missing", folder_with(jsonl([{"image": "nope.png", "captions": ["a"]}]), "--strict"), "nope"
    ),
    Case("folder-txt-utf16", folder_with(lambda r: (r / "img1.txt").write_bytes("a cat\n".encode("utf-16"))), "UTF-16"),
    Case(
        "folder-split-bad-line",
        folder_with(lambda r: _write(r.parent / "split.txt", "img0 valid\n"), "--split", "{folder}/split.txt"),
        "split.txt:1",
    ),
    Case(
        "folder-split-unknown",
        folder_with(lambda r: _write(r.parent / "split.txt", "zzz train\n"), "--split", "{folder}/split.txt"),
        "zzz",
    ),
    Case("folder-duplicate-keys", folder_with(lambda r: Image.new("RGB", (9, 9)).save(r / "img0.jpg")), "rename"),
    Case(
        "folder-no-images",
        lambda f: ["prep", "folder", str((f / "e").mkdir() or f / "e"), "--out", str(f / "o.h5")],
        "no images",
    ),
    Case(
        "folder-all-unreadable",
        folder_with(lambda r: [p.write_bytes(b"x") for p in r.glob("*.png")]),
        "none of the 3 images",
    ),
    Case("folder-strict-unreadable", folder_with(lambda r: (r / "img1.png").write_bytes(b"x"), "--strict"), "img1"),
    Case("out-is-a-folder", folder_with(lambda r: (r.parent / "dir.h5").mkdir(), out="dir.h5"), "is a folder"),
    Case("out-under-a-file", folder_with(lambda r: _write(r.parent / "file", "x"), out="file/out.h5"), "cannot write"),
    Case("image-format-png", folder_with(_no_op, "--image-format", "png"), "--image-format"),
    Case("workers-negative", folder_with(_no_op, "--workers", "-1"), "--workers"),
    Case("image-size-tiny", folder_with(_no_op, "--image-size", "4"), "--image-size"),
    Case("shapes-zero-images", shapes("--num-images", "0"), "--num-images"),
    # info on missing, foreign and damaged files
    Case("info-missing-file", lambda f: ["info", str(f / "none.h5")], "no such file"),
    Case("info-zero-bytes", lambda f: ["info", str(_write(f / "zero.h5", b""))], "zero.h5"),
    Case("info-not-hdf5", lambda f: ["info", str(_write(f / "text.h5", "hello"))], "cannot be opened as HDF5"),
    Case("info-foreign-hdf5", lambda f: ["info", str(_h5(f / "foreign.h5", x=np.zeros(3)))], "not a t2itool data file"),
    Case("info-old-version", damaged(lambda h: h.attrs.__setitem__("format_version", 2)), "re-run prep"),
    Case("info-version-not-number", damaged(lambda h: h.attrs.__setitem__("format_version", "three")), "not a number"),
    Case("info-missing-attribute", damaged(lambda h: h.attrs.__delitem__("image_size")), "'image_size'"),
    Case("info-bad-image-format", damaged(lambda h: h.attrs.__setitem__("image_format", "png")), "image_format"),
    Case("info-missing-dataset", damaged(lambda h: h.__delitem__("captions/tokens")), "'captions/tokens'"),
    Case("info-token-out-of-range", damaged(lambda h: h["captions/tokens"].__setitem__(0, 10_000)), "token ids"),
    Case("info-token-zero", damaged(lambda h: h["captions/tokens"].__setitem__(3, 0)), "token ids"),
    Case("info-class-ids-float", damaged(_replace("class_ids", np.zeros(12, np.float32))), "'class_ids'"),
    Case("info-split-outside", damaged(lambda h: h["splits/test"].__setitem__(0, 99)), "splits/test"),
    Case("info-split-overlap", damaged(_replace("splits/test", np.array([0, 1], np.int64))), "both splits"),
    Case("info-counts-disagree", damaged(lambda h: h["image_captions/count"].__setitem__(0, 4)), "image_captions"),
    Case("info-caption-offsets-outside", damaged(lambda h: h["captions/offsets"].__setitem__(5, 10**9)), "offsets"),
    Case("info-image-size-disagrees", damaged(lambda h: h.attrs.__setitem__("image_size", 20)), "image_size"),
    Case("info-image-slots-outside", damaged(lambda h: h["images/slots"].__setitem__(2, 500)), "images/slots"),
    Case("info-raw-images-missing", damaged(lambda h: h.__delitem__("images/raw/16x16")), "images/raw/16x16"),
    Case("info-vocab-size-disagrees", damaged(lambda h: h.attrs.__setitem__("vocab_size", 3)), "'vocab'"),
    Case("info-flipped-image-byte-verify", damaged(_no_op, "--verify", raw=_flip_image_byte), "content hash mismatch"),
    Case("info-truncated", damaged(_no_op, raw=_truncate), "data.h5"),
]
