"""The recipe interface: what a GAN package implements so that the one training loop can drive it.

A model package provides a config dataclass (subclass of `ModelConfig`), a `GANRecipe` subclass (networks,
optimizers, one training step) and registers a `ModelSpec` (t2itool/models/registry.py). The loop owns data, devices,
processes, precision, EMA, checkpoints and logging; inside `train_step` the recipe talks to it through the
`StepContext` (t2itool/models/context.py). docs/training.md walks through a complete minimal model.

Imports run one way: model packages import this module, the registry and `models/blocks/`; nothing here imports a
model package, and the training loop receives the spec.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from t2itool.encoders.features import TextFeatures

TEXT_KINDS = ("damsm", "precomputed")


def param(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A config field with its help text and the range `ModelConfig` checks: `min`/`max` inclusive, `above`
    exclusive (e.g. learning rates: above=0), `choices` an explicit set. Float fields must also be finite."""
    metadata: dict[str, Any] = {"help": help}
    for key, value in (("min", min), ("max", max), ("above", above), ("choices", choices)):
        if value is not None:
            metadata[key] = value
    return field(default=default, metadata=metadata)


def _base_types(annotation: Any) -> set[type]:
    args = typing.get_args(annotation)
    return (
        {a for a in args if isinstance(a, type)} if args else ({annotation} if isinstance(annotation, type) else set())
    )


