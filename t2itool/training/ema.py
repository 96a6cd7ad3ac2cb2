"""Exponential moving average of the generator's weights (AttnGAN / XMC-GAN keep one; snapshots prefer it)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


class EMA:
    """avg <- beta * avg + (1 - beta) * param after every step; buffers are copied; parameters under a `frozen`
    prefix (sub-modules that never train, e.g. StackGAN stage II's stage-I generator) are copied, not averaged.
    The copy is kept in eval mode."""

    def __init__(self, module: nn.Module, beta: float, frozen: Iterable[str] = ()) -> None:
        self.beta = float(beta)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        prefixes = tuple(f"{prefix}." for prefix in frozen)
        self._averaged = [not name.startswith(prefixes) for name, _ in module.named_parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        pairs = zip(self.module.parameters(), module.parameters(), self._averaged, strict=True)
        for avg, param, averaged in pairs:
            if averaged:
                avg.lerp_(param.detach(), 1.0 - self.beta)
            else:
                avg.copy_(param.detach())
        for avg, buf in zip(self.module.buffers(), module.buffers(), strict=True):
            avg.copy_(buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
