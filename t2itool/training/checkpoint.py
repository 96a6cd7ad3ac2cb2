"""Run folders and checkpoints: the inference snapshot (generator + text encoder + vocabulary) and the resume state
(all networks, optimizers, EMA, scaler, counters, RNG states). Atomic writes, last-K retention, weights-only loading.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from t2itool.data.text import Vocabulary
from t2itool.errors import T2IError
from t2itool.fileio import atomic_torch_save, atomic_write_json, load_checkpoint, sha256_file

SNAPSHOT_FORMAT = "t2itool-snapshot"
STATE_FORMAT = "t2itool-state"
FORMAT_VERSION = 1


# --- run folders -----------------------------------------------------------------------------------------------


def create_run_dir(out: str | Path, name: str, config_json: dict) -> Path:
    """Make `out/NNNNN-name/` (next free number) and write config.json into it first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := re.match(r"^(\d{5})-", p.name)) and p.is_dir()]
    number = max(numbers, default=-1) + 1
    while True:
        run_dir = out / f"{number:05d}-{name}"
        try:
            run_dir.mkdir()
            break
        except FileExistsError:  # another launcher took the number
            number += 1
    atomic_write_json(run_dir / "config.json", config_json)
    for sub in ("grids", "snapshots", "states"):
        (run_dir / sub).mkdir()
    return run_dir


def _numbered(folder: Path, prefix: str) -> list[Path]:
    files = [
        (int(m.group(1)), p) for p in folder.glob(f"{prefix}-*.pt") if (m := re.match(rf"{prefix}-(\d+)\.pt$", p.name))
    ]
    return [p for _, p in sorted(files)]


def prune(folder: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest `keep` files `prefix-<step>.pt` (keep 0 = keep all)."""
    if keep <= 0:
        return
    for path in _numbered(folder, prefix)[:-keep]:
        path.unlink(missing_ok=True)


def latest(path: str | Path, sub: str, prefix: str, kind: str) -> Path:
    """A file itself, or the newest `sub/prefix-<step>.pt` of a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        files = _numbered(path / sub, prefix) if (path / sub).is_dir() else _numbered(path, prefix)
        if not files:
            raise T2IError(f"{path}: no {kind} found (expected {sub}/{prefix}-<step>.pt)")
        return files[-1]
    raise T2IError(f"{path}: no such file or run folder (expected a {kind})")


# --- snapshot (inference) --------------------------------------------------------------------------------------


def save_snapshot(
    path: Path,
    *,
    model: str,
    config: Any,
    generator: nn.Module,
    text_encoder: nn.Module,
    vocab_words: list[str],
    vocab_sha256: str,
    step: int,
    data: dict,
    ema: bool,
) -> None:
    atomic_torch_save(
        {
            "format": SNAPSHOT_FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model,
            "config": dataclasses.asdict(config),
            "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
            "generator_is_ema": bool(ema),
            "text_encoder": {k: v.detach().cpu() for k, v in text_encoder.state_dict().items()},
            "text_encoder_config": dict(text_encoder.config()),
            "vocab": list(vocab_words),
            "vocab_sha256": vocab_sha256,
            "step": int(step),
            "image_size": int(config.image_size),
            "data": dict(data),
        },
        path,
    )


@dataclass
class Snapshot:
    """A loaded snapshot: ready-to-sample networks (eval mode, on `device`) and their metadata."""

    path: Path
    spec: Any
    config: Any
    generator: nn.Module
    text_encoder: nn.Module
    vocab: Vocabulary
    vocab_words: list[str]
    vocab_sha256: str
    sha256: str
    step: int
    image_size: int
    data: dict
    generator_is_ema: bool


def load_snapshot(path: str | Path, device: str | torch.device = "cpu") -> Snapshot:
    """Load a snapshot file, or the newest snapshot of a run folder; rebuilds the generator and text encoder."""
    from t2itool.encoders import TextEncoder
    from t2itool.models.registry import get_model

    file = latest(path, "snapshots", "snapshot", "snapshot")
    obj = load_checkpoint(file, "t2itool snapshot")
    if obj.get("format") != SNAPSHOT_FORMAT:
        raise T2IError(f"{file}: not a t2itool snapshot (format {obj.get('format')!r}); a resume state is not one")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise T2IError(f"{file}: snapshot format {obj['format_version']} is newer than this t2itool supports")
    spec = get_model(obj["model"])
    config = spec.make_config(None, obj["config"])
    generator = spec.build_generator(config)
    generator.load_state_dict(obj["generator"])
    text_encoder = TextEncoder.from_config(obj["text_encoder_config"])
    text_encoder.load_state_dict(obj["text_encoder"])
    return Snapshot(
        path=file,
        spec=spec,
        config=config,
        generator=generator.to(device).eval().requires_grad_(False),
        text_encoder=text_encoder.to(device).eval().requires_grad_(False),
        vocab=Vocabulary(obj["vocab"]),
        vocab_words=list(obj["vocab"]),
        vocab_sha256=obj["vocab_sha256"],
        sha256=sha256_file(file),
        step=int(obj["step"]),
        image_size=int(obj["image_size"]),
        data=dict(obj.get("data", {})),
        generator_is_ema=bool(obj.get("generator_is_ema", False)),
    )


# --- state (resume) --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "internal": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, payload: dict[str, Any]) -> None:
    atomic_torch_save({"format": STATE_FORMAT, "format_version": FORMAT_VERSION, **payload}, path)


def load_state(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Load a resume state (a file, or the newest in a run folder): the resolved path and the dict."""
    file = latest(path, "states", "state", "resume state")
    obj = load_checkpoint(file, "t2itool resume state")
    if obj.get("format") != STATE_FORMAT:
        raise T2IError(f"{file}: not a t2itool resume state (format {obj.get('format')!r}); --resume needs states/")
    return file, obj
