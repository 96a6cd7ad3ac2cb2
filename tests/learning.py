"""Shared part of the slow "does model X learn its captions" tests: the shapes data and a DAMSM checkpoint made once
per test session (fixture `learning_data` in conftest.py), and train -> sample --split test -> score
--shapes-agreement through the real commands, returning the colour-agreement record (value beside chance)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from t2itool.cli.main import app


@dataclass(frozen=True)
class LearningData:
    data: str  # 2,048 shapes images stored at 38 px (32 px crops), 10 captions each
    damsm: str  # 3 DAMSM epochs, random Inception backbone, 80 px encoder input (as the demo)


def make_learning_data(root: Path) -> LearningData:
    from t2itool.data.sources.shapes import build_shapes
    from t2itool.encoders.pretrain import PretrainConfig, pretrain

    data = str(root / "shapes.h5")
    build_shapes(data, num_images=2048, image_size=38, seed=0)
    damsm = pretrain(
        PretrainConfig(data=data, out=str(root / "damsm"), epochs=3, batch_size=32, backbone_weights="random",
                       encoder_image_size=80, workers=0, rp_images=64, val_batches=2),
        log=lambda line: None,
    ).checkpoint  # fmt: skip
    return LearningData(data, str(damsm))


def colour_agreement(model: str, learning: LearningData, out: Path, **train_options: Any) -> dict[str, Any]:
    """Train `model` with `train_options` (steps, image_size, batch_size, sets, ...), sample every test caption from
    the final snapshot and score colour agreement; returns the score record (value, chance, num_scored, ...)."""
    from t2itool.training import train

    options = dict(workers=0, grid_every=0, snapshot_every=0, **train_options)
    result = train(model, data=learning.data, damsm=learning.damsm, out=str(out / "runs"), **options)
    runner = CliRunner()
    samples = out / "samples"
    args = ["sample", str(result.run_dir), "--out", str(samples), "--split", "test", "--data", learning.data]
    sampled = runner.invoke(app, args)
    assert sampled.exit_code == 0, sampled.output
    scored = runner.invoke(app, ["score", str(samples), "--data", learning.data, "--shapes-agreement", "--json"])
    assert scored.exit_code == 0, scored.output
    colour = json.loads(scored.stdout)[0]
    assert colour["metric"] == "colour_agreement" and colour["num_scored"] > 500, colour
    return colour
