"""One style across commands: every --help renders its whole help text (no markup eaten), shows defaults, shows no
`<bool>` for switches; --device, --workers and --json mean the same everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from t2itool.cli.common import DEVICE_HELP, WORKERS_HELP, resolve_device
from t2itool.cli.main import app
from t2itool.errors import T2IError

runner = CliRunner()
REPORTING = {"prep cub", "prep coco", "prep folder", "prep shapes", "pretrain-damsm", "import-damsm", "train", "sample",
             "score", "info", "models"}  # fmt: skip


def _commands() -> list[tuple[str, Any]]:
    """(path, command) of every leaf command, e.g. ("prep shapes", <Command>)."""
    found = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer ships its own click)
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found.append((" ".join(path), command))

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


def _squash(text: str) -> str:
    """Without whitespace (help is wrapped, also at hyphens)."""
    return re.sub(r"\s+", "", text)


def test_every_command_is_covered() -> None:
    names = {name for name, _ in COMMANDS}
    assert REPORTING <= names and {"demo"} <= names


@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_renders_all_text_defaults_and_no_bool_metavar(name: str, command: Any) -> None:
    result = runner.invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    rendered = _squash(result.output)
    assert "<bool>" not in result.output, f"{name}: a switch renders as --flag <bool>"
    if command.help:
        first_paragraph = command.help.split("\n\n")[0]
        assert _squash(first_paragraph) in rendered, f"{name}: command help lost text"
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        help_text = param.help or ""
        assert help_text, f"{name} {param.opts[0]}: no help text"
        # every character of the help survives rendering: "[model]" and "[default: ...]" are not eaten as markup
        assert _squash(help_text) in rendered, f"{name} {param.opts[0]}: help text lost in rendering"
        if param.is_flag or param.required or param.multiple or param.name == "help":
            continue
        if param.default is None:
            assert "(default:" in help_text, f"{name} {param.opts[0]}: default None but no '(default: ...)' in help"
        else:
            assert param.show_default is not False, f"{name} {param.opts[0]}: default hidden"
            assert "[default:" in result.output


def _option(command: Any, flag: str) -> Any:
    return next((p for p in command.params if p.param_type_name == "option" and flag in p.opts), None)


def test_json_device_and_workers_mean_the_same_everywhere() -> None:
    for name, command in COMMANDS:
        if name in REPORTING:
            option = _option(command, "--json")
            assert option is not None and option.is_flag, f"{name}: no --json switch"
        device = _option(command, "--device")
        if device is not None:
            assert DEVICE_HELP in (device.help or ""), name
            assert device.default == "auto" or (device.default is None and "(default: auto)" in device.help), name
        workers = _option(command, "--workers")
        if workers is not None:
            assert WORKERS_HELP in (workers.help or ""), name
    assert {n for n, c in COMMANDS if _option(c, "--device")} >= {"sample", "score", "train", "pretrain-damsm", "demo"}
    assert {n for n, c in COMMANDS if _option(c, "--workers")} >= {"prep cub", "prep shapes", "train", "pretrain-damsm"}


def test_train_help_defaults_match_the_train_config() -> None:
    from t2itool.training.config import TrainConfig

    command = dict(COMMANDS)["train"]
    defaults = TrainConfig()
    for field in ("text", "out", "batch_size", "seed", "device", "amp", "nproc", "workers", "grid_every",
                  "snapshot_every", "keep", "eval_every", "eval_images"):  # fmt: skip
        option = _option(command, "--" + field.replace("_", "-"))
        match = re.search(r"\(default: ([^\s;,)]+)", option.help)
        assert match is not None, field
        assert match.group(1) == str(getattr(defaults, field)), f"--{field}: help says {match.group(1)}"


def test_resolve_device() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(T2IError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(T2IError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_workers_zero_means_no_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing
    import os

    from t2itool.data import prepare

    assert prepare.resolve_workers(None) == (os.cpu_count() or 1)
    assert prepare.resolve_workers(0) == 0 and prepare.resolve_workers(3) == 3
    with pytest.raises(T2IError, match="--workers"):
        prepare.resolve_workers(-1)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started for --workers 0")

    monkeypatch.setattr(multiprocessing, "get_context", no_pool)
    tasks = [object()] * (prepare.POOL_MIN_IMAGES + 1)
    monkeypatch.setattr(prepare, "_process", lambda task: (True, task))
    assert len(list(prepare._results(tasks, 0))) == len(tasks)
    with pytest.raises(AssertionError, match="pool"):
        list(prepare._results(tasks, 1))


def test_prep_info_models_print_one_json_document(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    args = ["prep", "shapes", "--out", str(out), "--num-images", "24", "--image-size", "16", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 24 and summary["out"] == str(out)
    info = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert info["images"] == 24 and info["vocab_sha256"] == summary["vocab_sha256"]
    models = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert any(m["name"] == "dfgan" for m in models)
