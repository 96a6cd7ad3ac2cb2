"""Training config resolution, data sharding and per-sample noise: the pieces that need no dataset."""

from __future__ import annotations

import pytest
import torch

from t2itool.errors import T2IError
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.noise import NoiseStream
from t2itool.training.batches import ShardedBatches
from t2itool.training.config import resolve_config, run_name


def test_precedence_preset_file_flags(tmp_path) -> None:
    config = resolve_config("dfgan", flags={"preset": "birds"})
    assert (config.batch_size, config.epochs, config.steps) == (32, 1300, None)
    assert config.model_config["image_size"] == 256
    toml = tmp_path / "run.toml"
    toml.write_text("batch_size = 16\nsteps = 100\n[model]\nngf = 16\nlr_g = 2e-4\n")
    config = resolve_config("dfgan", config_file=str(toml), sets={"ngf": "8"}, flags={"preset": "coco", "seed": 3})
    assert (config.batch_size, config.steps, config.epochs, config.seed) == (16, 100, None, 3)  # file steps drop epochs
    assert config.model_config["ngf"] == 8 and config.model_config["lr_g"] == 2e-4  # --set beats the file
    config = resolve_config("dfgan", config_file=str(toml), flags={"epochs": 2, "image_size": 64, "batch_size": 4})
    assert (config.steps, config.epochs, config.model_config["image_size"]) == (None, 2, 64)
    assert run_name(config, 1) == "dfgan-64px-batch4"
    flags = {"preset": "coco", "gpus": [0, 1], "image_size": 64, "batch_size": 8, "data": "data/my birds.h5"}
    config = resolve_config("dfgan", flags=flags)
    assert run_name(config, 2) == "dfgan-my_birds-64px-batch8-gpus2"  # named after the data file, not the preset


def test_presets_state_the_global_batch(tmp_path, monkeypatch) -> None:
    """Presets give the paper's global batch, split over the processes; --batch-size stays per process."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_config("dfgan-ssacn", flags={"preset": "birds"}).batch_size == 24
    assert resolve_config("dfgan-ssacn", flags={"preset": "birds", "nproc": 2}).batch_size == 12
    assert resolve_config("dfgan", flags={"preset": "coco", "gpus": [0, 1, 2, 3]}).batch_size == 8
    assert resolve_config("dfgan-ssacn", flags={"preset": "birds", "nproc": 2, "batch_size": 24}).batch_size == 24
    with pytest.raises(T2IError, match="--preset birds: global batch 24 does not split evenly over 5 processes"):
        resolve_config("dfgan-ssacn", flags={"preset": "birds", "nproc": 5})
    assert resolve_config("dfgan-ssacn", flags={"preset": "birds", "nproc": 5, "batch_size": 5}).batch_size == 5
    monkeypatch.setenv("WORLD_SIZE", "3")  # under torchrun
    assert resolve_config("dfgan-ssacn", flags={"preset": "coco"}).batch_size == 8
    monkeypatch.delenv("WORLD_SIZE")
    toml = tmp_path / "run.toml"
    toml.write_text("global_batch = 48\n")
    assert resolve_config("dfgan", config_file=str(toml), flags={"preset": "birds", "nproc": 2}).batch_size == 24
    toml.write_text("global_batch = 'many'\n")
    with pytest.raises(T2IError, match="global_batch"):
        resolve_config("dfgan", config_file=str(toml))


def test_errors_name_the_key() -> None:
    with pytest.raises(T2IError, match="unknown key; valid keys: .*gp_power.*ngf"):
        resolve_config("dfgan", sets={"ngff": "8"})
    with pytest.raises(T2IError, match="--set ngf='eight': expected int"):
        resolve_config("dfgan", sets={"ngf": "eight"})
    with pytest.raises(T2IError, match="--amp"):
        resolve_config("dfgan", flags={"amp": "fp8"})
    with pytest.raises(T2IError, match="presets birds, coco, flowers"):
        resolve_config("dfgan", flags={"preset": "celeba"})
    with pytest.raises(T2IError, match="unknown model"):
        resolve_config("nope")


def test_sharded_order_is_split_independent() -> None:
    whole = ShardedBatches(50, 8, 1, 0, seed=5)
    halves = [ShardedBatches(50, 4, 2, rank, seed=5) for rank in range(2)]
    assert whole.steps_per_epoch == halves[0].steps_per_epoch == 6
    for epoch in range(2):
        order = whole.epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(50))
        for b in range(whole.steps_per_epoch):
            assert whole.indices(order, b) == halves[0].indices(order, b) + halves[1].indices(order, b)
    assert not torch.equal(whole.epoch_order(0), whole.epoch_order(1))
    with pytest.raises(T2IError, match="fewer than one global batch"):
        ShardedBatches(7, 4, 2, 0, seed=0)


def _batch(positions: list[int], global_size: int) -> Batch:
    n = len(positions)
    zeros = torch.zeros(n, dtype=torch.int64)
    return Batch([torch.zeros(n, 3, 4, 4)], torch.ones(n, 3, dtype=torch.int64), zeros, zeros, zeros, zeros,
                 torch.tensor(positions), global_size)  # fmt: skip


def test_noise_depends_on_position_and_stream_not_split() -> None:
    streams = {"z": NoiseStream("z", 10), "ca": NoiseStream("ca", 10, truncated=False)}
    ctx = StepContext(device=torch.device("cpu"), seed=7, step=3, noise_streams=streams)
    whole = ctx.noise(_batch([0, 1, 2, 3], 4), "z")
    parts = torch.cat([ctx.noise(b, "z") for b in _batch([0, 1, 2, 3], 4).split(2)])
    assert torch.equal(whole, parts)
    assert torch.equal(whole[2:], ctx.noise(_batch([2, 3], 4), "z"))
    assert not torch.equal(whole, ctx.noise(_batch([0, 1, 2, 3], 4), "ca"))  # streams are independent
    big = ctx.noise(_batch(list(range(400)), 400), "z")
    assert big.abs().max() > 2.0  # plain N(0, I): 4,000 draws exceed 2 in absolute value
    ctx.step = 4
    assert not torch.equal(whole, ctx.noise(_batch([0, 1, 2, 3], 4), "z"))
    with pytest.raises(KeyError, match="not declared"):
        ctx.noise(_batch([0], 1), "eps")


def test_crop_margin_reaches_the_training_dataset(shapes_h5: str, tmp_path) -> None:
    from t2itool.models import get_model
    from t2itool.training.batches import open_data

    toml = tmp_path / "celeba.toml"
    toml.write_text("crop_margin = false\n")
    assert resolve_config("dfgan", config_file=str(toml)).crop_margin is False
    assert resolve_config("dfgan").crop_margin is True
    spec = get_model("dfgan")
    recipe = spec.recipe_cls(spec.make_config(None, {"image_size": 64, "ngf": 4, "ndf": 4}))
    assert open_data(shapes_h5, recipe, 0, "damsm")[1].resize_to == 76  # 64 * 76 / 64
    assert open_data(shapes_h5, recipe, 0, "damsm", crop_margin=False)[1].resize_to == 64
