"""The stats writer: stats.jsonl, the console line, and TensorBoard scalars when tensorboard is installed (faked
here: CI has no tensorboard, so a stand-in SummaryWriter records what the writer sends)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import types

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from t2itool.training.stats import GAP, StatsWriter, save_grid, to_pixels


class _FakeSummaryWriter:
    instances: list[_FakeSummaryWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.images, self.closed = log_dir, [], [], False
        _FakeSummaryWriter.instances.append(self)

    def add_scalar(self, name, value, step) -> None:
        self.scalars.append((name, value, step))

    def add_image(self, tag, pixels, step, dataformats) -> None:
        self.images.append((tag, pixels.shape, step, dataformats))

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
    writer.image("grid", np.zeros((40, 30, 3), dtype=np.uint8), 10)
    writer.close()
    assert json.loads((tmp_path / "stats.jsonl").read_text()) == {"step": 10, "loss_d": 1.5, "epoch": 2}
    assert "step 10" in text.getvalue() and "loss_d 1.5" in text.getvalue()
    board = _FakeSummaryWriter.instances[-1]
    assert board.log_dir == str(tmp_path / "tensorboard") and board.closed
    assert board.scalars == [("loss_d", 1.5, 10), ("epoch", 2, 10)]
    assert board.images == [("grid", (40, 30, 3), 10, "HWC")]


def test_grid_shows_each_captions_real_image_first_and_the_caption_under_its_row(tmp_path) -> None:
    rows, columns, size = 3, 2, 16
    generated = torch.linspace(-1, 1, rows * columns).view(-1, 1, 1, 1).expand(-1, 3, size, size)
    real = torch.full((rows, 3, size, size), -1.0)
    real[:, 0] = 1.0  # pure red
    captions = ["a red circle", "a blue square on a dark grey background", "green"]
    pixels = save_grid(generated, captions, tmp_path / "grid.png", columns, real)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), pixels)
    width = 3 * size + 2 * GAP  # real, two samples, gaps between
    assert pixels.shape[1] == width
    row0 = pixels[:size]
    assert (row0[:, :size] == [255, 0, 0]).all()  # the real image first
    assert (row0[:, size + GAP : 2 * size + GAP] == to_pixels(generated[:1])[0]).all()
    strip = pixels[size : size + 12]
    assert (strip < 100).any() and (strip == 255).mean() > 0.5  # dark text on white under the row
    lines = (tmp_path / "grid.txt").read_text().splitlines()
    assert lines[0].startswith("column 0: the caption's own image") and lines[1] == "row 0: a red circle"
    plain = save_grid(generated, captions, tmp_path / "plain.png", columns)
    assert plain.shape[1] == 2 * size + GAP and len((tmp_path / "plain.txt").read_text().splitlines()) == 3


def test_other_ranks_write_nothing(tmp_path) -> None:
    writer = StatsWriter(tmp_path, enabled=False)
    writer.write(1, {"loss": 1.0})
    assert not (tmp_path / "stats.jsonl").exists() and writer.tensorboard is None
