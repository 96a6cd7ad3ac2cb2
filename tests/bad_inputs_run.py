"""Hostile inputs of `train`, `sample` and `score` for the matrix in tests/test_bad_inputs.py.

Every case gets a fresh folder and the shared `RunInputs` (a prepared shapes file, a DAMSM checkpoint, a one-step
tiny run and a samples folder of it, built once per module); inputs a case damages are copied into its folder first,
so the matrix's "no new, changed or partial file" check covers them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PAYLOAD_MARK = "pwned-by-pickle"


@dataclass(frozen=True)
class RunInputs:
    data: str  # shapes data, 76 px stored (tests/conftest.py shapes_h5)
    damsm: str
    run: Path  # a finished one-step dfgan run (32 px, ngf=ndf=8)
    samples: Path  # `t2itool sample` of that run: 4 images with their captions


@dataclass(frozen=True)
class RunCase:
    id: str
    setup: Callable[[Path, RunInputs], list[str]]  # builds inputs under the folder, returns the command line
    expect: str  # a substring of the one error line
    exit_code: int = 2


TINY = dict(image_size=32, batch_size=4, workers=0, grid_every=0, grid_size=4, status_every=2,
            sets={"ngf": "8", "ndf": "8"})  # fmt: skip


def make_run_inputs(data: str, folder: Path) -> RunInputs:
    from test_train_loop import make_damsm
    from typer.testing import CliRunner

    from t2itool.cli.main import app
    from t2itool.training import train

    damsm = make_damsm(data, folder / "damsm.pt")
    result = train("dfgan", data=data, damsm=damsm, out=str(folder / "runs"), steps=1, **TINY)
    samples = folder / "samples"
    args = ["sample", result.run_dir, "--out", str(samples), "--text", "a red circle", "--text", "a blue square",
            "--per-caption", "2"]  # fmt: skip
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    return RunInputs(data, damsm, Path(result.run_dir), samples)


# ---- files


def payload_pt(path: Path) -> Path:
    """A real torch.save file whose pickle would create PAYLOAD_MARK beside it (os.system) if loading ran it."""

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {path.parent / PAYLOAD_MARK}",)

    torch.save({"format": "t2itool-snapshot", "generator": Payload()}, path)
    return path


def random_pt(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def zero_pt(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def copy_run(folder: Path, inputs: RunInputs) -> Path:
    return Path(shutil.copytree(inputs.run, folder / "run"))


# ---- train


def train_args(folder: Path, inputs: RunInputs, *flags: str, data: str | None = None, damsm: str | None = None):
    args = ["train", "dfgan", "--out", str(folder / "runs"), "--image-size", "32", "--batch-size", "4", "--workers",
            "0", "--grid-every", "0", "--set", "ngf=8", "--set", "ndf=8", "--steps", "2"]  # fmt: skip
    if data != "":
        args += ["--data", data or inputs.data]
    if damsm != "":
        args += ["--damsm", damsm or inputs.damsm]
    return [*args, *flags]


def train_with(*flags: str, **files: Callable[[Path], Path]) -> Callable[[Path, RunInputs], list[str]]:
    """train with `flags`; each keyword names a flag (init_from, resume, data, damsm) set to a file made in folder."""

    def setup(folder: Path, inputs: RunInputs) -> list[str]:
        made = {name: str(make(folder / f"{name}.pt")) for name, make in files.items()}
        extra = [item for name in ("init_from", "resume") if name in made for item in (f"--{name.replace('_', '-')}",
                                                                                       made[name])]  # fmt: skip
        return train_args(folder, inputs, *flags, *extra, data=made.get("data"), damsm=made.get("damsm"))

    return setup


def resume_run(*flags: str) -> Callable[[Path, RunInputs], list[str]]:
    def setup(folder: Path, inputs: RunInputs) -> list[str]:
        return ["train", "dfgan", "--resume", str(copy_run(folder, inputs)), *flags]

    return setup


# ---- sample


def sample_args(snapshot: str, folder: Path, *flags: str) -> list[str]:
    return ["sample", snapshot, "--out", str(folder / "out"), *flags]


def sample_with(*flags: str, snapshot: Callable[[Path], Path] | None = None, captions: bytes | None = None):
    def setup(folder: Path, inputs: RunInputs) -> list[str]:
        source = str(snapshot(folder / "snap.pt")) if snapshot else str(inputs.run)
        extra = ["--text", "a red circle"] if captions is None else ["--captions", str(folder / "captions.txt")]
        if captions is not None:
            (folder / "captions.txt").write_bytes(captions)
        return sample_args(source, folder, *extra, *flags)

    return setup


def lone_snapshot_split(folder: Path, inputs: RunInputs) -> list[str]:
    """The run's snapshot copied out of its run folder: --split test without --data has no data file to use."""
    (snapshot,) = sorted(inputs.run.glob("snapshots/*.pt"))[-1:]
    lone = folder / "lone.pt"
    shutil.copyfile(snapshot, lone)
    return sample_args(str(lone), folder, "--split", "test")


