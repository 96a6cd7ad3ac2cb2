"""The training loop end to end on the shapes fixture: run folder, snapshots, exact resume, keep-K, non-finite stop,
Ctrl-C, vocabulary refusal, and 2 gloo processes matching 1 process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from t2itool.errors import T2IError
from t2itool.models.dfgan.recipe import DFGANRecipe
from t2itool.training import load_snapshot, train

TINY = dict(
    image_size=32, batch_size=4, workers=0, grid_every=0, grid_size=4, status_every=2, sets={"ngf": "8", "ndf": "8"}
)


def make_damsm(data: str, path: Path) -> str:
    """A freshly initialised DAMSM checkpoint for `data`'s vocabulary, written by the encoders' own save function."""
    from t2itool.data.store import Store
    from t2itool.encoders import ImageEncoder, TextEncoder, save_damsm

    store = Store(data)
    torch.manual_seed(0)
    save_damsm(path, TextEncoder(len(store.vocab)), ImageEncoder(), store=store)
    return str(path)


@pytest.fixture(scope="module")
def damsm_ckpt(shapes_h5: str, tmp_path_factory) -> str:
    return make_damsm(shapes_h5, tmp_path_factory.mktemp("damsm") / "damsm.pt")


def _state(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_run_folder_snapshot_and_exact_resume(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    common = dict(data=shapes_h5, damsm=damsm_ckpt, out=str(out), snapshot_every=2, **TINY)
    first = train("dfgan", steps=4, keep=0, **common)
    run = Path(first.run_dir)
    assert run.name == "00000-dfgan-32px-batch4"
    assert json.loads((run / "config.json").read_text())["model_config"]["ngf"] == 8
    lines = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] and all("loss_d" in r and "loss_g" in r for r in lines)
    assert sorted(p.name for p in (run / "grids").iterdir()) == [
        "grid-000000.png", "grid-000000.txt", "grid-000004.png", "grid-000004.txt",
    ]  # fmt: skip
    assert len((run / "grids" / "grid-000000.txt").read_text().splitlines()) == 4
    assert sorted(p.name for p in (run / "states").iterdir()) == ["state-000002.pt", "state-000004.pt"]

    # Resume from step 2 and run to 4: the same weights, optimizer moments and EMA-free snapshot as straight through.
    second = train("dfgan", steps=4, keep=1, resume=str(run / "states" / "state-000002.pt"), **common)
    a, b = _state(first.state), _state(second.state)
    assert a["step"] == b["step"] == 4
    for name in a["nets"]:
        assert _max_diff(a["nets"][name], b["nets"][name]) <= 1e-6, name
    for name in a["optimizers"]:
        exp_avg = [s["exp_avg_sq"] for s in a["optimizers"][name]["state"].values()]
        exp_avg_b = [s["exp_avg_sq"] for s in b["optimizers"][name]["state"].values()]
        assert max((x - y).abs().max().item() for x, y in zip(exp_avg, exp_avg_b, strict=True)) <= 1e-6
    # keep=1 leaves only the newest files of the resumed run.
    assert [p.name for p in (Path(second.run_dir) / "states").iterdir()] == ["state-000004.pt"]

    snap = load_snapshot(first.run_dir)
    from t2itool.data.store import Store

    store = Store(shapes_h5)
    assert (snap.step, snap.image_size, snap.spec.name) == (4, 32, "dfgan")
    assert snap.vocab_sha256 == store.vocab_sha256 and len(snap.vocab_words) == len(store.vocab)
    assert not snap.generator.training and not snap.text_encoder.training
    assert _max_diff(snap.generator.state_dict(), a["nets"]["generator"]) == 0.0
    with pytest.raises(T2IError, match="not a t2itool snapshot"):
        load_snapshot(first.state)


def test_nonfinite_loss_stops_and_keeps_last_good_state(
    shapes_h5: str, damsm_ckpt: str, tmp_path: Path, monkeypatch
) -> None:
    original = DFGANRecipe.train_step

    def poisoned(self, batch, ctx):
        if ctx.step == 3:
            ctx.backward(torch.tensor(float("nan")), "loss_d")
        return original(self, batch, ctx)

    monkeypatch.setattr(DFGANRecipe, "train_step", poisoned)
    with pytest.raises(T2IError, match=r"non-finite loss_d \(nan\) in step 4") as info:
        train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=6, snapshot_every=2, **TINY)
    states = sorted(p.name for p in next(tmp_path.iterdir()).joinpath("states").iterdir())
    assert states == ["state-000002.pt", "state-000003.pt"] and "state-000003.pt" in str(info.value)


def test_interrupt_saves_state_and_stops(shapes_h5: str, damsm_ckpt: str, tmp_path: Path, monkeypatch) -> None:
    original = DFGANRecipe.train_step

    def interrupted(self, batch, ctx):
        if ctx.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the loop finishes this step, then saves and stops
        return original(self, batch, ctx)

    monkeypatch.setattr(DFGANRecipe, "train_step", interrupted)
    result = train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=10, snapshot_every=0, **TINY)
    assert result.interrupted and result.step == 2
    assert Path(result.state).name == "state-000002.pt" and _state(result.state)["step"] == 2


def test_damsm_with_other_vocabulary_is_refused(shapes_h5: str, tmp_path: Path) -> None:
    from t2itool.data.sources.shapes import build_shapes

    other_data = tmp_path / "other.h5"
    build_shapes(other_data, num_images=8, image_size=32, seed=1)
    other = make_damsm(str(other_data), tmp_path / "other.pt")
    with pytest.raises(T2IError, match="vocab"):
        train("dfgan", data=shapes_h5, damsm=other, out=str(tmp_path / "runs"), steps=1, **TINY)


def test_bf16_channels_last_step_on_cpu(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    result = train(
        "dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=1, amp="bf16", channels_last=True,
        snapshot_every=0, **TINY,
    )  # fmt: skip
    stats = json.loads((Path(result.run_dir) / "stats.jsonl").read_text().splitlines()[-1])
    assert stats["step"] == 1 and all(abs(v) < 1e6 for k, v in stats.items() if k.startswith("loss"))


@pytest.mark.slow
def test_two_gloo_processes_match_one(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    common = dict(data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=2, snapshot_every=0, **TINY)
    common.pop("batch_size")
    one = train("dfgan", batch_size=4, **common)
    two = train("dfgan", batch_size=2, nproc=2, **common)
    assert Path(two.run_dir).name.endswith("-32px-batch2-nproc2")
    a, b = _state(one.state), _state(two.state)
    lr_d = 4e-4
    for name in a["nets"]:
        # Adam's first updates are ~lr * sign(grad): float-order differences in the gradient average may move a
        # weight by a fraction of lr; anything systematic (wrong noise, pairing or sharding) moves many by ~lr.
        assert _max_diff(a["nets"][name], b["nets"][name]) < 0.25 * lr_d, name
        mean = sum((a["nets"][name][k] - b["nets"][name][k]).abs().sum() for k in a["nets"][name])
        count = sum(v.numel() for v in a["nets"][name].values())
        assert mean / count < 1e-6, name
    stats_a = [json.loads(x) for x in (Path(one.run_dir) / "stats.jsonl").read_text().splitlines()]
    stats_b = [json.loads(x) for x in (Path(two.run_dir) / "stats.jsonl").read_text().splitlines()]
    for key in ("loss_d", "loss_g", "logit_mismatch"):
        assert stats_a[-1][key] == pytest.approx(stats_b[-1][key], rel=1e-4, abs=1e-5)
