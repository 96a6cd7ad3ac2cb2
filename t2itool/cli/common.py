"""Helpers every command module uses: error handling that prints one line, and the shared consoles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from t2itool.errors import T2IError

# Progress and status go to stderr so that stdout stays machine-readable (`info --json`, `train --dry-run`).
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


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


def parse_key_values(pairs: list[str], flag: str) -> dict[str, str]:
    """Parse repeated `key=value` options; a malformed one names the flag."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise T2IError(f"{flag} {pair!r}: expected key=value")
        result[key.strip()] = value.strip()
    return result