def sample_bare(*flags: str) -> Callable[[Path, RunInputs], list[str]]:
    return lambda folder, inputs: sample_args(str(inputs.run), folder, *flags)


# ---- score


def score_with(edit: Callable[[Path], object], *flags: str) -> Callable[[Path, RunInputs], list[str]]:
    """score --shapes-agreement of a copy of the good samples folder after `edit(copy)`."""

    def setup(folder: Path, inputs: RunInputs) -> list[str]:
        samples = Path(shutil.copytree(inputs.samples, folder / "samples"))
        edit(samples)
        return ["score", str(samples), "--data", inputs.data, "--shapes-agreement", *flags]

    return setup


def _lines(samples: Path) -> list[str]:
    return (samples / "samples.jsonl").read_text().splitlines()


def index_line(number: int, replace: Callable[[dict], object] | str) -> Callable[[Path], None]:
    """Replace line `number` of samples.jsonl with text, or edit its record in place with `replace(record)`."""

    def edit(samples: Path) -> None:
        lines = _lines(samples)
        if isinstance(replace, str):
            lines[number] = replace
        else:
            record = json.loads(lines[number])
            replace(record)
            lines[number] = json.dumps(record)
        (samples / "samples.jsonl").write_text("\n".join(lines) + "\n")

    return edit


def first_png(samples: Path) -> Path:
    return samples / json.loads(_lines(samples)[0])["file"]


