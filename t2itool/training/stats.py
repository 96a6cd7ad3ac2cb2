"""Training statistics and sample grids: scalars reported every step, reduced once per tick across processes and
written to the console (rank 0, stderr), `stats.jsonl` and TensorBoard (only when the package is installed).
"""

from __future__ import annotations

import importlib.util
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from rich.console import Console

from t2itool.fileio import append_jsonl, atomic_path, atomic_write_text


class StatsCollector:
    """Accumulate named scalars over a tick; `reduce()` averages them over steps and processes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: list[str] = []
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, stats: dict[str, torch.Tensor | float]) -> None:
        for name, value in stats.items():
            value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach().reshape(())
            if name not in self.sums:
                self.names.append(name)
                self.sums[name] = torch.zeros((), dtype=torch.float64, device=self.device)
            self.sums[name] += value
        self.count += 1

    def reduce(self) -> dict[str, float]:
        """Mean of each statistic over the tick's steps and all processes; resets the collector."""
        if not self.names:
            return {}
        flat = torch.stack([self.sums[n] for n in self.names] + [torch.tensor(float(self.count), device=self.device)])
        if dist.is_initialized():
            dist.all_reduce(flat)
        means = {n: float(flat[i] / flat[-1]) for i, n in enumerate(self.names)}
        self.names, self.sums, self.count = [], {}, 0
        return means


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA's max allocated on a CUDA device, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def progress_fields(
    *,
    tick_seconds: float,
    tick_steps: int,
    elapsed: float,
    done_steps: int,
    left_steps: int,
    global_batch: int,
    device: torch.device,
) -> dict[str, float]:
    """Timing of a status line: seconds per step and images per second over the tick, elapsed time of this session,
    its ETA at the session's mean speed, and peak memory (MiB)."""
    per_step = tick_seconds / max(1, tick_steps)
    mean_step = elapsed / max(1, done_steps)
    return {
        "sec_per_step": per_step,
        "img_per_sec": global_batch / per_step if per_step > 0 else 0.0,
        "elapsed_sec": elapsed,
        "eta_sec": mean_step * max(0, left_steps),
        "peak_mem_mb": peak_memory_mb(device),
    }  # fmt: skip


CLOCK_FIELDS = ("elapsed_sec", "eta_sec")  # shown as h:mm:ss on the console


class StatsWriter:
    """Rank 0's outputs for one run: console status line (mirrored into log.txt), stats.jsonl and optional TensorBoard
    events."""

    def __init__(self, run_dir: Path, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.jsonl = run_dir / "stats.jsonl"
        self.log = run_dir / "log.txt"
        self.console = console or Console(stderr=True)
        self.tensorboard = None
        if enabled and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, record: dict[str, float | int], jsonl: bool = True) -> None:
        """Console line and TensorBoard scalars of `record`; also a stats.jsonl line unless `jsonl` is false."""
        if not self.enabled:
            return
        if jsonl:
            append_jsonl(self.jsonl, {"step": step, **record})
        from t2itool.progress import clock

        fields = []
        for name, value in record.items():
            if name in CLOCK_FIELDS:
                fields.append(f"{name.removesuffix('_sec')} {clock(value)}")
            elif isinstance(value, float):
                fields.append(f"{name} {value:.4g}" if math.isfinite(value) else f"{name} {value}")
            else:
                fields.append(f"{name} {value}")
        self.console.print(f"[bold]step {step}[/]  " + "  ".join(fields), highlight=False, soft_wrap=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"step {step}  " + "  ".join(fields) + "\n")
        if self.tensorboard is not None:
            for name, value in record.items():
                self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 picture into TensorBoard (the sample grids), when TensorBoard is installed."""
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, pixels, step, dataformats="HWC")
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def save_grid(
    images: torch.Tensor, captions: list[str], path: Path, columns: int, real: torch.Tensor | None = None
) -> np.ndarray:
    """Write the grid PNG and its captions (.txt) and return the PNG's pixels (H, W, 3) uint8. `images` ((rows *
    columns, 3, H, W) in [-1, 1]) holds `columns` samples per caption; row r shows `real[r]` (the caption's own image,
    (3, H, H)) first when given, then its samples, with the caption written under the row."""
    rows = len(captions)
    assert images.shape[0] == rows * columns, (tuple(images.shape), rows, columns)
    cells = to_pixels(images).reshape(rows, columns, *images.shape[2:3], images.shape[3], 3)
    real_pixels = to_pixels(real) if real is not None else None
    lines = []
    for row in range(rows):
        tiles = ([real_pixels[row]] if real_pixels is not None else []) + list(cells[row])
        lines.append(captioned_row(tiles, captions[row]))
    width = max(line.shape[1] for line in lines)
    pad = np.full((GAP, width, 3), 255, dtype=np.uint8)
    canvas = np.concatenate([part for line in lines for part in (_pad_width(line, width), pad)][:-1], axis=0)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    text = [f"row {i}: {caption}" for i, caption in enumerate(captions)]
    if real is not None:
        text.insert(0, "column 0: the caption's own image; then generated samples")
    atomic_write_text(path.with_suffix(".txt"), "\n".join(text) + "\n")
    return canvas


GAP = 4  # white pixels between cells and rows


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 (rounded to the nearest level)."""
    scaled = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def captioned_row(tiles: list[np.ndarray], caption: str) -> np.ndarray:
    """Tiles (H, W_i, 3) side by side with GAP white pixels between them, the caption below in black (PIL's default
    font, wrapped to the row's width, at most two lines)."""
    height = max(tile.shape[0] for tile in tiles)
    gap = np.full((height, GAP, 3), 255, dtype=np.uint8)
    row = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    chars = max(8, row.shape[1] // 6)  # the default bitmap font is about 6 px per character
    wrapped = textwrap.wrap(caption, chars) or [""]
    if len(wrapped) > 2:
        wrapped = [wrapped[0], textwrap.shorten(" ".join(wrapped[1:]), chars, placeholder=" ...")]
    strip = Image.new("RGB", (row.shape[1], 4 + 12 * len(wrapped)), (255, 255, 255))
    ImageDraw.Draw(strip).multiline_text((2, 2), "\n".join(wrapped), fill=(0, 0, 0), spacing=1)
    return np.concatenate([row, np.asarray(strip)], axis=0)


def _pad_width(array: np.ndarray, width: int) -> np.ndarray:
    if array.shape[1] == width:
        return array
    pad = np.full((array.shape[0], width - array.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([array, pad], axis=1)


@torch.no_grad()
def render_grid(generate: Callable[[slice], torch.Tensor], count: int, chunk: int = 16) -> torch.Tensor:
    """Images of the grid's `count` fixed (caption, noise) cells: `generate(rows)` for consecutive slices of rows."""
    parts = [generate(slice(start, min(start + chunk, count))).float().cpu() for start in range(0, count, chunk)]
    return torch.cat(parts)
