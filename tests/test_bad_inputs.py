"""Every bad input ends in one `error:` line: a matrix of hostile inputs run through the real CLI, each asserting a
non-zero exit, exactly one error line naming what is wrong, no traceback, and no new, changed or partial file.
Plus write failures and signals in subprocesses: a file-size limit (disk full), SIGTERM, a read-only folder.

To add cases (train, sample, ...): append `Case(id, setup, expect)` to CASES; `setup(folder)` builds the inputs in
`folder` and returns the command line; `expect` is a substring of the error line.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from bad_inputs_run import RUN_CASES, RunCase, RunInputs, make_run_inputs
from conftest import add_char_cnn_rnn, make_coco_official, make_cub, python2_array_pickle
from PIL import Image
from typer.testing import CliRunner

from t2itool.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
PAYLOAD_MARK = "pwned-by-pickle"


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


# A prepared file to damage, built once.
@pytest.fixture(scope="module", autouse=True)
def _good_store(tmp_path_factory) -> None:
    from t2itool.data.sources.shapes import build_shapes

    global GOOD_STORE
    GOOD_STORE = tmp_path_factory.mktemp("good") / "good.h5"
    build_shapes(GOOD_STORE, num_images=12, image_size=16, seed=0)


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


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and every folder (an orphan run folder counts as a new file)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, -1)
            for p in folder.rglob("*")}  # fmt: skip


def assert_one_error_line(output: str, exit_code: int, expected_code: int, expect: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert exit_code == expected_code, output
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    flat = " ".join(output.split())  # the console wraps long lines
    assert expect in flat, output
    return flat


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_error_line(case: Case, tmp_path: Path) -> None:
    args = [arg.format(folder=tmp_path) for arg in case.setup(tmp_path)]
    before = _snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception  # not an unhandled exception
    assert_one_error_line(result.output, result.exit_code, case.exit_code, case.expect)
    assert _snapshot(tmp_path) == before  # no new, changed or partial file (no temporary either)
    assert not (tmp_path / PAYLOAD_MARK).exists()  # no pickle payload ran


@pytest.fixture(scope="module")
def run_inputs(shapes_h5: str, tmp_path_factory) -> RunInputs:
    return make_run_inputs(shapes_h5, tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("case", RUN_CASES, ids=[case.id for case in RUN_CASES])
def test_bad_run_input_ends_in_one_error_line(case: RunCase, tmp_path: Path, run_inputs: RunInputs) -> None:
    """train, sample and score: the same assertions as the data-side matrix."""
    args = case.setup(tmp_path, run_inputs)
    before, shared = _snapshot(tmp_path), _snapshot(run_inputs.run.parent.parent)
    result = runner.invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception
    assert_one_error_line(result.output, result.exit_code, case.exit_code, case.expect)
    assert _snapshot(tmp_path) == before
    assert _snapshot(run_inputs.run.parent.parent) == shared  # the shared run and samples are untouched too
    assert not (tmp_path / PAYLOAD_MARK).exists()


def test_case_count() -> None:
    ids = [case.id for case in CASES] + [case.id for case in RUN_CASES]
    assert len(CASES) >= 60 and len(RUN_CASES) >= 40 and len(set(ids)) == len(ids)


# ---- write failures and signals, in subprocesses


def _run_cli(args: list[str], preexec=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "t2itool", *args], capture_output=True, text=True, env=env,
                          preexec_fn=preexec, timeout=timeout, cwd=REPO)  # fmt: skip


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("source", ["shapes", "cub-with-features"])
def test_disk_full_during_prep_is_one_line_and_leaves_nothing(tmp_path: Path, source: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if source == "shapes":
        args = ["prep", "shapes", "--out", str(out_dir / "s.h5"), "--num-images", "300", "--image-size", "64"]
    else:
        root = make_cub(tmp_path / "birds", 6, 3)
        add_char_cnn_rnn(root, dim=1024)  # the features alone are larger than the limit
        args = cub(tmp_path, "--caption-features", "char-CNN-RNN-embeddings.pickle", out="out/c.h5")
        args[args.index("--image-size") + 1] = "64"
    result = _run_cli(args, preexec=_file_size_limit(200_000))
    assert_one_error_line(result.stderr, result.returncode, 2, "cannot write")
    assert "File too large" in " ".join(result.stderr.split())
    assert list(out_dir.iterdir()) == []  # the temporary file is gone too


def test_sigterm_during_prep_removes_the_temporary(tmp_path: Path) -> None:
    out = tmp_path / "big.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "t2itool", "prep", "shapes", "--out", str(out), "--num-images",
                                "15000", "--image-size", "32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".big.h5.") for p in tmp_path.iterdir()):  # writing has started
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert_one_error_line(stderr, process.returncode, 143, "terminated by SIGTERM")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_of_a_killed_prep_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "t2itool", "prep", "shapes", "--out", str(out), "--num-images",
                                "15000", "--image-size", "32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".s.h5.*")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()  # SIGKILL: no cleanup possible
    process.wait()
    assert list(tmp_path.glob(".s.h5.*")), "the killed prep left no temporary to clean up"
    result = _run_cli(["prep", "shapes", "--out", str(out), "--num-images", "8", "--image-size", "16"])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_read_only_out_folder(tmp_path: Path) -> None:
    """A folder the user cannot write to: mode 0555 for an ordinary user; as root (who ignores permissions) the
    immutable attribute (chattr +i), which even root cannot write through."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = False
    if os.access(locked, os.W_OK):
        immutable = shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(locked)]).returncode == 0
        if not immutable:
            pytest.skip("cannot make a folder read-only here")
    try:
        result = _run_cli(["prep", "shapes", "--out", str(locked / "s.h5"), "--num-images", "8", "--image-size", "16"])
        flat = assert_one_error_line(result.stderr, result.returncode, 2, "cannot write")
        assert "Operation not permitted" in flat if immutable else "Permission denied" in flat
        assert list(locked.iterdir()) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)])
        locked.chmod(0o755)


