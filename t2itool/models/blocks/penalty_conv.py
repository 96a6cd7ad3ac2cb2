"""A Conv2d for discriminators under a gradient penalty: the same layer, with a backward that is cheap to differentiate.

MA-GP (DF-GAN, Tao et al. 2022, Sec. 3.3) penalises the gradient of D's logits with respect to the image, so the
discriminator step differentiates D's input gradient once more. Torch's generic double backward of a convolution
computes the weight term by transposing batch and channels and convolving over them (two reordering copies and a
convolution with the batch as channels, per layer). `PenaltyConv2d` writes the input gradient as `conv_transpose2d`
of the incoming gradient, whose own derivatives are a forward convolution and a weight-gradient kernel (the direct
oneDNN/cuDNN ones). The mathematics is the same; sums are taken in another order (float rounding), the forward pass is
the plain convolution, and parameters and state-dict names are nn.Conv2d's.

`input_gradients_only()` marks a backward that only asks for input gradients (MA-GP's `autograd.grad` with respect to
images and sentences), so the layer skips its weight and bias gradients there; outside it every gradient is computed.
The mark is process-wide (the autograd engine runs CUDA backward passes on its own threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_input_gradients_only = 0


@contextlib.contextmanager
def input_gradients_only() -> Iterator[None]:
    """Within this block, `PenaltyConv2d` backward passes compute input gradients only."""
    global _input_gradients_only
    _input_gradients_only += 1
    try:
        yield
    finally:
        _input_gradients_only -= 1


class _PenaltyConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple, padding: tuple
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        device = x.device.type
        # Under autocast the convolution below runs in the autocast dtype; the backward computes in it too.
        ctx.dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dtype = ctx.stride, ctx.padding, ctx.dtype
        # Casting the saved weight here (not in forward) keeps the input gradient differentiable in the weight.
        cast_grad, cast_weight = (grad, weight) if dtype is None else (grad.to(dtype), weight.to(dtype))
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # output_padding restores the rows/columns a strided convolution dropped.
            output_padding = tuple(
                x.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + weight.shape[2 + i])
                for i in range(2)
            )
            grad_input = F.conv_transpose2d(cast_grad, cast_weight, None, stride, padding, output_padding)
            grad_input = grad_input.to(x.dtype)
        if not _input_gradients_only:
            if ctx.needs_input_grad[1]:
                cast_x = x if dtype is None else x.to(dtype)
                grad_weight = torch.ops.aten.convolution_backward(
                    cast_grad, cast_x, cast_weight, None, stride, padding, (1, 1), False, (0, 0), 1,
                    (False, True, False),
                )[1].to(weight.dtype)  # fmt: skip
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)
        return grad_input, grad_weight, grad_bias, None, None


class PenaltyConv2d(nn.Conv2d):
    """nn.Conv2d (zero padding, no dilation or groups) whose backward is `_PenaltyConv2dFunction`'s when gradients
    are recorded; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or self.groups != 1 or self.dilation != (1, 1) or isinstance(self.padding, str):
            raise ValueError("PenaltyConv2d supports zero padding given as numbers, no dilation and no groups")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        return _PenaltyConv2dFunction.apply(x, self.weight, self.bias, self.stride, self.padding)


def with_torch_convs(net: nn.Module) -> nn.Module:
    """`net` with every PenaltyConv2d replaced, in place, by the nn.Conv2d it stands for (same weights and device):
    the official networks' layers, with torch's generic double backward (benchmarks/bench_step.py's plain step)."""
    for name, module in list(net.named_modules()):
        if isinstance(module, PenaltyConv2d):
            parent, _, child = name.rpartition(".")
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                             module.padding, bias=module.bias is not None)  # fmt: skip
            conv.load_state_dict(module.state_dict())
            setattr(net.get_submodule(parent), child, conv.to(module.weight.device, module.weight.dtype))
    return net
