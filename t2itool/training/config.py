"""The training run's config: `TrainConfig` (loop options + the model's resolved config) and how it is resolved.

Precedence, lowest first: dataclass defaults < `--preset` (model and loop settings of the paper) < the TOML file
(top-level keys = loop options, `[model]` table = model config) < explicit flags and `--set key=value`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2itool.encoders.kinds import TEXT_KINDS
from t2itool.errors import T2IError
from t2itool.models import get_model
from t2itool.training.checkpoint import load_state

AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to `config.json` in the run folder before training."""

    model: str = field(default="dfgan", metadata={"help": "registered model name"})
    data: str = field(default="", metadata={"help": "prepared HDF5 file (t2itool prep)"})
    damsm: str = field(default="", metadata={"help": "DAMSM checkpoint (t2itool pretrain-damsm)"})
    text: str = field(default="damsm", metadata={"help": "text source: damsm (encoder) or precomputed (data file)"})
    out: str = field(default="runs", metadata={"help": "parent folder of the numbered run folders"})
    preset: str | None = field(default=None, metadata={"help": "paper preset: birds or coco"})
    model_config: dict[str, Any] = field(default_factory=dict, metadata={"help": "resolved model config"})
    steps: int | None = field(default=None, metadata={"help": "total training steps (G updates)"})
    epochs: int | None = field(default=None, metadata={"help": "total epochs (when steps is not given)"})
    batch_size: int = field(default=8, metadata={"help": "batch size per process"})
    seed: int = field(default=0, metadata={"help": "run seed: init, data order, noise"})
    crop_margin: bool = field(
        default=True,
        metadata={"help": "shorter side resized to 76/64 of the crop before the random crop (official); false: resized "
                  "straight to the crop size, DF-GAN's CelebA transform (code/lib/perpare.py)"},
    )  # fmt: skip
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    amp: str = field(default="none", metadata={"help": "mixed precision: none, bf16, fp16 (CUDA only)"})
    channels_last: bool | None = field(
        default=None, metadata={"help": "channels-last networks/images (none: on; on CPU for nets without batch norm)"}
    )
    compile: bool | None = field(
        default=None, metadata={"help": "torch.compile the generator (none: on for CUDA and CPU runs >= 2000 steps)"}
    )
    resume: str | None = field(default=None, metadata={"help": "state file or run folder to continue"})
    init_from: str | None = field(
        default=None, metadata={"help": "RUN_OR_FILE[:net,src=dst.sub]: networks loaded from another run at step 0"}
    )
    gpus: list[int] | None = field(default=None, metadata={"help": "GPU ids, one process each"})
    nproc: int = field(default=1, metadata={"help": "CPU processes (gloo) when no --gpus"})
    workers: int = field(default=2, metadata={"help": "DataLoader worker processes per training process"})
    grid_every: int = field(default=1000, metadata={"help": "steps between sample grids (0 = start and end only)"})
    grid_size: int = field(default=16, metadata={"help": "captions in the sample grid (one row each)"})
    snapshot_every: int = field(default=5000, metadata={"help": "steps between snapshots and resume states"})
    keep: int = field(default=3, metadata={"help": "keep the last K snapshots and states (0 = all)"})
    ema: float | None = field(default=None, metadata={"help": "generator EMA decay (0 = off; default: model's)"})
    status_every: int = field(default=10, metadata={"help": "steps between console/stats.jsonl lines"})
    eval_every: int = field(default=0, metadata={"help": "steps between evaluations with --metrics (0 = none)"})
    metrics: list[str] = field(
        default_factory=list, metadata={"help": "evaluated every --eval-every steps: fid, kid, is, r_precision, ..."}
    )
    eval_images: int = field(default=1000, metadata={"help": "test captions sampled per evaluation (fixed, seeded)"})
    inception_weights: str | None = field(
        default=None, metadata={"help": "TF-Inception weights file for fid/kid/is (default: the torch hub cache)"}
    )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a string (from --set) or a TOML value to a field's type; errors name the key and the type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(value, options[0], key)
    if origin is list:
        (inner,) = typing.get_args(annotation)
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        return [coerce(v, inner, key) for v in items]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise T2IError(f"{key}: expected a table")
        return dict(value)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value) if not isinstance(value, str) else int(value.strip())
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if annotation is str:
            return str(value)
    except ValueError:
        raise T2IError(f"{key}={value!r}: expected {getattr(annotation, '__name__', annotation)}") from None
    return value