RUN_CASES = [
    # train: config values and flags, refused before the run folder exists
    RunCase("train-set-ngf-zero", train_with("--set", "ngf=0"), "ngf=0"),
    RunCase("train-set-ngf-negative", train_with("--set", "ngf=-8"), "ngf=-8"),
    RunCase("train-set-ngf-text", train_with("--set", "ngf=abc"), "ngf='abc'"),
    RunCase("train-set-lr-nan", train_with("--set", "lr_g=nan"), "lr_g=nan"),
    RunCase("train-set-lr-negative", train_with("--set", "lr_g=-1"), "lr_g=-1"),
    RunCase("train-set-beta-above-one", train_with("--set", "beta1=1.5"), "beta1=1.5"),
    RunCase("train-set-unknown-key", train_with("--set", "bogus=1"), "--set bogus: unknown key"),
    RunCase("train-set-malformed", train_with("--set", "ngf"), "expected key=value"),
    RunCase("train-image-size-48", train_with("--image-size", "48"), "image_size=48"),
    RunCase("train-steps-and-epochs", train_with("--epochs", "2"), "--steps or --epochs"),
    RunCase("train-unknown-model", lambda f, i: ["train", "nosuch", "--data", i.data], "unknown model 'nosuch'"),
    RunCase("train-device-cuda", train_with("--device", "cuda"), "--device cuda: CUDA is not available"),
    RunCase("train-amp-fp16-cpu", train_with("--amp", "fp16", "--device", "cpu"), "--amp fp16"),
    RunCase("train-ema-above-one", train_with("--ema", "2"), "--ema"),
    RunCase("train-config-missing", lambda f, i: train_args(f, i, "--config", str(f / "none.toml")), "no such file"),
    RunCase(
        "train-config-bad-toml",
        lambda f, i: train_args(f, i, "--config", str((f / "c.toml").write_text("x = [") and f / "c.toml")),
        "invalid TOML",
    ),
    # train: files
    RunCase("train-no-data", lambda f, i: train_args(f, i, data=""), "--data is required"),
    RunCase("train-data-missing", train_with(data=lambda p: p.with_suffix(".h5")), "no such file"),
    RunCase("train-data-not-hdf5", train_with(data=random_pt), "cannot be opened as HDF5"),
    RunCase("train-no-damsm", lambda f, i: train_args(f, i, damsm=""), "--damsm is required"),
    RunCase("train-damsm-missing", train_with(damsm=lambda p: p), "no such file"),
    RunCase("train-damsm-random-bytes", train_with(damsm=random_pt), "cannot be read as a DAMSM checkpoint"),
    RunCase("train-damsm-payload", train_with(damsm=payload_pt), "not run"),
    RunCase("train-batch-larger-than-split", train_with("--batch-size", "512"), "fewer than one global batch"),
    RunCase("train-init-from-random-bytes", train_with(init_from=random_pt), "cannot be read"),
    RunCase("train-init-from-payload", train_with(init_from=payload_pt), "posix.system, refused and not run"),
    RunCase("train-init-from-zero-bytes", train_with(init_from=zero_pt), "empty or unreadable file"),
    RunCase("train-init-from-missing", train_with(init_from=lambda p: p), "no such file"),
    # train --resume
    RunCase("train-resume-steps-below", resume_run("--steps", "1"), "is not beyond it"),
    RunCase(
        "train-resume-other-model",
        lambda f, i: ["train", "dfgan-ssacn", "--resume", str(copy_run(f, i)), "--steps", "4"],
        "not 'dfgan-ssacn'",
    ),  # fmt: skip
    RunCase(
        "train-resume-not-a-run",
        lambda f, i: ["train", "dfgan", "--resume", str((f / "plain").mkdir() or f / "plain"), "--steps", "3"],
        "no resume state found",
    ),
    RunCase("train-resume-random-bytes", train_with(resume=random_pt), "cannot be read as a t2itool resume state"),
    RunCase("train-resume-payload", train_with(resume=payload_pt), "posix.system, refused and not run"),
    RunCase("train-resume-zero-bytes", train_with(resume=zero_pt), "empty or unreadable file"),
    RunCase(
        "train-resume-snapshot-file",
        lambda f, i: [
            "train",
            "dfgan",
            "--resume",
            str(next((copy_run(f, i) / "snapshots").iterdir())),
            "--steps",
            "3",
        ],
        "resume state",
    ),  # fmt: skip
    # sample
    RunCase(
        "sample-captions-latin1",
        sample_with(captions="a red circle\ncafé au lait\n".encode("latin-1")),
        "captions.txt:2: not UTF-8",
    ),  # fmt: skip
    RunCase("sample-captions-utf16", sample_with(captions="a red circle\n".encode("utf-16")), "NUL bytes"),
    RunCase("sample-captions-empty", sample_with(captions=b"\n  \n"), "no captions"),
    RunCase("sample-captions-missing", sample_bare("--captions", "/nonexistent/c.txt"), "no such file"),
    RunCase("sample-device-cuda", sample_with("--device", "cuda"), "--device cuda: CUDA is not available"),
    RunCase("sample-device-bogus", sample_with("--device", "gpu0"), "--device gpu0: not a device"),
    RunCase("sample-snapshot-random-bytes", sample_with(snapshot=random_pt), "cannot be read as a t2itool snapshot"),
    RunCase("sample-snapshot-payload", sample_with(snapshot=payload_pt), "posix.system, refused and not run"),
    RunCase("sample-snapshot-zero-bytes", sample_with(snapshot=zero_pt), "empty or unreadable file"),
    RunCase("sample-snapshot-missing", sample_with(snapshot=lambda p: p), "no such file"),
    RunCase(
        "sample-not-a-run",
        lambda f, i: sample_args(str((f / "plain").mkdir() or f / "plain"), f, "--text", "a red circle"),
        "no snapshot found",
    ),
    RunCase(
        "sample-state-as-snapshot",
        lambda f, i: sample_args(str(next((i.run / "states").iterdir())), f, "--text", "a"),
        "not a t2itool snapshot",
    ),
    RunCase("sample-no-caption-source", sample_bare(), "exactly one caption source"),
    RunCase("sample-split-snapshot-outside-its-run", lone_snapshot_split, "--data FILE is needed"),
    RunCase("sample-words-all-unknown", sample_bare("--text", "zzz qqq"), "none of its words"),
    RunCase("sample-per-caption-zero", sample_with("--per-caption", "0"), "--per-caption 0"),
    RunCase("sample-batch-size-zero", sample_with("--batch-size", "0"), "--batch-size 0"),
    RunCase("sample-truncation-text", sample_with("--truncation", "high"), "--truncation 'high'"),
    RunCase(
        "sample-out-is-a-file",
        lambda f, i: ["sample", str(i.run), "--out", str((f / "o").write_text("x") and f / "o"), "--text", "a"],
        "it is a file",
    ),
    # score: the samples folder
    RunCase(
        "score-no-such-folder",
        lambda f, i: ["score", str(f / "none"), "--data", i.data, "--shapes-agreement"],
        "no such samples folder",
    ),  # fmt: skip
    RunCase("score-index-missing", score_with(lambda s: (s / "samples.jsonl").unlink()), "samples.jsonl: missing"),
    RunCase("score-index-bad-json", score_with(index_line(1, '{"file": "c0')), "samples.jsonl:2: not JSON"),
    RunCase("score-index-not-object", score_with(index_line(0, "[1, 2]")), "samples.jsonl:1: expected a JSON object"),
    RunCase("score-index-no-file", score_with(index_line(2, lambda r: r.pop("file"))), "samples.jsonl:3: 'file'"),
    RunCase("score-index-file-int", score_with(index_line(0, lambda r: r.update(file=3))), "samples.jsonl:1: 'file'"),
    RunCase(
        "score-index-file-outside",
        score_with(index_line(0, lambda r: r.update(file="../x.png"))),
        "expected a .png name inside the folder",
    ),
    RunCase(
        "score-index-file-twice", score_with(index_line(1, lambda r: r.update(file=first_png_name(r)))), "listed twice"
    ),  # fmt: skip
    RunCase("score-index-caption-int", score_with(index_line(0, lambda r: r.update(caption=5))), "'caption'"),
    RunCase(
        "score-index-not-utf8", score_with(lambda s: (s / "samples.jsonl").write_bytes(b"\xff\xfe{}")), "not UTF-8"
    ),  # fmt: skip
    RunCase("score-index-empty", score_with(lambda s: (s / "samples.jsonl").write_text("\n")), "lists no images"),
    RunCase("score-listed-png-missing", score_with(lambda s: first_png(s).unlink()), "listed files are missing"),
    RunCase(
        "score-png-not-listed",
        score_with(lambda s: shutil.copy(first_png(s), s / "extra.png")),
        "does not list 1 PNG files of the folder, e.g. extra.png",
    ),  # fmt: skip
    RunCase("score-png-not-an-image", score_with(lambda s: first_png(s).write_text("hello")), "not a readable image"),
    RunCase(
        "score-png-truncated",
        score_with(lambda s: first_png(s).write_bytes(first_png(s).read_bytes()[:60])),
        "not a readable image",
    ),
    RunCase(
        "score-mixed-sizes",
        score_with(lambda s: Image.new("RGB", (40, 40)).save(first_png(s))),
        "the samples of a folder must all have one size",
    ),
    RunCase("score-no-metric", lambda f, i: ["score", str(i.samples), "--data", i.data], "choose at least one"),
    RunCase("score-data-missing", score_with(lambda s: None, "--data", "/nonexistent.h5"), "no such file"),
    RunCase("score-device-cuda", score_with(lambda s: None, "--device", "cuda"), "CUDA is not available"),
]


def first_png_name(record: dict) -> str:
    """The file name of sample 0 (c000000-s0000.png: key 0, seed 0), to list it a second time."""
    return "c000000-s0000.png"
