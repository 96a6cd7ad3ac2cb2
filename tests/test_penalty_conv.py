"""PenaltyConv2d (models/blocks/penalty_conv.py): the same layer as nn.Conv2d, gradients and MA-GP's double
backward included, with its own backward formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks import (
    DownBlock,
    PenaltyConv2d,
    input_gradients_only,
    matching_aware_gp,
    with_torch_convs,
)

# (in, out, kernel, stride, padding, bias, input size): DF-GAN's 4x4/2 down convs, 3x3, 1x1 shortcut, the head's
# valid 4x4, and odd sizes where a strided convolution drops a row (output_padding).
LAYERS = [
    (3, 5, 4, 2, 1, False, 8),
    (3, 5, 4, 2, 1, False, 9),
    (4, 4, 3, 1, 1, False, 6),
    (4, 6, 1, 1, 0, True, 5),
    (6, 1, 4, 1, 0, False, 4),
    (2, 3, 3, 2, 0, True, 7),
]


def pair(spec: tuple) -> tuple[nn.Conv2d, PenaltyConv2d]:
    c_in, c_out, k, s, p, bias, _ = spec
    torch.manual_seed(0)
    plain = nn.Conv2d(c_in, c_out, k, s, p, bias=bias).double()
    ours = PenaltyConv2d(c_in, c_out, k, s, p, bias=bias).double()
    ours.load_state_dict(plain.state_dict())
    return plain, ours


def penalty_grads(conv: nn.Module, x: torch.Tensor, only_inputs: bool) -> list[torch.Tensor]:
    """Gradients of a GP-style loss (||d sum(lrelu(conv(x))^2) / dx||^2 plus a first-order term) in the weights."""
    x = x.clone().requires_grad_(True)
    y = F.leaky_relu(conv(x), 0.2)
    if only_inputs:
        with input_gradients_only():
            (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    else:
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    loss = gx.square().sum() + y.sum()
    return list(torch.autograd.grad(loss, list(conv.parameters())))


@pytest.mark.parametrize("spec", LAYERS)
def test_gradients_and_double_backward_equal_conv2d(spec: tuple) -> None:
    plain, ours = pair(spec)
    x = torch.randn(3, spec[0], spec[6], spec[6], dtype=torch.float64)
    torch.testing.assert_close(ours(x), plain(x))
    # First order: input, weight and bias gradients.
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    grad_out = torch.randn_like(plain(x))
    for conv, xi in zip((plain, ours), xs, strict=True):
        (conv(xi) * grad_out).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad)
    for a, b in zip(plain.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)
    # Second order: the gradient penalty's weight gradients, with and without the input-gradients-only mark.
    expected = penalty_grads(plain, x, only_inputs=False)
    for only_inputs in (False, True):
        for a, b in zip(expected, penalty_grads(ours, x, only_inputs), strict=True):
            torch.testing.assert_close(b, a)


def test_input_gradients_only_skips_the_weight_gradients() -> None:
    _, ours = pair(LAYERS[0])
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with input_gradients_only():
        ours(x).sum().backward()
    assert x.grad is not None and ours.weight.grad is None
    ours(x).sum().backward()  # outside the block every gradient is computed again
    assert ours.weight.grad is not None


def test_matching_aware_gp_through_a_down_block_equals_conv2d() -> None:
    """MA-GP's weight gradients through DF-GAN's down block (non-zero gain: the residual branch counts) with
    PenaltyConv2d layers equal those of the same block built from nn.Conv2d."""
    torch.manual_seed(0)
    ours = DownBlock(4, 8).double()
    ours.gain.data.fill_(0.7)
    plain = with_torch_convs(DownBlock(4, 8).double())
    assert not any(isinstance(m, PenaltyConv2d) for m in plain.modules())
    plain.load_state_dict(ours.state_dict())
    images = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    sentence = torch.randn(3, 5, dtype=torch.float64)
    grads = []
    for block in (plain, ours):
        x, s = images.clone().requires_grad_(True), sentence.clone().requires_grad_(True)
        logits = block(x).mean(dim=(1, 2, 3)) * (s.sum(dim=1) + 2)
        gp = matching_aware_gp(logits, (x, s), weight=2.0, power=6.0)
        grads.append(torch.autograd.grad(gp + logits.mean(), list(block.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a)


def test_bf16_autocast_backward_gives_float32_gradients_close_to_fp32() -> None:
    torch.manual_seed(0)
    conv = PenaltyConv2d(3, 4, 4, 2, 1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y_ref = F.leaky_relu(conv(x), 0.2)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x, create_graph=True)
    ref = torch.autograd.grad(g_ref.square().sum(), list(conv.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.leaky_relu(conv(x), 0.2)
    assert y.dtype == torch.bfloat16
    with input_gradients_only():
        (g,) = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
    assert g.dtype == torch.float32
    got = torch.autograd.grad(g.square().sum(), list(conv.parameters()))
    for a, b in zip(ref, got, strict=True):
        assert b.dtype == torch.float32
        assert (b - a).norm() <= 0.05 * a.norm()


def test_unsupported_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="PenaltyConv2d supports"):
        PenaltyConv2d(3, 4, 3, groups=1, dilation=2)
