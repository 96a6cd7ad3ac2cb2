"""`t2itool sample` and `t2itool score` through Typer's CliRunner (tiny extractor; snapshot loader stubbed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from test_sampling import _snapshot
from typer.testing import CliRunner

from t2itool.cli import sample as sample_cli
from t2itool.cli import score as score_cli
from t2itool.metrics import extractors

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    sample_cli.register(app)
    score_cli.register(app)
    return app


@pytest.fixture()
def fake_snapshot(monkeypatch: pytest.MonkeyPatch):
    import t2itool.training.checkpoint as checkpoint

    snap = _snapshot()
    snap.step = 5  # type: ignore[attr-defined]
    monkeypatch.setattr(checkpoint, "load_snapshot", lambda path, device="cpu": snap)
    return snap


def _text(result) -> str:
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_sample_then_score_with_tiny_extractor(tmp_path: Path, fake_snapshot, shapes_h5: str, monkeypatch) -> None:
    monkeypatch.setenv("T2ITOOL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "samples"
    args = [
        "sample",
        "run",
        "--out",
        str(out),
        "--text",
        "a small purple bird",
        "--text",
        "green circle",
        "--per-caption",
        "6",
        "--batch-size",
        "5",
    ]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, _text(result)
    assert "purple" in _text(result) and "not in the vocabulary" in _text(result)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 12
    args = [
        "score",
        str(out),
        "--data",
        shapes_h5,
        "--fid",
        "--is",
        "--kid",
        "--json",
        "--extractor",
        extractors.TINY_EXTRACTOR,
    ]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, _text(result)
    records = json.loads(result.stdout)
    assert [r["metric"] for r in records] == ["is", "fid", "kid"]
    assert all(r["num_images"] == 12 and r["snapshot_sha256"] == "f" * 64 for r in records)
    assert records[1]["value"] > 0 and records[2]["kid_subset_size"] == 12
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["metric"] for line in lines] == ["is", "fid", "kid"]
    assert "lowered" in _text(result)
    args = ["score", str(out), "--data", shapes_h5, "--r-precision", "--damsm", str(tmp_path / "damsm.pt")]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 2 and "caption index" in _text(result)  # free-text samples have none
    args = ["score", "--reference-only", "--data", shapes_h5, "--extractor", extractors.TINY_EXTRACTOR]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0 and "already cached" not in _text(result), _text(result)
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0 and "already cached" in _text(result), _text(result)


def test_score_without_weights_offline_is_one_clear_error(tmp_path: Path, shapes_h5: str, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(extractors, "_online", lambda *a, **k: False)
    (tmp_path / "s").mkdir()
    result = runner.invoke(_app(), ["score", str(tmp_path / "s"), "--data", shapes_h5, "--fid"])
    assert result.exit_code == 2
    assert extractors.TF_WEIGHTS_FILE in _text(result) and "--inception-weights" in _text(result)


def test_cli_flag_errors(tmp_path: Path, shapes_h5: str, fake_snapshot) -> None:
    result = runner.invoke(_app(), ["sample", "run", "--out", str(tmp_path), "--split", "test"])
    assert result.exit_code == 2 and "--data" in _text(result)
    result = runner.invoke(_app(), ["sample", "run", "--out", str(tmp_path), "--text", "bird", "--truncation", "x"])
    assert result.exit_code == 2 and "--truncation" in _text(result)
    result = runner.invoke(_app(), ["score", str(tmp_path), "--data", shapes_h5])
    assert result.exit_code == 2 and "--fid" in _text(result)
    result = runner.invoke(_app(), ["score", str(tmp_path), "--data", shapes_h5, "--r-precision"])
    assert result.exit_code == 2 and "--damsm" in _text(result)


def test_score_generate_samples_the_protocol(tmp_path: Path, shapes_h5: str, monkeypatch) -> None:
    from test_sampling import BagOfWordsEncoder

    import t2itool.training.checkpoint as checkpoint
    from t2itool.data.store import Store

    store = Store(shapes_h5)
    snap = _snapshot()
    snap.text_encoder = BagOfWordsEncoder(len(store.vocab)).eval()
    snap.vocab_words, snap.vocab_sha256, snap.step = store.vocab.words, store.vocab_sha256, 1  # type: ignore[attr-defined]
    monkeypatch.setattr(checkpoint, "load_snapshot", lambda path, device="cpu": snap)
    out = tmp_path / "eval"
    args = [
        "score",
        "run",
        "--generate",
        "--num-images",
        "12",
        "--samples-out",
        str(out),
        "--data",
        shapes_h5,
        "--is",
        "--json",
        "--extractor",
        extractors.TINY_EXTRACTOR,
    ]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, _text(result)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(
        store.caption_image(r["caption_index"]) in store.split_indices("test") for r in records
    )
    assert json.loads(result.stdout)[0]["metric"] == "is"
    # --passes: whole passes over the test images (a shapes file defaults to one; CUB 10, COCO 1).
    out2 = tmp_path / "eval2"
    result = runner.invoke(_app(), [*args[:3], "--passes", "2", *args[5:6], str(out2), *args[7:]])
    assert result.exit_code == 0, _text(result)
    records = [json.loads(line) for line in (out2 / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(store.split_indices("test"))
    assert {r["seed"] for r in records} == {0, 1}
    result = runner.invoke(_app(), [*args[:3], "--passes", "0", *args[5:]])
    assert result.exit_code == 2 and "--passes 0" in _text(result)
