"""Training statistics and sample grids: scalars reported every step, reduced once per tick across processes and
written to the console (rank 0, stderr), `stats.jsonl` and TensorBoard (only when the package is installed).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
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

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def save_grid(images: torch.Tensor, captions: list[str], path: Path, columns: int) -> None:
    """Write `images` ((N, 3, H, W) in [-1, 1], one row per caption) as a PNG and the captions beside it (.txt)."""
    from torchvision.utils import save_image

    with atomic_path(path, suffix=".png") as tmp:
        save_image(images.float().cpu(), tmp, nrow=columns, normalize=True, value_range=(-1, 1), format="png")
    lines = [f"row {i}: {caption}" for i, caption in enumerate(captions)]
    atomic_write_text(path.with_suffix(".txt"), "\n".join(lines) + "\n")


@torch.no_grad()
def render_grid(generate: Callable[[slice], torch.Tensor], count: int, chunk: int = 16) -> torch.Tensor:
    """Images of the grid's `count` fixed (caption, noise) cells: `generate(rows)` for consecutive slices of rows."""
    parts = [generate(slice(start, min(start + chunk, count))).float().cpu() for start in range(0, count, chunk)]
    return torch.cat(parts)
