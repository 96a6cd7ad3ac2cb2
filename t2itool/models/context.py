"""The `StepContext`: everything a recipe's `train_step` may use, and the update phases the loop runs for it.

Multi-process semantics. Every process holds `len(batch)` samples of a global batch of `batch.global_size`, at
`batch.positions`. A recipe writes its losses as one process would for its own samples (means over the batch), and:
- `ctx.noise(batch, name)` draws each sample's noise from (seed, step, position, stream name), so noise does not
  depend on how the global batch is split;
- `ctx.gather(x)` concatenates a tensor over processes in position order; with `grad=True` the gradient reaches the
  local part, so a batch-coupled loss computed on gathered tensors (DAMSM's softmax over the batch, contrastive
  losses) equals the one-process loss, and so does its gradient once the phase averages gradients over processes;
- `with ctx.update(name) as phase:` turns on gradients for that optimizer's parameters only, zeroes them, and on exit
  averages them over processes and steps the optimizer (through the fp16 scaler when there is one).
With batch norm synchronised by the loop, N processes with B/N samples each then train like one process with B.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from t2itool.encoders.features import TextFeatures
from t2itool.models.recipe import Batch, NonFiniteLoss
from t2itool.noise import NoiseStream, draw_rows


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over processes and returns this process's rows.

    Every process computes the same loss on the gathered tensor, so each holds the full gradient; the sum over
    processes, divided again by the loop's gradient average, gives each sample's rows their one-process gradient.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None


class UpdatePhase:
    """One optimizer's update inside `with ctx.update(name) as phase:`; `phase.backward(loss, name)` as often as the
    step needs (gradients accumulate), the loop steps the optimizer when the block ends."""

    def __init__(self, ctx: StepContext, name: str, params: list[torch.Tensor] | None = None) -> None:
        self.ctx, self.name, self.backwards, self.params = ctx, name, 0, params

    def backward(self, loss: torch.Tensor, name: str = "loss") -> None:
        """Check `loss` is finite on every process (else NonFiniteLoss naming `name` and the step), backpropagate.

        Only this optimizer's parameters get gradients: autograd skips the input gradients nobody reads (e.g. of the
        real images that MA-GP made require grad), the parameter gradients are the same."""
        self.ctx.check_finite(name, loss)
        scaler = self.ctx.scaler
        scaled = scaler.scale(loss) if scaler is not None else loss
        scaled.backward(inputs=self.params) if self.params else scaled.backward()
        self.backwards += 1


@dataclass
class StepContext:
    """Built by the loop once per run; `step` and `epoch` are updated every step.

    device:        where the batch and networks live.
    seed:          the run seed (noise depends on it, not on the rank).
    rank, world_size: process index and count (one process: 0, 1).
    amp:           "none" | "bf16" | "fp16"; use `with ctx.autocast():` around forward passes.
    nets:          the recipe's networks; optimizers: the recipe's optimizers by phase name.
    text_kind:     "damsm" or "precomputed" (read features with `ctx.text(batch)`).
    text_encoder:  the DAMSM text encoder ("damsm" kind; eval and frozen unless the recipe trains it).
    image_encoder: the DAMSM image encoder when the recipe `needs_image_encoder`, else None (eval, frozen).
    scaler:        GradScaler for fp16, else None.
    damsm:         the DAMSM checkpoint's loss settings when known (e.g. {"gamma1": 4.0, ...}).
    noise_streams: the model's noise streams by name.
    """

    device: torch.device
    seed: int
    rank: int = 0
    world_size: int = 1
    amp: str = "none"
    nets: dict[str, nn.Module] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    text_kind: str = "damsm"
    text_encoder: nn.Module | None = None
    image_encoder: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    damsm: dict[str, Any] = field(default_factory=dict)
    noise_streams: Mapping[str, NoiseStream] = field(default_factory=dict)
    batch_size: int = 0  # rows of a whole local batch (set by the loop; 0: unknown)
    sub_batches: int = 1  # the recipe's sub_batches()
    step: int = 0
    epoch: int = 0
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
    def text(self, batch: Batch, second: bool = False) -> TextFeatures:
        """The batch's caption features from the run's text source, detached (`second`: the paired caption)."""
        if self.text_kind == "precomputed":
            features = batch.text2 if second else batch.text
            if features is None:
                raise ValueError("the batch carries no precomputed features" + (" for the second caption" * second))
            return features
        tokens, lengths = (batch.tokens2, batch.lengths2) if second else (batch.tokens, batch.lengths)
        if tokens is None:
            raise ValueError("the batch has no second caption: the recipe's pair_same_probability() is None")
        return self.encode_text(tokens, lengths)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor, grad: bool = False) -> TextFeatures:
        """Encode captions with the DAMSM text encoder; `grad=True` only when the recipe trains it."""
        if self.text_encoder is None:
            raise ValueError("no DAMSM text encoder in this run (--text precomputed)")
        with torch.set_grad_enabled(grad), self.autocast():
            features = self.text_encoder.encode(tokens, lengths).float()
        return features if grad else features.detach()

    # --- randomness ------------------------------------------------------------------------------------------
    def noise(self, batch: Batch, name: str) -> torch.Tensor:
        """(B, dim) standard normal noise of stream `name`, row i keyed by (seed, step, global position)."""
        if name not in self.noise_streams:
            raise KeyError(
                f"noise stream {name!r} is not declared by the model (declared: {sorted(self.noise_streams)})"
            )
        stream = self.noise_streams[name]
        plain = NoiseStream(stream.name, stream.dim, truncated=False)  # training always draws from N(0, I)
        keys = [("train", self.seed, self.step, position) for position in batch.positions.tolist()]
        return draw_rows(keys, [plain], None, self.device)[name]

    # --- cross-process helpers -------------------------------------------------------------------------------
    def gather(self, tensor: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Concatenate a tensor of a whole local batch, or of one `batch.split(k)` part, over processes, rows ordered
        by global position (identity for one process). Without `grad` the result is detached; with it, gradients
        reach this process's rows. `ctx.local_rows(batch)` indexes this process's rows in the result."""
        if self.world_size == 1:
            return tensor if grad else tensor.detach()
        if grad:
            gathered = _GatherWithGrad.apply(tensor, self.rank, self.world_size)
        else:
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor.detach().contiguous())
            gathered = torch.cat(parts, dim=0)
        if self.sub_batches > 1 and tensor.shape[0] == self.batch_size:
            gathered = gathered[self._position_order(tensor.device)]
        return gathered

    def _position_order(self, device: torch.device) -> torch.Tensor:
        """Rank-ordered rows of a gathered whole batch, listed in global position order (see batches.py)."""
        part = self.batch_size // self.sub_batches
        rank_major = torch.arange(self.world_size * self.batch_size).view(self.world_size, self.sub_batches, part)
        return rank_major.transpose(0, 1).reshape(-1).to(device)

    def gather_text(self, text: TextFeatures) -> TextFeatures:
        """The global batch's text features (detached), for batch-coupled losses."""
        words = self.gather(text.words) if text.words is not None else None
        mask = self.gather(text.mask) if text.mask is not None else None
        lengths = self.gather(text.lengths) if text.lengths is not None else None
        return TextFeatures(words, self.gather(text.sentence), mask, lengths)

    def local_rows(self, batch: Batch) -> torch.Tensor:
        """Indices of this process's rows in `ctx.gather(x)` of a tensor of `batch` (a whole batch or a part)."""
        return batch.positions % (len(batch) * self.world_size)

    # --- updates ---------------------------------------------------------------------------------------------
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

    @contextlib.contextmanager
    def update(self, name: str) -> Iterator[UpdatePhase]:
        """Update phase of optimizer `name`: only its parameters require gradients inside the block (the others'
        are restored afterwards); on a normal exit the gradients are averaged over processes and the optimizer
        steps. Tensors computed inside one phase carry no gradient path into other optimizers' parameters: compute
        outputs that several phases share (e.g. the fake images) before the first phase."""
        if name not in self.optimizers:
            raise KeyError(f"no optimizer {name!r} (the recipe built: {', '.join(self.optimizers)})")
        own = [p for group in self.optimizers[name].param_groups for p in group["params"]]
        own_ids = {id(p) for p in own}
        others = [
            p
            for other, optimizer in self.optimizers.items()
            if other != name
            for group in optimizer.param_groups
            for p in group["params"]
            if id(p) not in own_ids
        ]
        saved = [(p, p.requires_grad) for p in own + others]
        for p in own:
            p.requires_grad_(True)
        for p in others:
            p.requires_grad_(False)
        self.optimizers[name].zero_grad(set_to_none=True)
        phase = UpdatePhase(self, name, own)
        try:
            yield phase
            if phase.backwards:
                self._step(name, own)
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    def _step(self, name: str, params: list[torch.Tensor]) -> None:
        optimizer = self.optimizers[name]
        with_grad = [p for p in params if p.grad is not None]
        if self.world_size > 1:
            # A parameter with a gradient on any process gets one (zeros) on every process, so the flat buffers
            # agree; one that no process reached keeps None, as in one process.
            present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
            dist.all_reduce(present, op=dist.ReduceOp.MAX)
            for p, flag in zip(params, present.tolist(), strict=True):
                if flag and p.grad is None:
                    p.grad = torch.zeros_like(p)
            with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            raise RuntimeError(
                f"update phase {name!r}: no parameter of its optimizer received a gradient; outputs used in this "
                "phase were probably computed inside another phase (compute shared outputs before the first phase)"
            )
        if self.world_size > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p in with_grad:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        self.optimizer_steps += 1
