"""Run folders and checkpoints: the inference snapshot (generator + text encoder + vocabulary) and the resume state
(all networks, optimizers, EMA, scaler, counters, RNG states). Atomic writes, last-K retention, weights-only loading.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from t2itool import sampling
from t2itool.data.text import Vocabulary
from t2itool.encoders.kinds import TextSource
from t2itool.errors import T2IError
from t2itool.fileio import atomic_torch_save, atomic_write_json, load_checkpoint, sha256_file
from t2itool.models import ModelSpec, get_model

SNAPSHOT_FORMAT = "t2itool-snapshot"
STATE_FORMAT = "t2itool-state"
FORMAT_VERSION = 2  # 2: the text source ("text": damsm or precomputed) replaced top-level text_encoder entries


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
    text: TextSource,
    vocab_words: list[str],
    vocab_sha256: str,
    step: int,
    data: dict,
    ema: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the inference snapshot: the generator (EMA weights when `ema`), its text source (with the DAMSM encoder's
    weights, fine-tuned or not), the vocabulary and where the data came from."""
    atomic_torch_save(
        {
            "format": SNAPSHOT_FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model,
            "config": dataclasses.asdict(config),
            "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
            "generator_is_ema": bool(ema),
            "text": text.record(with_weights=True),
            "vocab": list(vocab_words),
            "vocab_sha256": vocab_sha256,
            "step": int(step),
            "image_size": int(config.image_size),
            "data": dict(data),
            **(extra or {}),
        },
        path,
    )