def parse_overrides(config_cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Type and check `values` against `config_cls`; an unknown key lists the valid ones."""
    types_by_name = _field_types(config_cls)
    result = {}
    for key, value in values.items():
        if key not in types_by_name:
            raise T2IError(f"{source} {key}: unknown key; valid keys: {', '.join(sorted(types_by_name))}")
        result[key] = coerce(value, types_by_name[key], f"{source} {key}")
    return result


def read_toml(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loop options, model options) from a TOML file: top-level keys and the `[model]` table."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise T2IError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise T2IError(f"--config {path}: invalid TOML ({exc})") from None
    model = data.pop("model", {})
    if not isinstance(model, dict):
        raise T2IError(f"--config {path}: 'model' must be a table")
    return data, model


def resolve_config(
    model: str,
    *,
    preset: str | None = None,
    config_file: str | None = None,
    sets: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """Build the run's TrainConfig. `flags` holds only options the user gave (None = not given).

    With `resume` among the flags, the resumed run's config.json is the lowest layer of the loop options (data,
    DAMSM, batch, out = beside that run, ...) and the state's model config replaces defaults and preset, so
    `--resume RUN --steps N` alone continues a run; anything given explicitly still wins.
    """
    spec = get_model(model)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    base_train, base_model_config = resumed_options(flags["resume"], model) if "resume" in flags else ({}, None)
    file_train, file_model = read_toml(config_file) if config_file else ({}, {})
    file_global = file_train.pop("global_batch", None)
    file_train = parse_overrides(TrainConfig, file_train, f"--config {config_file}:")
    if file_global is not None:
        file_train["global_batch"] = coerce(file_global, int, f"--config {config_file}: global_batch")
    file_model = parse_overrides(spec.config_cls, file_model, f"--config {config_file}: [model]")
    set_model = parse_overrides(spec.config_cls, dict(sets or {}), "--set")
    preset = flags.get("preset", file_train.get("preset", base_train.get("preset", preset)))
    if preset is not None and preset not in spec.presets:
        raise T2IError(f"--preset {preset!r}: {model} has presets {', '.join(sorted(spec.presets))}")

    # Loop options: defaults < preset < file < flags; steps and epochs given at one level replace the other.
    train: dict[str, Any] = {}
    # A resumed run keeps its recorded settings; its preset's loop values apply again only if given again.
    explicit_preset = "preset" in flags or "preset" in file_train
    preset_layer = dict(spec.train_presets.get(preset, {})) if preset and (explicit_preset or not base_train) else {}
    # A layer may state the global batch (presets: the paper's) instead of the per-process `batch_size`.
    for layer in (base_train, preset_layer, file_train, flags):
        if "steps" in layer and "epochs" in layer:
            raise T2IError("give --steps or --epochs, not both")
        if "steps" in layer:
            train.pop("epochs", None)
        if "epochs" in layer:
            train.pop("steps", None)
        if "batch_size" in layer:
            train.pop("global_batch", None)
        if "global_batch" in layer:
            train.pop("batch_size", None)
        train.update(layer)
    train.update(model=model, preset=preset)
    if "global_batch" in train:
        train["batch_size"] = per_process_batch(int(train.pop("global_batch")), train)
    image_size = train.pop("image_size", None)

    # Model config: defaults < preset < file [model] < --set < --image-size.
    if base_model_config is not None:
        model_values = dict(base_model_config)
    else:
        model_values = dict(spec.presets[preset]) if preset else {}
    model_values.update(file_model)
    model_values.update(set_model)
    if image_size is not None:
        model_values["image_size"] = int(image_size)
    model_config = spec.make_config(None, model_values)
    train["model_config"] = dataclasses.asdict(model_config)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise T2IError(f"unknown training option {unknown[0]!r}; valid: {', '.join(sorted(known))}")
    config = TrainConfig(**train)
    validate(config)
    return config


def world_size_of(train: dict[str, Any]) -> int:
    """Training processes the run will have: torchrun's WORLD_SIZE, else one per --gpus id, else --nproc."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return len(train["gpus"]) if train.get("gpus") else int(train.get("nproc", 1))


