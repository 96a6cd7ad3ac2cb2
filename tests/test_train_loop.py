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


def test_run_folder_snapshot_and_exact_resume(shapes_h5: str, damsm_ckpt: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    common = dict(data=shapes_h5, damsm=damsm_ckpt, out=str(out), snapshot_every=2, **TINY)
    first = train("dfgan", steps=4, keep=0, **common)
    assert "global batch 4 (4 per process x 1)" in capsys.readouterr().err
    run = Path(first.run_dir)
    assert run.name == "00000-dfgan-shapes-32px-batch4"  # model, data file stem, size, batch
    assert json.loads((run / "config.json").read_text())["model_config"]["ngf"] == 8
    lines = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] and all("loss_d" in r and "loss_g" in r for r in lines)
    assert sorted(p.name for p in (run / "grids").iterdir()) == [
        "grid-000000.png", "grid-000000.txt", "grid-000004.png", "grid-000004.txt",
    ]  # fmt: skip
    grid_lines = (run / "grids" / "grid-000000.txt").read_text().splitlines()
    assert len(grid_lines) == 5 and grid_lines[0].startswith("column 0: the caption's own image")
    assert sorted(p.name for p in (run / "states").iterdir()) == ["state-000002.pt", "state-000004.pt"]

    # Resume from step 2 and run to 4 with nothing but the state and --keep: data, DAMSM, batch, out and the total
    # come from the run's config.json; the same weights and optimizer moments as straight through.
    second = train("dfgan", keep=1, resume=str(run / "states" / "state-000002.pt"))
    assert Path(second.run_dir).parent == out and Path(second.run_dir).name == "00001-dfgan-shapes-32px-batch4"
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

    # The Python API's Snapshot.generate gives the pixels `t2itool sample --text` writes for that caption and seed.
    from typer.testing import CliRunner

    from t2itool import sampling
    from t2itool.cli.main import app
    from t2itool.training import Snapshot

    texts = ["a red circle", "a blue square on a green background"]
    images = Snapshot.load(first.run_dir).generate(texts, seeds=[3, 5])
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1.0
    args = ["sample", first.run_dir, "--out", str(tmp_path / "s"), "--seed", "3"]
    assert CliRunner().invoke(app, [*args, *sum((["--text", t] for t in texts), [])]).exit_code == 0
    import numpy as np
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "s" / "c000000-s0003.png"))
    np.testing.assert_array_equal(png, sampling.to_uint8(images[:1])[0])
    with pytest.raises(T2IError, match="2 texts but 3 seeds"):
        snap.generate(texts, seeds=[1, 2, 3])


