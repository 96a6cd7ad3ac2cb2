"""t2itool: one pipeline for text-to-image GAN research.

Stages (each reads and writes files on disk): prep -> pretrain-damsm -> train -> sample -> score. From Python, with the
CLI's argument names: `t2itool.prep`, `t2itool.pretrain_damsm`, `t2itool.train`, `t2itool.sample`, `t2itool.score`,
and `t2itool.Snapshot.load(path).generate(texts, seeds)` for image tensors (docs/python-api.md). They are imported on
first use, so `import t2itool` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "prep": "t2itool.api",
    "pretrain_damsm": "t2itool.api",
    "train": "t2itool.api",
    "sample": "t2itool.api",
    "score": "t2itool.api",
    "Snapshot": "t2itool.training.checkpoint",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 't2itool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
