"""SIGTERM handled like Ctrl-C: the signal handler raises `Terminated` when t2itool's own code runs and otherwise only
sets a flag (library code may be a finalizer or weakref callback, where Python prints and swallows an exception);
long loops call `check()` at safe points (per image), so the flag stops them too. See `t2itool.cli.common`.
"""

from __future__ import annotations

import threading


class Terminated(KeyboardInterrupt):
    """A stop request (SIGTERM): the command stops as on Ctrl-C and removes its temporary output."""


_requested = threading.Event()


def request() -> None:
    _requested.set()


def clear() -> None:
    _requested.clear()


def check() -> None:
    """Raise `Terminated` when a stop was requested."""
    if _requested.is_set():
        raise Terminated