def test_nonfinite_loss_stops_and_keeps_last_good_state(
    shapes_h5: str, damsm_ckpt: str, tmp_path: Path, monkeypatch
) -> None:
    original = DFGANRecipe.train_step

    def poisoned(self, batch, ctx):
        if ctx.step == 3:
            with ctx.update("discriminator") as phase:
                phase.backward(torch.tensor(float("nan")), "loss_d")
        return original(self, batch, ctx)

    monkeypatch.setattr(DFGANRecipe, "train_step", poisoned)
    with pytest.raises(T2IError, match=r"non-finite loss_d \(nan\) in step 4") as info:
        train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=6, snapshot_every=2, **TINY)
    states = sorted(p.name for p in next(tmp_path.iterdir()).joinpath("states").iterdir())
    assert states == ["state-000002.pt", "state-000003.pt"] and "state-000003.pt" in str(info.value)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_state_and_stops(stop, shapes_h5: str, damsm_ckpt: str, tmp_path: Path, monkeypatch) -> None:
    original = DFGANRecipe.train_step

    def interrupted(self, batch, ctx):
        if ctx.step == 1:
            os.kill(os.getpid(), stop)  # Ctrl-C or a scheduler's kill: the loop finishes this step, saves, stops
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
def test_compiled_generator_on_cpu_trains_grids_and_snapshots(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    """`--compile` on CPU (the default of long CPU runs): the compiled generator trains through the real loop, grids
    run it eager (no recompilation, no warning), and the state and snapshot keep the eager state-dict names, so a
    snapshot samples and a state resumes without compiling."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(
            "dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=2, compile=True, grid_every=1,
            snapshot_every=0, **{k: v for k, v in TINY.items() if k != "grid_every"},
        )  # fmt: skip
    assert not [w for w in caught if str(w.message).startswith("--compile:")], [str(w.message) for w in caught]
    run = Path(result.run_dir)
    assert "step: fp32, channels-last, compile, foreach Adam" in (run / "log.txt").read_text()
    assert (run / "grids" / "grid-000001.png").is_file()
    eager = train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path / "eager"), steps=2, compile=False,
                  snapshot_every=0, **TINY)  # fmt: skip
    assert _state(result.state)["nets"].keys() == _state(eager.state)["nets"].keys()
    for name, weights in _state(result.state)["nets"].items():
        assert weights.keys() == _state(eager.state)["nets"][name].keys(), name
    assert load_snapshot(result.snapshot).generator is not None
    resumed = train("dfgan", resume=result.run_dir, steps=3, compile=False)
    assert _state(resumed.state)["step"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_compile_path(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    """The GPU default path (channels-last + compile) with bf16 trains dfgan-ssacn, DAMSM loss included."""
    result = train(
        "dfgan-ssacn", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=3, batch_size=4, workers=0,
        device="cuda", amp="bf16", channels_last=True, compile=True, grid_every=0, snapshot_every=0,
        sets={"ngf": "8", "ndf": "8"}, image_size=64,
    )  # fmt: skip
    lines = (Path(result.run_dir) / "stats.jsonl").read_text().splitlines()
    stats = json.loads(lines[-1])
    assert stats["step"] == 3
    assert all(abs(v) < 1e6 for k, v in stats.items() if k.startswith("loss")), stats


def test_resume_needs_steps_beyond_the_state_and_leaves_nothing(
    shapes_h5: str, damsm_ckpt: str, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    first = train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(out), steps=2, snapshot_every=0, **TINY)
    with pytest.raises(T2IError, match=r"state is at step 2, --steps 2 is not beyond it"):
        train("dfgan", resume=first.run_dir, steps=2)
    with pytest.raises(T2IError, match="for model 'dfgan', not 'dfgan-ssacn'"):
        train("dfgan-ssacn", resume=first.run_dir, steps=4)
    assert [p.name for p in out.iterdir()] == [Path(first.run_dir).name]


def test_evaluation_during_training_keeps_the_best_snapshot(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    result = train(
        "dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=4, snapshot_every=0, keep=1,
        eval_every=2, metrics=["shapes_agreement", "r_precision"], eval_images=8, **TINY,
    )  # fmt: skip
    run = Path(result.run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({(r["step"], r["metric"]) for r in records}) == [
        (step, metric) for step in (2, 4) for metric in ("colour_agreement", "r_precision", "shape_agreement")
    ]
    assert all(r["num_images"] == 8 for r in records)
    for metric in ("colour_agreement", "r_precision"):  # judged metrics: a best snapshot each
        best = max((r for r in records if r["metric"] == metric), key=lambda r: (r["value"], -r["step"]))
        snapshot = load_snapshot(run / f"best-{metric}.pt")
        assert snapshot.step == best["step"] and best.get("best")
    assert [p.name for p in (run / "snapshots").iterdir()] == ["snapshot-000004.pt"]  # --keep spares best-*.pt
    with pytest.raises(T2IError, match="--metrics fid needs|TF-Inception|inception"):
        train("dfgan", data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path / "x"), steps=2, eval_every=1,
              metrics=["fid"], inception_weights=str(tmp_path / "missing.pth"), **TINY)  # fmt: skip
    assert not (tmp_path / "x").exists()


def _newest_state(out: Path) -> Path | None:
    states = [p for run in out.iterdir() if (run / "states").is_dir() for p in (run / "states").glob("state-*.pt")]
    return max(states, key=lambda p: (int(p.stem.split("-")[1]), p.parent.parent.name), default=None)


def _cli_train(out: Path, data: str, damsm: str, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "t2itool", "train", "dfgan", "--data", data, "--damsm", damsm, "--out", str(out),
            "--image-size", "32", "--batch-size", "4", "--workers", "0", "--grid-every", "0", "--set", "ngf=8",
            "--set", "ndf=8", "--snapshot-every", "1", "--keep", "2", *extra]  # fmt: skip


def _wait_for_training(out: Path, process, runs_before: int = 0, timeout: float = 300.0) -> None:
    """Until the process's own (newest) run folder has started training, or the process ended."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < timeout and process.poll() is None:
        runs = sorted(out.iterdir()) if out.is_dir() else []
        if len(runs) > runs_before and (runs[-1] / "stats.jsonl").is_file():
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_to_the_cli_saves_a_state(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "runs"
    process = subprocess.Popen(_cli_train(out, shapes_h5, damsm_ckpt, "--steps", "100000", "--snapshot-every", "0"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_training(out, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stderr
    assert _newest_state(out) is not None


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(
    shapes_h5: str, damsm_ckpt: str, tmp_path: Path
) -> None:
    """kill -9 can land anywhere (including while a state is written); resuming from the newest complete state, as
    often as needed, ends with the weights of a run that was never interrupted."""
    import random
    import subprocess
    import time

    total = 12  # long enough that a kill lands before the end on an idle machine too
    straight = tmp_path / "straight"
    done = subprocess.run(_cli_train(straight, shapes_h5, damsm_ckpt, "--steps", str(total)), capture_output=True)
    assert done.returncode == 0, done.stderr
    expected = _state(_newest_state(straight))

    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    command = _cli_train(out, shapes_h5, damsm_ckpt, "--steps", str(total))
    for _launch in range(12):
        runs_before = len(list(out.iterdir())) if out.is_dir() else 0
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills < 3:
            _wait_for_training(out, process, runs_before)
            time.sleep(rng.uniform(0.0, 0.5))
            if process.poll() is None:
                process.kill()
                kills += 1
        _, stderr = process.communicate(timeout=600)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, stderr  # only our kills may stop it
        state = _newest_state(out)
        base = _cli_train(out, shapes_h5, damsm_ckpt, "--steps", str(total))
        command = base if state is None else [*base[:5], "--resume", str(state)]  # --resume RUN_STATE alone
    else:
        pytest.fail("the run never finished")
    assert kills >= 1
    final = _state(_newest_state(out))
    assert final["step"] == total
    for name in expected["nets"]:
        assert _max_diff(expected["nets"][name], final["nets"][name]) == 0.0, name
