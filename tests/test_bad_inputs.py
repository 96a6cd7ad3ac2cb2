"""Every bad input ends in one `error:` line: a matrix of hostile inputs run through the real CLI, each asserting a
non-zero exit, exactly one error line naming what is wrong, no traceback, and no new, changed or partial file.
Plus write failures and signals in subprocesses: a file-size limit (disk full), SIGTERM, a read-only folder.

The cases live in tests/bad_inputs_data.py (`prep`, `info`) and tests/bad_inputs_run.py (`train`, `sample`,
`score`); each module's docstring says how to add one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import bad_inputs_data
import pytest
from bad_inputs_data import CASES, Case, cub
from bad_inputs_run import PAYLOAD_MARK, RUN_CASES, RunCase, RunInputs, make_run_inputs
from conftest import add_char_cnn_rnn, make_cub
from typer.testing import CliRunner

from t2itool.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


# A prepared file to damage, built once.
@pytest.fixture(scope="module", autouse=True)
def _good_store(tmp_path_factory) -> None:
    from t2itool.data.sources.shapes import build_shapes

    bad_inputs_data.GOOD_STORE = tmp_path_factory.mktemp("good") / "good.h5"
    build_shapes(bad_inputs_data.GOOD_STORE, num_images=12, image_size=16, seed=0)


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
