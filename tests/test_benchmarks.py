"""The benchmark scripts run: `benchmarks/bench_step.py` times every registered model on t2itool's path and beside it
the model's plain official-order step (benchmarks/plain_steps.py), at a tiny size (figures are not checked: tests
never assert on time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from t2itool.models.registry import get_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def test_bench_step_times_every_model_and_the_plain_baselines() -> None:
    models = [m for m in list_models() if get_model(m).recipe_cls.__module__.startswith("t2itool.")]  # no plugins
    args = [sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--models", ",".join(models), "--threads", "1"]
    args += ["--image-size", "32", "--batch-size", "2", "--width", "4", "--rounds", "1", "--steps", "1"]
    args += ["--warmup", "0", "--options", "eager"]  # compiling seven generators would take minutes
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for model in models:
        line = next((x for x in result.stdout.splitlines() if x.startswith(f"{model}: t2itool ")), None)
        assert line is not None, result.stdout
        assert re.search(r"plain [\d.]+ ms/step; ratio [\d.]+x", line), line
    shares = [x for x in result.stdout.splitlines() if x.startswith("  plain step shares: ")]
    assert len(shares) == len(models), result.stdout
    for model in ("dfgan-ssacn", "attngan", "sdgan", "drgan"):  # a DAMSM term in G: its share is measured
        line = result.stdout.split(f"{model}: t2itool ", 1)[1].splitlines()[1]
        assert "of which DAMSM" in line, line
    assert "of which MA-GP" in result.stdout
    assert "(fp32, channels-last, foreach Adam)" in result.stdout  # --options reached the default path