@dataclass
class ModelConfig:
    """What every model config declares (the loop reads these fields, nothing else), and their validation.

    Subclasses add their own fields, declared with `param(...)`; they may redefine these three to change a default.
    `__post_init__` coerces float fields to float (torch >= 2.6 rejects mixed int/float Adam betas) and checks every
    field's range, raising ValueError("key=value: must be ...") that the CLI reports as one line.
    """

    image_size: int = param(256, "final resolution in pixels", min=8)
    max_words: int = param(18, "caption tokens fed to the text encoder (AttnGAN's WORDS_NUM)", min=1)
    sync_batchnorm: bool = param(
        True,
        "with N > 1 training processes, batch-norm statistics over the global batch (as one process with the whole "
        "batch); false: each process normalises its own share",
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            types = _base_types(hints[f.name])
            if value is None:
                continue
            if float in types and int not in types and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            problem = _check(value, f.metadata)
            if problem:
                raise ValueError(f"{f.name}={value!r}: {problem}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields (override; raise ValueError naming the keys)."""


def _check(value: Any, metadata: Mapping[str, Any]) -> str | None:
    if "choices" in metadata and value not in metadata["choices"]:
        return "expected one of " + ", ".join(str(c) for c in metadata["choices"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    if "min" in metadata and value < metadata["min"]:
        return f"must be >= {metadata['min']}"
    if "max" in metadata and value > metadata["max"]:
        return f"must be <= {metadata['max']}"
    if "above" in metadata and value <= metadata["above"]:
        return f"must be > {metadata['above']}"
    return None


@dataclass(frozen=True)
class TextNeeds:
    """The text features a recipe's networks take, and their widths (None = not used).

    The loop checks them against the run's text source (`--text damsm`: both 256 for AttnGAN's encoder;
    `--text precomputed`: whatever `prep --caption-features` stored) before anything is created.
    """

    sentence_dim: int | None
    word_dim: int | None = None


class NonFiniteLoss(RuntimeError):
    """Raised when a loss is NaN or infinite; the loop stops and keeps the last good state."""

    def __init__(self, name: str, value: float, step: int) -> None:
        super().__init__(f"non-finite {name} ({value}) in step {step + 1} (after {step} good steps)")
        self.name, self.value, self.step = name, value, step


def _map_fields(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list):
        return [_map_fields(v, fn) for v in value]
    if isinstance(value, TextFeatures):
        return TextFeatures(*(_map_fields(getattr(value, f.name), fn) for f in dataclasses.fields(value)))
    return value


@dataclass
class Batch:
    """One process's share of a global batch, on the training device.

    images:      real images per resolution, in the order of `recipe.image_sizes()`, each (B, 3, s, s) in [-1, 1].
    tokens:      (B, T) int64 caption token ids, zero-padded; lengths (B,) int64.
    class_ids, indices (image index), caption_indices: (B,) int64.
    positions:   (B,) int64 positions of these samples in the global batch (rank * B + i).
    global_size: number of samples in the global batch (all processes together).
    text:        precomputed caption features (`--text precomputed`), else None; read them with `ctx.text(batch)`.
    tokens2, lengths2, text2, pair_label: the second caption when the recipe asks for pairs (label 1 = same image).
    """

    images: list[torch.Tensor]
    tokens: torch.Tensor
    lengths: torch.Tensor
    class_ids: torch.Tensor
    indices: torch.Tensor
    caption_indices: torch.Tensor
    positions: torch.Tensor
    global_size: int
    text: TextFeatures | None = None
    tokens2: torch.Tensor | None = None
    lengths2: torch.Tensor | None = None
    text2: TextFeatures | None = None
    pair_label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: _map_fields(getattr(self, f.name), lambda t: t.to(device, non_blocking=True)) for f in
                 dataclasses.fields(self)}  # fmt: skip
        return Batch(**moved)

    def split(self, parts: int) -> list[Batch]:
        """`parts` equal sub-batches in order (XMC-GAN: one per discriminator step); positions travel along."""
        if len(self) % parts:
            raise ValueError(f"batch of {len(self)} cannot be split into {parts} equal parts")
        size = len(self) // parts
        result = []
        for part in range(parts):
            rows = slice(part * size, (part + 1) * size)
            values = {
                f.name: _map_fields(getattr(self, f.name), lambda t, r=rows: t[r]) for f in dataclasses.fields(self)
            }
            result.append(Batch(**values))
        return result


class GANRecipe:
    """Base class of every model's training recipe. `self.config` is the model's config (a `ModelConfig`).

    Implement `text_needs`, `build_networks`, `build_optimizers` and `train_step`; override the rest as needed.
    Class attributes:
    text_kinds:          text sources the model accepts (`train --text`): "damsm", "precomputed".
    needs_image_encoder: the step uses the DAMSM image encoder (DAMSM loss on generated images): --damsm required.
    trains_text_encoder: the step fine-tunes the DAMSM text encoder (may be set per instance from the config).
    default_ema:         generator EMA decay when `--ema` is not given (None = no EMA).
    """

    text_kinds: ClassVar[tuple[str, ...]] = TEXT_KINDS
    needs_image_encoder: ClassVar[bool] = False
    trains_text_encoder: bool = False
    default_ema: ClassVar[float | None] = None

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    # --- what the loop asks before training ---------------------------------------------------------------------
    def image_sizes(self) -> tuple[int, ...]:
        """Real-image resolutions the step needs, smallest first (multi-stage models override)."""
        return (int(self.config.image_size),)

    def max_words(self) -> int:
        """Caption length fed to the text encoder (AttnGAN's WORDS_NUM)."""
        return int(self.config.max_words)

    def text_needs(self) -> TextNeeds:
        raise NotImplementedError

    def pair_same_probability(self) -> float | None:
        """Ask for a second caption per sample: of the same image with this probability, else of another image
        (SD-GAN's Siamese pairs; `batch.pair_label`). None: no second caption."""
        return None

    def sub_batches(self) -> int:
        """Parts the step splits its batch into with `batch.split(k)` (XMC-GAN: one per discriminator update). The
        loop lays out the global batch so that part j of every process together is global sub-batch j."""
        return 1

    def features_average(self) -> int:
        """With precomputed features: average this many captions' sentence features per image (StackGAN TF: 4)."""
        return 1

    def init_targets(self) -> Mapping[str, str]:
        """Where `--init-from RUN:name` puts the source network `name` by default ("net" or "net.sub.module");
        e.g. StackGAN stage II: {"generator": "generator.stage1"}. Unlisted names go to the network of that name."""
        return {}

    def frozen_modules(self) -> tuple[str, ...]:
        """Networks or sub-modules ("net" or "net.sub") that never train: eval mode, no gradients, no optimizer,
        not averaged by EMA (e.g. StackGAN stage II's "generator.stage1")."""
        return ()

    def lr_schedule(self, epoch: int) -> Mapping[str, float]:
        """Learning-rate multipliers per optimizer name for `epoch` (applied to each group's initial lr whenever the
        epoch changes, and on resume). Empty: constant learning rates."""
        return {}

    # --- networks, optimizers, one step ---------------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        """Networks on CPU, seeded by the loop; must contain "generator" (what snapshots and grids use)."""
        raise NotImplementedError

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per update phase name; lrs and betas as Python floats. `text_encoder` is the DAMSM text
        encoder when `trains_text_encoder`, else None."""
        raise NotImplementedError

    def train_step(self, batch: Batch, ctx: Any) -> dict[str, torch.Tensor | float]:
        """One generator update (and the paper's discriminator updates) through `ctx.update(name)` phases; returns
        scalar statistics (loss terms, logits) for the console, stats.jsonl and TensorBoard."""
        raise NotImplementedError
