"""The engine end to end with a model that uses every part of it (tests/toy_staged_model.py): two noise streams, a
frozen stage-1 network loaded with --init-from, precomputed caption features, an epoch learning-rate schedule, two
discriminator phases on sub-batches, a global-batch loss; exact resume, 2 processes = 1, refusals before any folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_checks import assert_same_updates
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.store import Store
from t2itool.errors import T2IError
from t2itool.models.registry import PLUGINS_ENV
from t2itool.training import load_snapshot, train

COMMON = dict(image_size=16, workers=0, grid_every=0, grid_size=2, status_every=1, text="precomputed")


@pytest.fixture(autouse=True)
def toy_plugin(monkeypatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, "toy_staged_model")


@pytest.fixture(scope="module")
def featured_data(tmp_path_factory) -> str:
    """Shapes data (16 training images) with random 32-d sentence features per caption, stored by `prep`."""
    root = tmp_path_factory.mktemp("featured")
    plain = root / "plain.h5"
    runner = CliRunner()
    args = ["prep", "shapes", "--out", str(plain), "--num-images", "20", "--image-size", "16", "--seed", "3"]
    assert runner.invoke(app, args).exit_code == 0
    store = Store(plain)
    counts = {len(store.caption_indices(i)) for i in range(store.num_images)}
    assert len(counts) == 1
    features = np.random.default_rng(0).standard_normal((store.num_images, counts.pop(), 32)).astype(np.float32)
    np.save(root / "features.npy", features)
    out = root / "featured.h5"
    result = runner.invoke(
        app, [*args[:2], "--out", str(out), *args[4:], "--caption-features", str(root / "features.npy")]
    )
    assert result.exit_code == 0, result.output
    assert Store(out).caption_features.sentence_dim == 32
    return str(out)


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _stage1(data: str, out: Path, **options) -> str:
    result = train("toy-staged", data=data, out=str(out), steps=3, batch_size=4, snapshot_every=0,
                   sets={"text_dim": "32"}, **COMMON, **options)  # fmt: skip
    return result.run_dir


def test_staged_training_frozen_stage1_schedule_and_exact_resume(featured_data: str, tmp_path: Path) -> None:
    stage1 = _stage1(featured_data, tmp_path / "s1")
    stage1_weights = _state(sorted((Path(stage1) / "states").iterdir())[-1])["nets"]["generator"]
    sets = {"text_dim": "32", "stage": "2", "image_size": "32"}
    common = dict(data=featured_data, out=str(tmp_path / "s2"), batch_size=4, sets=sets,
                  init_from=f"{stage1}:generator", **{**COMMON, "image_size": 32})  # fmt: skip

    # 16 training images / batch 4 = 4 steps per epoch: steps 0-3 at lr, 4-5 at lr / 2.
    straight = train("toy-staged", steps=6, snapshot_every=3, keep=0, **common)
    state = _state(straight.state)
    generator = state["nets"]["generator"]
    for key, value in stage1_weights.items():  # frozen: stage 1 is exactly the stage-1 run's generator
        assert torch.equal(generator[f"stage1.{key}"], value), key
    trained = {p for group in state["optimizers"]["generator"]["param_groups"] for p in group["params"]}
    assert len(trained) == sum(
        1 for k in generator if k.startswith("refine.") and "running" not in k and "num_batches" not in k
    )
    stats = [json.loads(line) for line in (Path(straight.run_dir) / "stats.jsonl").read_text().splitlines()]
    assert [r["lr_generator"] for r in stats] == [1e-3] * 4 + [5e-4] * 2
    assert {"loss_d", "loss_g", "contrastive"} <= set(stats[-1])

    # Resume from step 3 to 6: the same weights, optimizer moments and learning rates as straight through.
    resumed = train("toy-staged", steps=6, resume=str(Path(straight.run_dir) / "states" / "state-000003.pt"),
                    snapshot_every=0, **{k: v for k, v in common.items() if k != "init_from"})  # fmt: skip
    again = _state(resumed.state)
    for name in state["nets"]:
        for key, value in state["nets"][name].items():
            assert torch.equal(value, again["nets"][name][key]), (name, key)
    for name in state["optimizers"]:
        assert again["optimizers"][name]["param_groups"][0]["lr"] == state["optimizers"][name]["param_groups"][0]["lr"]
        for slot, moments in state["optimizers"][name]["state"].items():
            assert torch.equal(moments["exp_avg_sq"], again["optimizers"][name]["state"][slot]["exp_avg_sq"])

    # The snapshot samples at the stage-2 size from the data file's features, never from free text.
    snapshot = load_snapshot(straight.run_dir)
    assert snapshot.text.kind == "precomputed" and snapshot.text.sentence_dim == 32
    assert not snapshot.generator.stage1.training
    runner = CliRunner()
    samples = tmp_path / "samples"
    result = runner.invoke(app, ["sample", straight.run_dir, "--out", str(samples), "--split", "test",
                                 "--data", featured_data])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]
    assert records and all(r["caption_index"] is not None for r in records)
    result = runner.invoke(app, ["sample", straight.run_dir, "--out", str(tmp_path / "free"), "--text", "a red ball"])
    assert result.exit_code == 2 and "--split test" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "free").exists()


def test_init_from_and_resume_refusals_leave_no_run_folder(featured_data: str, tmp_path: Path) -> None:
    stage1 = _stage1(featured_data, tmp_path / "s1")
    out = tmp_path / "s2"
    base = dict(data=featured_data, out=str(out), batch_size=4, steps=1, **{**COMMON, "image_size": 32})
    with pytest.raises(T2IError, match="does not fit generator.stage1"):  # stage 1 of another width
        train(
            "toy-staged", sets={"text_dim": "32", "stage": "2", "width": "4"}, init_from=f"{stage1}:generator", **base
        )
    with pytest.raises(T2IError, match="no network 'critic'"):
        train("toy-staged", sets={"text_dim": "32", "stage": "2"}, init_from=f"{stage1}:critic", **base)
    assert not out.exists() or not any(out.iterdir())

    state = sorted((Path(stage1) / "states").iterdir())[-1]
    with pytest.raises(T2IError, match=r"config keys that differ: width 8 -> 16"):
        train("toy-staged", sets={"text_dim": "32", "width": "16"}, resume=str(state),
              **{**base, "image_size": 16, "steps": 5})  # fmt: skip
    with pytest.raises(T2IError, match="16-d sentence features|32-d sentence features"):
        train("toy-staged", sets={"text_dim": "16"}, **{**base, "image_size": 16})
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_sub_batches_and_global_loss(featured_data: str, tmp_path: Path) -> None:
    stage1 = _stage1(featured_data, tmp_path / "s1")
    common = dict(data=featured_data, out=str(tmp_path / "s2"), steps=2, snapshot_every=0,
                  sets={"text_dim": "32", "stage": "2", "image_size": "32"}, init_from=f"{stage1}:generator",
                  **{**COMMON, "image_size": 32})  # fmt: skip
    one = train("toy-staged", batch_size=8, **common)
    two = train("toy-staged", batch_size=4, nproc=2, **common)
    assert_same_updates(_state(one.state), _state(two.state), lr=1e-3)
    last = [json.loads((Path(r.run_dir) / "stats.jsonl").read_text().splitlines()[-1]) for r in (one, two)]
    for key in ("loss_d", "loss_g", "contrastive"):
        assert last[0][key] == pytest.approx(last[1][key], rel=1e-4, abs=1e-5), key


def test_the_documented_minimal_model_trains(shapes_h5: str, tmp_path: Path, monkeypatch) -> None:
    """The example of docs/training.md "Adding a model", run as written: registered as a plugin, trained 2 steps."""
    import re
    import sys

    from test_train_loop import make_damsm

    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "doc_tiny_model.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_ENV, "doc_tiny_model")
    sys.modules.pop("doc_tiny_model", None)
    damsm = make_damsm(shapes_h5, tmp_path / "damsm.pt")
    result = train("tiny", data=shapes_h5, damsm=damsm, out=str(tmp_path / "runs"), steps=2, batch_size=4,
                   image_size=16, workers=0, grid_every=0, grid_size=2, snapshot_every=0)  # fmt: skip
    assert result.step == 2 and load_snapshot(result.run_dir).spec.name == "tiny"
