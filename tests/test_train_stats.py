"""The stats writer: stats.jsonl, the console line, and TensorBoard scalars when tensorboard is installed (faked
here: CI has no tensorboard, so a stand-in SummaryWriter records what the writer sends)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import types

from rich.console import Console

from t2itool.training.stats import StatsWriter


class _FakeSummaryWriter:
    instances: list[_FakeSummaryWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        _FakeSummaryWriter.instances.append(self)

    def add_scalar(self, name, value, step) -> None:
        self.scalars.append((name, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_jsonl_console_and_tensorboard(tmp_path, monkeypatch) -> None:
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else real_find_spec(name, *a)
    )
    text = io.StringIO()
    writer = StatsWriter(tmp_path, enabled=True, console=Console(file=text, width=200))
    writer.write(10, {"loss_d": 1.5, "epoch": 2})
    writer.close()
    assert json.loads((tmp_path / "stats.jsonl").read_text()) == {"step": 10, "loss_d": 1.5, "epoch": 2}
    assert "step 10" in text.getvalue() and "loss_d 1.5" in text.getvalue()
    board = _FakeSummaryWriter.instances[-1]
    assert board.log_dir == str(tmp_path / "tensorboard") and board.closed
    assert board.scalars == [("loss_d", 1.5, 10), ("epoch", 2, 10)]


def test_other_ranks_write_nothing(tmp_path) -> None:
    writer = StatsWriter(tmp_path, enabled=False)
    writer.write(1, {"loss": 1.0})
    assert not (tmp_path / "stats.jsonl").exists() and writer.tensorboard is None