def per_process_batch(global_batch: int, train: dict[str, Any]) -> int:
    """The per-process batch that makes `global_batch` over the run's processes; refuses an uneven split."""
    world = world_size_of(train)
    if global_batch < 1 or global_batch % world:
        preset = f"--preset {train['preset']}: " if train.get("preset") else ""
        raise T2IError(
            f"{preset}global batch {global_batch} does not split evenly over {world} processes; "
            "give --batch-size (per process)"
        )
    return global_batch // world


# Loop options a resumed run takes over from its run folder's config.json unless given again.
RESUMED_OPTIONS = (
    "data", "damsm", "text", "preset", "steps", "epochs", "batch_size", "seed", "crop_margin", "device", "amp",
    "channels_last", "compile", "gpus", "nproc", "workers", "grid_every", "grid_size", "snapshot_every", "keep", "ema",
    "status_every", "eval_every", "metrics", "eval_images", "inception_weights",
)  # fmt: skip


def resumed_options(resume: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loop options from the resumed run's config.json + out beside it, the state's model config)."""
    path, state = load_state(resume)
    if state["model"] != model:
        raise T2IError(f"--resume {path}: the state is for model {state['model']!r}, not {model!r}")
    run_dir = path.parent.parent
    options: dict[str, Any] = {}
    config_json = run_dir / "config.json"
    if path.parent.name == "states" and config_json.is_file():
        try:
            recorded = json.loads(config_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise T2IError(f"--resume: cannot read {config_json} ({exc}); give --data and --damsm again") from None
        options = {key: recorded[key] for key in RESUMED_OPTIONS if recorded.get(key) is not None}
        options["out"] = str(run_dir.parent)
    return options, dict(state["model_config"])


def validate(config: TrainConfig) -> None:
    """Checks that need no files: value ranges and combinations, with messages naming the flag."""
    if config.text not in TEXT_KINDS:
        raise T2IError(f"--text {config.text!r}: expected one of {', '.join(TEXT_KINDS)}")
    if config.amp not in AMP_MODES:
        raise T2IError(f"--amp {config.amp!r}: expected one of {', '.join(AMP_MODES)}")
    if config.batch_size < 1:
        raise T2IError(f"--batch-size {config.batch_size}: must be >= 1")
    if config.steps is not None and config.steps < 0:
        raise T2IError(f"--steps {config.steps}: must be >= 0")
    if config.epochs is not None and config.epochs < 0:
        raise T2IError(f"--epochs {config.epochs}: must be >= 0")
    if config.nproc < 1:
        raise T2IError(f"--nproc {config.nproc}: must be >= 1")
    if config.gpus is not None and config.nproc > 1:
        raise T2IError("--gpus and --nproc are exclusive (--gpus starts one process per GPU)")
    if config.ema is not None and not 0.0 <= config.ema < 1.0:
        raise T2IError(f"--ema {config.ema}: expected a decay in [0, 1)")
    if config.eval_every < 0:
        raise T2IError(f"--eval-every {config.eval_every}: must be >= 0")
    if config.eval_every and not config.metrics:
        raise T2IError("--eval-every needs --metrics (e.g. --metrics r_precision,fid)")
    if config.metrics and not config.eval_every:
        raise T2IError("--metrics needs --eval-every N (steps between evaluations)")
    if config.eval_images < 1:
        raise T2IError(f"--eval-images {config.eval_images}: must be >= 1")
    if config.keep < 0:
        raise T2IError(f"--keep {config.keep}: must be >= 0")


def run_name(config: TrainConfig, world_size: int) -> str:
    """Run folder name without the number: model, data file stem, size, batch: `dfgan-birds-64px-batch8[-gpus4]`."""
    parts = [config.model]
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(config.data).stem) if config.data else ""
    if stem:
        parts.append(stem)
    parts += [f"{config.model_config.get('image_size', 0)}px", f"batch{config.batch_size}"]
    if config.gpus:
        parts.append(f"gpus{len(config.gpus)}")
    elif world_size > 1:
        parts.append(f"nproc{world_size}")
    return "-".join(parts)
