"""`t2itool train` and `t2itool models` through typer's CliRunner: dry-run JSON, --set errors, flag validation."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from t2itool.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_models_list_and_detail() -> None:
    result = invoke("models")
    assert result.exit_code == 0 and "dfgan" in result.stdout
    result = invoke("models", "dfgan", "--json")
    payload = json.loads(result.stdout)
    fields = {f["name"]: f["default"] for f in payload["fields"]}
    assert fields["ngf"] == 32 and fields["truncation"] == 0.88 and set(payload["presets"]) >= {"birds", "coco"}
    result = invoke("models", "nope")
    assert result.exit_code == 2 and "unknown model 'nope'" in result.output and "dfgan" in result.output


def test_dry_run_prints_resolved_config(tmp_path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("seed = 5\n[model]\nndf = 16\n")
    result = invoke(
        "train", "dfgan", "--preset", "birds", "--image-size", "64", "--set", "ngf=16", "--set", "beta1=0",
        "--config", str(toml), "--steps", "20", "--dry-run", "--gpus", "0,1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)
    assert config["model_config"]["ngf"] == 16 and config["model_config"]["ndf"] == 16
    assert config["model_config"]["image_size"] == 64 and config["model_config"]["beta1"] == 0.0
    # The preset's global batch 32 over the 2 GPUs: 16 per process.
    assert (config["batch_size"], config["steps"], config["epochs"], config["seed"]) == (16, 20, None, 5)
    assert config["gpus"] == [0, 1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "ngff=8"], "unknown key; valid keys: beta1, beta2, cond_dim"),
        (["--set", "ngf=eight"], "--set ngf='eight': expected int"),
        (["--set", "ngf"], "expected key=value"),
        (["--amp", "fp8"], "--amp 'fp8'"),
        (["--preset", "celeba"], "presets birds, coco, flowers"),
        (["--steps", "2", "--epochs", "1"], "not both"),
    ],
)
def test_config_errors_name_the_flag(args: list[str], message: str) -> None:
    result = invoke("train", "dfgan", "--dry-run", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_gpus_parsing_and_missing_cuda(tmp_path) -> None:
    result = invoke("train", "dfgan", "--dry-run", "--gpus", "0,x")
    assert result.exit_code == 2 and "comma-separated GPU ids" in " ".join(result.output.split())
    data, damsm = tmp_path / "d.h5", tmp_path / "e.pt"
    data.write_bytes(b"")
    damsm.write_bytes(b"")
    common = ["train", "dfgan", "--data", str(data), "--damsm", str(damsm), "--out", str(tmp_path / "runs")]
    if not torch.cuda.is_available():
        result = invoke(*common, "--gpus", "0", "--steps", "1")
        assert result.exit_code == 2 and "CUDA is not available" in " ".join(result.output.split())
        result = invoke(*common, "--amp", "fp16", "--steps", "1")
        assert result.exit_code == 2 and "--amp fp16 needs a CUDA device" in " ".join(result.output.split())
        assert not (tmp_path / "runs").exists()  # refused before a run folder is made
    result = invoke("train", "dfgan", "--steps", "1")
    assert result.exit_code == 2 and "--data is required" in result.output
