"""Every preset config in examples/configs resolves to exactly the model's `--preset` (no drift between the two)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from t2itool.cli.main import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"
runner = CliRunner()


def _resolved(args: list[str]) -> dict:
    result = runner.invoke(app, ["train", *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)
    config.pop("preset")
    return config


def _model_and_preset(stem: str) -> tuple[str, str]:
    """`dfgan-ssacn-birds` -> (dfgan-ssacn, birds); `stackgan-coco-stage2` -> (stackgan, coco-stage2): both model and
    preset names may hold hyphens, so the model is the longest registered name the stem starts with."""
    from t2itool.models.registry import list_models

    model = max((name for name in list_models() if stem.startswith(name + "-")), key=len)
    return model, stem[len(model) + 1 :]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_example_config_equals_preset(path: Path, shapes_h5: str, tmp_path: Path) -> None:
    model, preset = _model_and_preset(path.stem)
    common = [model, "--data", shapes_h5, "--damsm", str(tmp_path / "damsm.pt")]
    assert _resolved([*common, "--config", str(path)]) == _resolved([*common, "--preset", preset])


def test_every_model_preset_has_an_example() -> None:
    from t2itool.models.registry import get_model, list_models

    expected = {f"{name}-{preset}" for name in list_models() for preset in get_model(name).train_presets}
    assert expected == {p.stem for p in EXAMPLES.glob("*.toml")}
