"""Helpers every command module uses: error handling that prints one line, and the shared consoles."""

from __future__ import annotations

import functools
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from t2itool import cancel
from t2itool.errors import T2IError

# Progress and status go to stderr so that stdout stays machine-readable (`info --json`, `train --dry-run`).
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

# One wording of the flags several commands share, so that they mean the same everywhere.
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N."
WORKERS_HELP = "Worker processes besides the main one; 0 = none (the main process does the work)."
JSON_HELP = "Print one JSON document on stdout instead of text (messages stay on stderr)."


def resolve_device(requested: str, flag: str = "--device") -> str:
    """`auto` -> `cuda` when CUDA is available, else `cpu`; `cpu`, `cuda` and `cuda:N` are checked and kept."""
    import torch

    value = requested.strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(value, flag)
    return value


def print_json(payload: Any) -> None:
    """The one JSON document a `--json` command prints on stdout (paths and other objects as strings)."""
    typer.echo(json.dumps(payload, indent=2, default=str, ensure_ascii=False))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn a T2IError into `error: ...` and exit code 2, and Ctrl-C into exit code 130, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except T2IError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _on_sigterm(signum: int, frame: Any) -> None:
    """Stop now when t2itool's own code was interrupted; elsewhere (library code, which may be a finalizer or weakref
    callback where Python would print and swallow the exception) only flag it: long loops check it (t2itool.cancel)."""
    cancel.request()
    if frame is not None and "t2itool" in Path(frame.f_code.co_filename).parts:
        raise cancel.Terminated


def sigterm_like_ctrl_c(message: str) -> Callable[[F], F]:
    """Handle SIGTERM as Ctrl-C during the command: its temporary output is removed (the write paths of
    `t2itool.fileio` clean up on any exception), `error: terminated by SIGTERM; <message>`, exit code 143."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return func(*args, **kwargs)
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            try:
                return func(*args, **kwargs)
            except cancel.Terminated:
                raise fail(f"terminated by SIGTERM; {message}", 143) from None
            finally:
                signal.signal(signal.SIGTERM, previous)
                cancel.clear()

        return wrapper  # type: ignore[return-value]

    return decorate


def check_device(device: str, flag: str = "--device") -> None:
    """A device string torch understands and this machine has, else one line naming the flag."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise T2IError(f"{flag} {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise T2IError(f"{flag} {device}: CUDA is not available on this machine; use {flag} cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise T2IError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type != "cpu":
        raise T2IError(f"{flag} {device}: only cpu and cuda devices are supported")


def parse_key_values(pairs: list[str], flag: str) -> dict[str, str]:
    """Parse repeated `key=value` options; a malformed one names the flag."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise T2IError(f"{flag} {pair!r}: expected key=value")
        result[key.strip()] = value.strip()
    return result
