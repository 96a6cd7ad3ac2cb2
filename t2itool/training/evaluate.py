"""Metrics during training (`train --eval-every N --metrics fid,r_precision,...`): the snapshot of step N is sampled
on a fixed, seeded subset of the test split and scored with the same code as `t2itool score`; each result is a line
of RUN/metrics.jsonl, and the best snapshot per metric is kept as RUN/best-<metric>.pt (never pruned by --keep).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from t2itool import sampling
from t2itool.data.store import Store
from t2itool.errors import T2IError
from t2itool.fileio import append_jsonl, atomic_path
from t2itool.metrics.extractors import resolve_tf_weights
from t2itool.metrics.score import ScoreConfig, score
from t2itool.training.checkpoint import load_snapshot

# metric flag -> (the score record it is judged by, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("fid", False),
    "kid": ("kid", False),
    "is": ("is", True),
    "r_precision": ("r_precision", True),
    "shapes_agreement": ("colour_agreement", True),
}


def check_metrics(metrics: list[str], data: str, damsm: str, inception_weights: str | None) -> None:
    """Everything the evaluation will need, checked before training starts (one line naming the flag)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise T2IError(f"--metrics {unknown[0]}: choose from {', '.join(METRICS)}")
    if "r_precision" in metrics and not damsm:
        raise T2IError("--metrics r_precision needs --damsm (the DAMSM checkpoint used in training)")
    if "shapes_agreement" in metrics and Store(data).source != "shapes":
        raise T2IError(f"--metrics shapes_agreement: {data} is not from `t2itool prep shapes`")
    if any(m in metrics for m in ("fid", "kid", "is")):
        resolve_tf_weights(Path(inception_weights) if inception_weights else None)


@dataclass
class Evaluator:
    """Rank 0's evaluation of one snapshot; `best` remembers the best value per metric across evaluations, starting
    from the records of `previous_run` (the run a resumed run continues)."""

    run_dir: Path
    data: str
    damsm: str
    metrics: list[str]
    images: int
    device: str
    inception_weights: str | None = None
    previous_run: Path | None = None

    def __post_init__(self) -> None:
        self.best: dict[str, float] = {}
        for folder in (self.previous_run, self.run_dir):
            for line in _read_jsonl(folder / "metrics.jsonl") if folder else []:
                self._improves(line["metric"], line["value"])

    def __call__(self, snapshot_file: str, step: int) -> list[dict[str, Any]]:
        snapshot = load_snapshot(snapshot_file, device=self.device)
        store = Store(self.data)
        jobs = sampling.protocol_jobs(store, "test", snapshot.vocab_sha256, self.images, seed=0)
        folder = self.run_dir / "eval" / "latest"
        shutil.rmtree(folder, ignore_errors=True)  # the previous evaluation's images
        sampling.sample(snapshot, jobs, folder, device=self.device, store=store, console=_quiet_console())
        config = ScoreConfig(
            samples_dir=folder, data=Path(self.data), fid="fid" in self.metrics, isc="is" in self.metrics,
            kid="kid" in self.metrics, r_precision="r_precision" in self.metrics,
            damsm=Path(self.damsm) if self.damsm else None, shapes_agreement="shapes_agreement" in self.metrics,
            inception_weights=Path(self.inception_weights) if self.inception_weights else None, device=self.device,
        )  # fmt: skip
        records = []
        for record in score(config, console=_quiet_console()).records:
            record = {"step": step, "snapshot": Path(snapshot_file).name, **record}
            if self._improves(record["metric"], record["value"]):
                best = self.run_dir / f"best-{record['metric']}.pt"
                with atomic_path(best) as tmp:
                    shutil.copyfile(snapshot_file, tmp)
                record["best"] = True
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            records.append(record)
        return records

    def _improves(self, metric: str, value: float) -> bool:
        higher = {judged: up for judged, up in METRICS.values()}.get(metric)
        if higher is None or not math.isfinite(value):
            return False
        previous = self.best.get(metric)
        if previous is not None and (value <= previous if higher else value >= previous):
            return False
        self.best[metric] = value
        return True


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _quiet_console() -> Console:
    return Console(stderr=True, quiet=True)
