"""Batch norm with statistics over the global batch, on any process-group backend (gloo on CPU, NCCL on GPUs).

`torch.nn.SyncBatchNorm` runs on CUDA only; this one computes the mean and variance of the whole global batch with
two differentiable all-reduces, so N processes with B/N samples each normalise exactly as one process with B would,
and its gradients are those of the one-process computation. With one process, or in eval mode, it is plain
`F.batch_norm`. The loop swaps it in for every BatchNorm of the trained networks (same state-dict keys) when it trains
with N > 1 processes and the model config's `sync_batchnorm` is true.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients, so backward all-reduces too."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the channel dimension (dim 1) of any (B, C, ...) input, statistics from all processes."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [d for d in range(input.dim()) if d != 1]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        # Processes may hold unequal shares (AttnGAN's B - 1 wrong pairs): the count is reduced with the sums.
        count = x.new_full((1,), float(x.numel() // x.shape[1]))
        reduced = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        total = float(reduced[-1])
        # Two passes (mean, then centred squares) are as accurate as one process's batch_norm.
        mean = reduced[:-1] / total
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / total
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (total / max(total - 1.0, 1.0))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d (and torch's SyncBatchNorm) inside `module` by GlobalBatchNorm, keeping
    parameters, buffers, modes and state-dict keys. Returns the module (converted in place where possible)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        tensors = list(module.parameters()) + list(module.buffers())
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        ).to(device=tensors[0].device if tensors else None)
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert(child))
    return module
