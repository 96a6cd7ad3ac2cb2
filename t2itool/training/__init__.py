"""The one training loop and its parts: recipe interface, checkpoints, EMA, distributed helpers, statistics.

`t2itool.training.train(...)` runs a model; `t2itool.training.recipe` is what model packages implement.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy: model packages import t2itool.training.recipe, which must not pull in the loop (and the registry).
    if name in ("train", "TrainConfig", "TrainResult"):
        from t2itool.training import loop

        return getattr(loop, name)
    if name in ("load_snapshot", "Snapshot"):
        from t2itool.training import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(name)
