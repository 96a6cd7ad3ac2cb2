"""`sample --split` and `score` find the run's data file; `score --generate` checks weights before sampling; the
generate-then-score protocol as a library function (snapshot loader stubbed, tiny extractor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from test_sampling import BagOfWordsEncoder, _snapshot
from typer.testing import CliRunner

from t2itool.cli import sample as sample_cli
from t2itool.cli import score as score_cli
from t2itool.errors import T2IError
from t2itool.metrics import extractors

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    sample_cli.register(app)
    score_cli.register(app)
    return app


def _text(result) -> str:
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture()
def run_snapshot(tmp_path: Path, shapes_h5: str, monkeypatch: pytest.MonkeyPatch):
    """A fake snapshot living in RUN/snapshots/ of a run whose config.json names the shapes data."""
    import t2itool.training.checkpoint as checkpoint
    from t2itool.data.store import Store

    run = tmp_path / "00000-dfgan-shapes"
    (run / "snapshots").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "dfgan", "data": shapes_h5}))
    store = Store(shapes_h5)
    snap = _snapshot()
    snap.path = run / "snapshots" / "snapshot-000005.pt"
    snap.text_encoder = BagOfWordsEncoder(len(store.vocab)).eval()
    snap.vocab_words, snap.vocab_sha256, snap.step = store.vocab.words, store.vocab_sha256, 5  # type: ignore[attr-defined]
    loads = []

    def load(path, device="cpu"):
        loads.append(path)
        return snap

    monkeypatch.setattr(checkpoint, "load_snapshot", load)
    snap.loads = loads  # type: ignore[attr-defined]
    return snap


def test_sample_split_and_score_use_the_runs_data_file(tmp_path: Path, run_snapshot, shapes_h5: str, monkeypatch):
    from t2itool.data.store import Store

    monkeypatch.setenv("T2ITOOL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "samples"
    run = run_snapshot.path.parent.parent
    result = runner.invoke(_app(), ["sample", str(run), "--out", str(out), "--split", "test", "--json"])
    assert result.exit_code == 0, _text(result)
    summary = json.loads(result.stdout)
    test_captions = sum(len(Store(shapes_h5).caption_indices(i)) for i in Store(shapes_h5).split_indices("test"))
    assert summary["data"] == shapes_h5 and summary["images"] == test_captions and summary["device"] == "cpu"
    result = runner.invoke(_app(), ["score", str(out), "--is", "--json", "--extractor", extractors.TINY_EXTRACTOR])
    assert result.exit_code == 0, _text(result)
    (record,) = json.loads(result.stdout)
    assert record["metric"] == "is" and record["data"] == str(Path(shapes_h5).resolve())

    (run / "config.json").write_text(json.dumps({"model": "dfgan"}))
    result = runner.invoke(_app(), ["sample", str(run), "--out", str(out), "--split", "test"])
    assert result.exit_code == 2 and "--data FILE is needed" in _text(result) and "config.json" in _text(result)
    free = tmp_path / "free"
    free.mkdir()
    result = runner.invoke(_app(), ["score", str(free), "--is"])  # no samples.jsonl: no snapshot to ask, not scorable
    assert result.exit_code == 2 and "samples.jsonl: missing" in _text(result)
    (free / "samples.jsonl").write_text(json.dumps({"file": "a.png", "caption": "a red square"}) + "\n")
    result = runner.invoke(_app(), ["score", str(free), "--is"])  # records name no snapshot: --data is needed
    assert result.exit_code == 2 and "--data FILE is needed" in _text(result)


def test_score_generate_checks_weights_before_sampling(tmp_path: Path, run_snapshot, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(extractors, "_online", lambda *a, **k: False)
    out = tmp_path / "eval"
    run = str(run_snapshot.path.parent.parent)
    result = runner.invoke(
        _app(), ["score", run, "--generate", "--samples-out", str(out), "--fid", "--num-images", "4"]
    )
    assert result.exit_code == 2 and extractors.TF_WEIGHTS_FILE in _text(result)
    assert not out.exists() and run_snapshot.loads == []  # nothing generated, the snapshot not even loaded
    missing = tmp_path / "no-damsm.pt"
    args = ["score", run, "--generate", "--samples-out", str(out), "--r-precision", "--damsm", str(missing)]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 2 and str(missing) in _text(result)
    assert not out.exists() and run_snapshot.loads == []
    args = ["score", run, "--generate", "--samples-out", str(out), "--fid", "--fid-flavor", "torchvision"]
    result = runner.invoke(_app(), [*args, "--inception-weights", str(tmp_path / "none.pth")])
    assert result.exit_code == 2 and "--inception-weights" in _text(result) and not out.exists()


def test_generate_and_score_library_function(tmp_path: Path, run_snapshot, shapes_h5: str, monkeypatch) -> None:
    from t2itool.scoring import generate_and_score

    monkeypatch.setenv("T2ITOOL_CACHE", str(tmp_path / "cache"))
    run = run_snapshot.path.parent.parent
    report = generate_and_score(run, num_images=10, isc=True, kid=True, extractor=extractors.TINY_EXTRACTOR)
    assert report.samples_dir == run / "eval-snapshot-000005-10"
    assert [r["metric"] for r in report.records] == ["is", "kid"]
    assert all(r["num_images"] == 10 and r["data"] == str(Path(shapes_h5).resolve()) for r in report.records)
    lines = (report.samples_dir / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["metric"] for line in lines] == ["is", "kid"]
    with pytest.raises(T2IError, match="choose at least one"):
        generate_and_score(run, num_images=10)
