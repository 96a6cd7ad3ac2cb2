"""The recipe interface: what a GAN package implements so that the one training loop can drive it.

The loop owns data, devices, processes, AMP, EMA, checkpoints and logging; a `GANRecipe` owns the networks, their
optimizers and one training step. A `StepContext` hands the step everything it may touch. Keep this file stable.

Contract (see docs/training.md):
- `recipe = spec.recipe_cls(config)`; the model config dataclass has an `image_size` field (final resolution).
- `recipe.build_networks() -> dict[str, nn.Module]` on CPU with the run seed already set; must contain "generator"
  (what snapshots and sample grids use); other names are free ("discriminator", "head", "d64", ...).
- `recipe.build_optimizers(nets, text_encoder) -> dict[str, Optimizer]`: one per update phase ("generator",
  "discriminator", "text_encoder" when `trains_text_encoder`); betas and lrs as Python floats (torch >= 2.6).
- `recipe.train_step(batch, ctx) -> dict[str, Tensor | float]`: one generator update (and however many discriminator
  updates the paper does); every returned value is a scalar statistic (loss terms) reported to the console, stats.jsonl
  and TensorBoard, and checked for finiteness. Use `ctx.backward` / `ctx.optimizer_step` rather than `.backward()` /
  `optimizer.step()`: they handle the fp16 loss scale, the non-finite check and the cross-process gradient average.
- Class attributes describe what the step needs from the loop: `pair` (paired captions, SD-GAN), `needs_image_encoder`
  (DAMSM loss on generated images), `trains_text_encoder` (fine-tuned text encoder: the loop puts it in train mode,
  syncs its gradients and stores it in snapshots), `default_ema` (generator EMA decay used when `--ema` is not given).

Multi-process semantics (why the step receives global sample positions): every process holds `len(batch)` samples of
a global batch of `batch.global_size`; `batch.positions` are the samples' positions in it. `ctx.noise` derives each
sample's noise from (seed, step, position, stream), so noise does not depend on how the batch is split, and
`ctx.gather` concatenates a tensor across processes in position order, for batch-coupled terms (mismatched captions):
the pairing is then made over the global batch, as one process with the whole batch would make it. Gradients of
every optimizer's parameters are averaged over processes inside `ctx.optimizer_step`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from t2itool.encoders.features import TextFeatures


class NonFiniteLoss(RuntimeError):
    """Raised by `StepContext.backward` for a NaN or infinite loss; the loop stops and keeps the last good state."""

    def __init__(self, name: str, value: float, step: int) -> None:
        super().__init__(f"non-finite {name} ({value}) in step {step + 1} (after {step} good steps)")
        self.name, self.value, self.step = name, value, step


@dataclass
class Batch:
    """One process's share of a global batch, on the training device.

    images:     real images per resolution, in the order of `recipe.image_sizes()`, each (B, 3, s, s) in [-1, 1].
    tokens:     (B, T) int64 caption token ids, zero-padded; lengths (B,) int64.
    class_ids, indices (image index), caption_indices: (B,) int64.
    positions:  (B,) int64 positions of these samples in the global batch (rank * B + i when evenly split).
    global_size: number of samples in the global batch (all processes together).
    tokens2, lengths2, pair_label: the second caption when the recipe sets `pair` (pair_label 1 = same image).
    """

    images: list[torch.Tensor]
    tokens: torch.Tensor
    lengths: torch.Tensor
    class_ids: torch.Tensor
    indices: torch.Tensor
    caption_indices: torch.Tensor
    positions: torch.Tensor
    global_size: int
    tokens2: torch.Tensor | None = None
    lengths2: torch.Tensor | None = None
    pair_label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=True)
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def split(self, parts: int) -> list[Batch]:
        """Split into `parts` sub-batches (e.g. XMC-GAN's one sub-batch per D step); positions travel along."""
        if len(self) % parts:
            raise ValueError(f"batch of {len(self)} cannot be split into {parts} equal parts")
        size = len(self) // parts
        result = []
        for part in range(parts):
            sl = slice(part * size, (part + 1) * size)
            values = {}
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if isinstance(value, torch.Tensor):
                    value = value[sl]
                elif isinstance(value, list):
                    value = [v[sl] for v in value]
                values[f.name] = value
            result.append(Batch(**values))
        return result


def sample_seed(seed: int, step: int, position: int, stream: int) -> int:
    """A 63-bit seed for one sample's random draw, independent of batch split and rank."""
    digest = hashlib.blake2b(f"{seed}:{step}:{position}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class StepContext:
    """Everything one training step may use. Built by the loop once per run; `step` is updated every step.

    device:      where the batch and networks live.
    step:        number of completed training steps before this one (0 for the first step).
    seed:        the run seed (noise depends on it, not on the rank).
    rank, world_size: process index and count (1 process: 0, 1).
    amp:         "none" | "bf16" | "fp16"; use `with ctx.autocast():` around forward passes.
    nets:        the recipe's networks (plain modules; gradients are averaged across processes by `optimizer_step`).
    optimizers:  the recipe's optimizers by name.
    text_encoder: the DAMSM text encoder (eval + frozen unless `trains_text_encoder`).
    image_encoder: the DAMSM image encoder when `needs_image_encoder`, else None (eval, frozen).
    scaler:      GradScaler for fp16, else None.
    damsm:       the DAMSM checkpoint's loss settings when known (e.g. {"gamma1": 4.0, ...}); may be empty.
    """

    device: torch.device
    seed: int
    rank: int = 0
    world_size: int = 1
    amp: str = "none"
    nets: dict[str, nn.Module] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    text_encoder: nn.Module | None = None
    image_encoder: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    damsm: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    optimizer_steps: int = 0  # optimizer updates made during the current step (the loop resets it)

    # --- precision -------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for forward passes: bf16 / fp16 per `amp`, a no-op for "none"."""
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def grad_scale(self) -> float:
        """Current fp16 loss scale (1.0 without a scaler); pass to `matching_aware_gp(grad_scale=...)`."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    # --- text ------------------------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor, grad: bool = False) -> TextFeatures:
        """Encode captions with the DAMSM text encoder; `grad=True` only when the recipe trains it."""
        assert self.text_encoder is not None, "the loop did not provide a text encoder"
        with torch.set_grad_enabled(grad), self.autocast():
            features = self.text_encoder.encode(tokens, lengths)
        features = TextFeatures(features.words.float(), features.sentence.float(), features.mask, features.lengths)
        return features if grad else features.detach()

    # --- randomness ------------------------------------------------------------------------------------------
    def noise(self, batch: Batch, dim: int, stream: int = 0) -> torch.Tensor:
        """Standard normal noise (B, dim), each row from its own generator keyed by (seed, step, position, stream)."""
        rows = []
        for position in batch.positions.tolist():
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.step, position, stream))
            rows.append(torch.randn(dim, generator=generator))
        return torch.stack(rows).to(self.device)

    # --- cross-process helpers -------------------------------------------------------------------------------
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a (B, ...) tensor over processes in rank order, without gradient (identity for 1 process).

        With even splits, row g of the result is global sample position g.
        """
        tensor = tensor.detach()
        if self.world_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def local_slice(self, batch: Batch) -> slice:
        """Rows of a gathered tensor that belong to this process."""
        start = self.rank * len(batch)
        return slice(start, start + len(batch))

    # --- updates ---------------------------------------------------------------------------------------------
    def zero_grad(self, name: str) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)

    def check_finite(self, name: str, loss: torch.Tensor) -> None:
        """Raise NonFiniteLoss if `loss` is NaN/inf on any process (all processes agree, so none waits forever)."""
        value = float(loss.detach().float())
        bad = not math.isfinite(value)
        if self.world_size > 1:
            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bool(flag.item() > 0)
        if bad:
            raise NonFiniteLoss(name, value, self.step)

    def backward(self, loss: torch.Tensor, name: str = "loss") -> None:
        """Check `loss` is finite (else raise NonFiniteLoss naming `name` and the step), then backpropagate it."""
        self.check_finite(name, loss)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, name: str) -> None:
        """Average the optimizer's gradients over processes, then step it (through the fp16 scaler if any)."""
        optimizer = self.optimizers[name]
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.world_size > 1 and params:
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        self.optimizer_steps += 1

    @contextlib.contextmanager
    def frozen(self, *modules: nn.Module) -> Iterator[None]:
        """Temporarily stop gradients into `modules`' parameters (e.g. D during the G step, to save work)."""
        saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        for p, _ in saved:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)


class GANRecipe:
    """Base class of every model's training recipe; subclasses implement the three methods below.

    `self.config` is the model config dataclass. Class attributes (override as needed):
    pair: None | "same" | "other" — ask the dataset for a second caption per item (SD-GAN).
    needs_image_encoder: the step uses the DAMSM image encoder (DAMSM loss on generated images).
    trains_text_encoder: the step fine-tunes the text encoder (may also be set per instance from the config).
    default_ema: generator EMA decay when the user does not pass `--ema` (None = no EMA).
    """

    pair: ClassVar[str | None] = None
    needs_image_encoder: ClassVar[bool] = False
    trains_text_encoder: bool = False
    default_ema: ClassVar[float | None] = None

    def __init__(self, config: Any) -> None:
        self.config = config

    def image_sizes(self) -> tuple[int, ...]:
        """Real-image resolutions the step needs, smallest first (multi-stage models override)."""
        return (int(self.config.image_size),)

    def max_words(self) -> int:
        """Caption length fed to the text encoder (AttnGAN's WORDS_NUM)."""
        return int(getattr(self.config, "max_words", 18))

    def build_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_optimizers(
        self, nets: dict[str, nn.Module], text_encoder: nn.Module | None
    ) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError
