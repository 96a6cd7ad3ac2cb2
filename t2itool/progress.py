"""Progress of long loops (prep, sampling, feature extraction, DAMSM epochs): a rich bar on a terminal, and plain text
lines every few seconds when stderr is not one (cluster logs, pipes), so that batch jobs still show how far they got.

`T2ITOOL_PROGRESS_SECONDS` sets the interval of the plain lines (default 30; 0 = a line at every update).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

PLAIN_SECONDS = 30.0


def plain_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("T2ITOOL_PROGRESS_SECONDS", PLAIN_SECONDS)))
    except ValueError:
        return PLAIN_SECONDS


def clock(seconds: float) -> str:
    """12345.6 -> '3:25:45'."""
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    last_line: float = field(default_factory=time.perf_counter)
    done: bool = False


class PlainProgress:
    """The part of rich's `Progress` interface t2itool uses (add_task, advance, update, reset, context manager),
    printing `description 120/640 (19%), elapsed 0:00:12, ETA 0:00:50, 10.0/s` lines instead of a bar."""

    def __init__(self, console: Any = None, every: float | None = None) -> None:
        self.console = console
        self.every = plain_interval() if every is None else every
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            for task_id, task in self.tasks.items():
                if not task.done and task.completed:
                    self._line(task_id)

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total)
        return task_id

    def reset(self, task_id: int, total: float | None = None, **_: Any) -> None:
        task = self.tasks[task_id]
        self.tasks[task_id] = _Task(task.description, total if total is not None else task.total)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None, **kw: Any) -> None:
        task = self.tasks[task_id]
        if "total" in kw and kw["total"] is not None:
            task.total = kw["total"]
        if "description" in kw and kw["description"] is not None:
            task.description = kw["description"]
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        now = time.perf_counter()
        finished = task.total is not None and task.completed >= task.total
        if finished or now - task.last_line >= self.every:
            task.last_line = now
            self._line(task_id)
            task.done = finished

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, task_id: int) -> None:
        task = self.tasks[task_id]
        elapsed = time.perf_counter() - task.start
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        parts = [f"{task.description} {task.completed:g}" + (f"/{task.total:g}" if task.total else "")]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        parts.append(f"elapsed {clock(elapsed)}")
        if task.total and rate > 0:
            parts.append(f"ETA {clock((task.total - task.completed) / rate)}")
        parts.append(f"{rate:.3g}/s")
        line = ", ".join(parts)
        if self.console is not None:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            import sys

            print(line, file=sys.stderr, flush=True)


def progress_bar(console: Any = None, columns: tuple | None = None) -> Any:
    """A rich bar on stderr when it is a terminal (transient), else `PlainProgress` lines on the same console."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not console.is_terminal:
        return PlainProgress(console)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)