# ---- sample, train and pretrain-damsm: write failures and signals, in subprocesses


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def _sample_cli(inputs: RunInputs, out: Path, *flags: str) -> list[str]:
    return ["sample", str(inputs.run), "--out", str(out), "--text", "a red circle", "--text", "a blue square", *flags]


def test_disk_full_during_sample_leaves_no_partial_set(tmp_path: Path, run_inputs: RunInputs) -> None:
    """A file-size limit above every PNG but below the grid: all PNGs were written (in the staging folder) when the
    grid failed, and none of them, nor samples.jsonl, reaches --out."""
    pngs = [p.stat().st_size for p in run_inputs.samples.glob("c*.png")]
    grid = (run_inputs.samples / "grid.png").stat().st_size
    limit = max(pngs) + 16
    assert len(pngs) == 4 and grid > limit  # the same command as the fixture's sampling: the same bytes
    out = tmp_path / "out"
    result = _run_cli(_sample_cli(run_inputs, out, "--per-caption", "2"), preexec=_file_size_limit(limit))
    flat = assert_one_error_line(result.stderr, result.returncode, 2, f"cannot write {out / 'grid.png'}")
    assert "File too large" in flat
    assert list(tmp_path.iterdir()) == []  # no --out folder, no staging folder


def _wait_for_staging(folder: Path, process: subprocess.Popen, files: int = 3, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        staging = [p for p in folder.glob(".out.*") if p.is_dir()]
        if staging and len(list(staging[0].iterdir())) >= files:
            return staging[0]
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)


def test_sigterm_during_sample_removes_the_staged_images(tmp_path: Path, run_inputs: RunInputs) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    command = [sys.executable, "-m", "t2itool", *_sample_cli(run_inputs, tmp_path / "out", "--per-caption", "20000")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    _wait_for_staging(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert_one_error_line(stderr, process.returncode, 143, "terminated by SIGTERM; no samples were written")
    assert list(tmp_path.iterdir()) == []

    # kill -9 cannot clean up: the next sampling into the same --out removes the dead process's staging folder.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    staging = _wait_for_staging(tmp_path, process)
    process.kill()
    process.wait()
    assert staging.is_dir() and not (tmp_path / "out").exists()
    result = _run_cli(_sample_cli(run_inputs, tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "c000000-s0000.png", "c000001-s0000.png", "grid.png", "samples.jsonl",
    ]  # fmt: skip


@pytest.mark.slow
def test_disk_full_during_train_is_one_line_and_leaves_no_partial_file(tmp_path: Path, run_inputs: RunInputs) -> None:
    """config.json, stats and grids fit under the limit, the snapshot does not: one line naming it, no temporary,
    every file left is whole."""
    out = tmp_path / "runs"
    args = ["train", "dfgan", "--data", run_inputs.data, "--damsm", run_inputs.damsm, "--out", str(out), "--image-size",
            "32", "--batch-size", "4", "--workers", "0", "--grid-every", "0", "--set", "ngf=8", "--set", "ndf=8",
            "--steps", "1"]  # fmt: skip
    result = _run_cli(args, preexec=_file_size_limit(1_000_000))
    flat = assert_one_error_line(result.stderr, result.returncode, 2, "cannot write")
    assert "snapshot-000001.pt: File too large" in flat
    assert _leftovers(tmp_path) == []
    (run,) = out.iterdir()
    assert not list(run.rglob("*.pt"))
    json.loads((run / "config.json").read_text())
    assert [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()] == [1]


@pytest.mark.slow
def test_disk_full_during_pretrain_damsm_is_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    from t2itool.data.sources.shapes import build_shapes

    data = tmp_path / "shapes.h5"
    build_shapes(data, num_images=24, image_size=16, seed=0)  # test captions of 2 classes: R-precision can run
    out = tmp_path / "damsm"
    args = ["pretrain-damsm", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4",
            "--backbone-weights", "random", "--encoder-image-size", "80", "--workers", "0"]  # fmt: skip
    result = _run_cli(args, preexec=_file_size_limit(1_000_000))
    flat = assert_one_error_line(result.stderr, result.returncode, 2, "cannot write")
    assert "damsm-epoch0001.pt: File too large" in flat
    assert _leftovers(tmp_path) == []
    assert not list(out.rglob("*.pt"))
    json.loads((out / "config.json").read_text())
