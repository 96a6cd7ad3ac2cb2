"""Exponential moving average of the generator's weights (AttnGAN / XMC-GAN keep one; snapshots prefer it)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """avg <- beta * avg + (1 - beta) * param after every step; buffers are copied. The copy is kept in eval mode."""

    def __init__(self, module: nn.Module, beta: float) -> None:
        self.beta = float(beta)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for avg, param in zip(self.module.parameters(), module.parameters(), strict=True):
            avg.lerp_(param.detach(), 1.0 - self.beta)
        for avg, buf in zip(self.module.buffers(), module.buffers(), strict=True):
            avg.copy_(buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
