"""The one training loop and its parts: config resolution, preflight checks, checkpoints, EMA, distributed helpers,
cross-process batch norm, statistics. The recipe interface models implement lives in `t2itool.models.recipe`.

`t2itool.training.train(...)` runs a model; `load_snapshot(...)` reads what it leaves behind.
"""

from t2itool.training.checkpoint import Snapshot, load_snapshot
from t2itool.training.config import TrainConfig
from t2itool.training.loop import TrainResult, train

__all__ = ["Snapshot", "TrainConfig", "TrainResult", "load_snapshot", "train"]
