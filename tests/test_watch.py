"""Runs you can watch: train's status lines (step, epoch, elapsed, ETA, img/s, peak memory) mirrored into RUN/log.txt,
and plain progress lines from prep/sample/score when stderr is not a terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from test_train_loop import make_damsm
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.progress import PlainProgress, progress_bar


def test_train_status_lines_and_log_txt(shapes_h5: str, tmp_path: Path, capfd) -> None:
    damsm = make_damsm(shapes_h5, tmp_path / "damsm.pt")
    (tmp_path / "loop.toml").write_text("status_every = 2\n")
    args = ["train", "dfgan", "--data", shapes_h5, "--damsm", damsm, "--out", str(tmp_path / "runs"), "--steps", "4",
            "--image-size", "32", "--batch-size", "4", "--workers", "0", "--grid-every", "0", "--set", "ngf=8",
            "--set", "ndf=8", "--config", str(tmp_path / "loop.toml"), "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "t2itool", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # --json: one document on stdout, the status lines on stderr
    run = Path(result["run_dir"])
    log = (run / "log.txt").read_text().splitlines()
    assert log[0].startswith(f"run folder {run}: dfgan, 4 steps, global batch 4 (4 per process x 1), cpu")
    assert log[-1].startswith(f"run folder {run}: step 4,")
    status = [line for line in log if line.startswith("step ")]
    assert [int(line.split()[1]) for line in status] == [2, 4]
    for field in ("epoch", "loss_d", "loss_g", "elapsed", "eta", "img_per_sec", "peak_mem_mb"):
        assert all(f"  {field} " in line for line in status), field
    assert re.search(r"  elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d  ", status[0])
    assert re.search(r"  elapsed \d+:\d\d:\d\d  eta 0:00:00  ", status[1])
    for line in log:  # log.txt mirrors the console
        assert line in proc.stderr, line
    first, record = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert first["eta_sec"] > 0 and record["eta_sec"] == 0 and record["elapsed_sec"] > 0 and record["img_per_sec"] > 0
    assert 10 < record["peak_mem_mb"] < 64_000  # process max RSS on CPU, in MiB


def test_plain_progress_lines_when_not_a_terminal(tmp_path: Path, monkeypatch) -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False)
    bar = progress_bar(console)
    assert isinstance(bar, PlainProgress)
    monkeypatch.setenv("T2ITOOL_PROGRESS_SECONDS", "0")
    with progress_bar(console) as bar:
        task = bar.add_task("sampling", total=4)
        for _ in range(4):
            bar.advance(task, 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("sampling 4/4 (100%), elapsed 0:00:0")
    assert lines[0].startswith("sampling 1/4 (25%), elapsed ") and ", ETA " in lines[0]
    monkeypatch.setenv("T2ITOOL_PROGRESS_SECONDS", "3600")
    stream.truncate(0)
    stream.seek(0)
    with progress_bar(console) as bar:
        task = bar.add_task("features", total=100)
        for _ in range(100):
            bar.advance(task, 1)
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]  # only the closing line
    assert stream.getvalue().startswith("features 100/100 (100%)")


def test_prep_prints_progress_lines_into_a_pipe(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "T2ITOOL_PROGRESS_SECONDS": "0"}
    args = [sys.executable, "-m", "t2itool", "prep", "shapes", "--out", str(out), "--num-images", "8", "--image-size",
            "16"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("prep shapes ")]
    assert lines[0].startswith("prep shapes 1/8 (12%)") and lines[-1].startswith("prep shapes 8/8 (100%)")


def test_sample_prints_progress_lines_when_not_a_terminal(tmp_path: Path, monkeypatch) -> None:
    from test_sampling import _snapshot

    from t2itool import sampling

    monkeypatch.setenv("T2ITOOL_PROGRESS_SECONDS", "0")
    stream = io.StringIO()
    snap = _snapshot()
    prompts = sampling.prompts_from_texts(["a red bird", "a blue bird"], sampling.Vocabulary(snap.vocab_words))
    sampling.sample(snap, sampling.jobs_for(prompts, 3, 0), tmp_path / "s", batch_size=2,
                    console=Console(file=stream, force_terminal=False))  # fmt: skip
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["sampling 2/6 (33%)", "sampling 4/6 (67%)", "sampling 6/6 (100%)"]


def test_cli_runner_sees_plain_prep_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("T2ITOOL_PROGRESS_SECONDS", "0")
    result = CliRunner().invoke(app, ["prep", "shapes", "--out", str(tmp_path / "a.h5"), "--num-images", "4",
                                      "--image-size", "16"])  # fmt: skip
    assert result.exit_code == 0
    assert "prep shapes 4/4 (100%)" in result.stderr