@dataclass
class Snapshot:
    """A loaded snapshot: ready-to-sample networks (eval mode, on `device`) and their metadata."""

    path: Path
    spec: ModelSpec
    config: Any
    generator: nn.Module
    text: TextSource
    vocab: Vocabulary
    vocab_words: list[str]
    vocab_sha256: str
    sha256: str
    step: int
    image_size: int
    data: dict
    generator_is_ema: bool
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def text_encoder(self) -> nn.Module | None:
        """The DAMSM text encoder (None for precomputed features)."""
        return self.text.encoder

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Snapshot:
        """A snapshot file, or the newest snapshot of a run folder (same as `load_snapshot`)."""
        return load_snapshot(path, device)

    @torch.no_grad()
    def generate(
        self,
        texts: str | list[str],
        seeds: int | list[int] = 0,
        truncation: float | None | str = "default",
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] for captions and seeds, for notebooks: one image per (text, seed) pair when
        `seeds` is a list as long as `texts`, else every text with the one seed. The same pixels `t2itool sample`
        writes for that caption and seed (the caption's position in `texts` keys its noise, as in `sample --text`)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        seed_list = seeds if isinstance(seeds, list) else [int(seeds)] * len(texts)
        if len(seed_list) != len(texts):
            raise T2IError(f"{len(texts)} texts but {len(seed_list)} seeds: give one seed, or one per text")
        prompts = sampling.prompts_from_texts(texts, self.vocab)
        jobs = [sampling.Job(prompt, seed) for prompt, seed in zip(prompts, seed_list, strict=True)]
        return sampling.generate_images(self, jobs, truncation=truncation, batch_size=batch_size)


def _text_record(obj: dict[str, Any]) -> dict[str, Any]:
    if "text" in obj:
        return obj["text"]
    # Format 1 snapshots kept the DAMSM encoder at the top level.
    return {"kind": "damsm", "encoder_config": obj["text_encoder_config"], "encoder": obj["text_encoder"]}


def load_snapshot(path: str | Path, device: str | torch.device = "cpu") -> Snapshot:
    """Load a snapshot file, or the newest snapshot of a run folder; rebuilds the generator and its text source."""
    file = latest(path, "snapshots", "snapshot", "snapshot")
    obj = load_checkpoint(file, "t2itool snapshot")
    if obj.get("format") != SNAPSHOT_FORMAT:
        raise T2IError(f"{file}: not a t2itool snapshot (format {obj.get('format')!r}); a resume state is not one")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise T2IError(f"{file}: snapshot format {obj['format_version']} is newer than this t2itool supports")
    spec = get_model(obj["model"])
    config = spec.make_config(None, obj["config"])
    generator = spec.build_generator(config)
    try:
        generator.load_state_dict(obj["generator"])
        text = TextSource.from_record(_text_record(obj))
    except RuntimeError as exc:
        raise T2IError(f"{file}: weights do not fit the recorded config ({_first_line(exc)})") from exc
    if text.encoder is not None:
        text.encoder.to(device).eval().requires_grad_(False)
    return Snapshot(
        path=file,
        spec=spec,
        config=config,
        generator=generator.to(device).eval().requires_grad_(False),
        text=text,
        vocab=Vocabulary(obj["vocab"]),
        vocab_words=list(obj["vocab"]),
        vocab_sha256=obj["vocab_sha256"],
        sha256=sha256_file(file),
        step=int(obj["step"]),
        image_size=int(obj["image_size"]),
        data=dict(obj.get("data", {})),
        generator_is_ema=bool(obj.get("generator_is_ema", False)),
        origin=dict(obj.get("origin", {})),
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


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
    if obj.get("imported"):  # import-weights --with-discriminator: networks only, no optimizers or counters
        raise T2IError(f"{file}: imported networks cannot be resumed; start a run with --init-from {file}")
    return file, obj


# --- networks from another run (--init-from) and structure checks ----------------------------------------------


def module_at(nets: dict[str, nn.Module], target: str) -> nn.Module:
    """The network `net` or its sub-module `net.sub.module` (a dotted path), or a T2IError naming what exists."""
    name, _, sub = target.partition(".")
    if name not in nets:
        raise T2IError(f"no network {name!r} in this model (it has {', '.join(nets)})")
    try:
        return nets[name].get_submodule(sub) if sub else nets[name]
    except AttributeError:
        raise T2IError(f"network {name!r} has no sub-module {sub!r}") from None


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """The first difference between two state dicts' names and shapes, in words, or None when they fit."""
    for key, value in expected.items():
        if key not in found:
            return f"{key} is missing"
        if tuple(found[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(found[key].shape)}, expected {tuple(value.shape)}"
    extra = [key for key in found if key not in expected]
    return f"unexpected {extra[0]}" if extra else None


def read_networks(path: str | Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """The networks a state holds (all of them) or a snapshot holds (its generator); a run folder gives its newest
    state, or its newest snapshot when it has no states."""
    path = Path(path)
    if path.is_dir():
        has_states = (path / "states").is_dir() and _numbered(path / "states", "state")
        path = latest(path, "states", "state", "state") if has_states else latest(path, "snapshots", "snapshot", "")
    obj = load_checkpoint(path, "t2itool resume state or snapshot")
    if obj.get("format") == STATE_FORMAT:
        return path, dict(obj["nets"])
    if obj.get("format") == SNAPSHOT_FORMAT:
        return path, {"generator": obj["generator"]}
    raise T2IError(f"{path}: neither a t2itool resume state nor a snapshot")


def parse_init_from(value: str) -> tuple[str, list[tuple[str, str | None]]]:
    """'RUN_OR_FILE[:net1,net2=dst.sub]' -> (path, [(source net, target or None = the recipe's default)])."""
    path, sep, names = value.rpartition(":")
    if not sep or "/" in names or not names.strip():
        return value, []
    pairs: list[tuple[str, str | None]] = []
    for part in names.split(","):
        source, eq, target = (x.strip() for x in part.partition("="))
        if not source or (eq and not target):
            raise T2IError(f"--init-from {value}: expected RUN_OR_FILE[:net,net=target.module]")
        pairs.append((source, target or None))
    return path, pairs


def load_init_from(
    value: str, nets: dict[str, nn.Module], default_targets: dict[str, str], load: bool = True
) -> list[str]:
    """Load networks named in `--init-from` into `nets` (shapes checked first; `load=False` checks only); returns
    'source -> target' lines. Without names, every source network whose target exists in this model is loaded."""
    path, pairs = parse_init_from(value)
    file, available = read_networks(path)
    if not pairs:
        pairs = [(name, None) for name in available if default_targets.get(name, name).partition(".")[0] in nets]
        if not pairs:
            raise T2IError(f"--init-from {file}: none of its networks ({', '.join(available)}) exists in this model")
    loaded = []
    for source, target in pairs:
        if source not in available:
            raise T2IError(f"--init-from {file}: no network {source!r} in it (it has {', '.join(available)})")
        target = target or default_targets.get(source, source)
        try:
            module = module_at(nets, target)
        except T2IError as exc:
            raise T2IError(f"--init-from {file}:{source}: {exc}") from None
        problem = state_mismatch(module.state_dict(), available[source])
        if problem:
            raise T2IError(f"--init-from {file}:{source} does not fit {target}: {problem}")
        if load:
            module.load_state_dict(available[source])
        loaded.append(f"{source} -> {target}")
    return loaded
