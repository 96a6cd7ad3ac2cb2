"""The Python API (`t2itool.prep` ... `t2itool.score`, `t2itool.Snapshot`): the whole chain on tiny shapes data, the
same files as the CLI, and `import t2itool` without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import t2itool
from t2itool.cli.main import app
from t2itool.errors import T2IError
from t2itool.metrics import extractors


def test_import_is_lazy() -> None:
    code = "import sys, t2itool; assert 'torch' not in sys.modules, 'torch imported'; print(sorted(t2itool.__all__))"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {"prep", "pretrain_damsm", "train", "sample", "score", "Snapshot"} <= set(eval(proc.stdout))


def test_whole_chain_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2ITOOL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "shapes.h5"
    summary = t2itool.prep("shapes", out=data, num_images=48, image_size=40, seed=1)
    assert summary.images == 48 and data.is_file()
    with pytest.raises(T2IError, match="choose one of"):
        t2itool.prep("mnist", out=tmp_path / "x.h5")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random backbone's warning
        damsm = t2itool.pretrain_damsm(
            data, tmp_path / "damsm", epochs=1, batch_size=16, backbone_weights="random", encoder_image_size=80,
            workers=0, rp_images=8, val_batches=1,
        )  # fmt: skip
    assert damsm.epoch == 1 and Path(damsm.checkpoint).is_file()

    result = t2itool.train(
        "dfgan", data=data, damsm=damsm.checkpoint, out=tmp_path / "runs", steps=2, image_size=32, batch_size=4,
        workers=0, grid_every=0, sets=["ngf=8", "ndf=8"],
    )  # fmt: skip
    run = Path(result.run_dir)
    assert result.step == 2 and (run / "log.txt").is_file()

    # sample --split test: the data file comes from the run's config.json
    summary = t2itool.sample(run, tmp_path / "split", split="test", device="cpu")
    assert summary["data"] == str(data) and summary["images"] > 0
    report = t2itool.score(tmp_path / "split", shapes_agreement=True)
    assert [r["metric"] for r in report.records] == ["colour_agreement", "shape_agreement"]
    assert report.samples_dir == tmp_path / "split"

    # the API writes what the CLI writes
    texts = ["a red circle", "a blue square"]
    api_summary = t2itool.sample(run, tmp_path / "api", text=texts, per_caption=2, seed=3)
    args = ["sample", str(run), "--out", str(tmp_path / "cli"), "--per-caption", "2", "--seed", "3", "--json"]
    cli = CliRunner().invoke(app, [*args, "--text", texts[0], "--text", texts[1]])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["images"] == api_summary["images"] == 4
    for png in sorted((tmp_path / "api").glob("c*.png")):
        assert png.read_bytes() == (tmp_path / "cli" / png.name).read_bytes(), png.name

    # score --generate through the API, and tensors for notebooks
    report = t2itool.score(run, generate=True, num_images=6, kid=True, extractor=extractors.TINY_EXTRACTOR)
    assert report.samples_dir.parent == run and report.records[0]["num_images"] == 6
    images = t2itool.Snapshot.load(result.snapshot).generate(texts, [3, 3])
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
