"""Shared building blocks: conditioning augmentation, its KL term and the up-sampling blocks, against hand
computations and the official classes' state-dict layout (names and shapes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from t2itool.models.blocks import ConditioningAugmentation, kl_loss, up_block


@pytest.mark.parametrize(("activation", "fc_out"), [("glu", 400), ("relu", 200)])
def test_conditioning_augmentation_reparameterises_with_the_given_noise(activation: str, fc_out: int) -> None:
    torch.manual_seed(0)
    ca = ConditioningAugmentation(256, 100, activation)
    assert {k: tuple(v.shape) for k, v in ca.state_dict().items()} == {"fc.weight": (fc_out, 256), "fc.bias": (fc_out,)}
    text, eps = torch.randn(3, 256), torch.randn(3, 100)
    c, mu, logvar = ca(text, eps)
    hidden = text @ ca.fc.weight.T + ca.fc.bias
    if activation == "glu":
        hidden = hidden[:, :200] * torch.sigmoid(hidden[:, 200:])
    else:
        hidden = hidden.clamp_min(0)
        assert (mu >= 0).all() and (logvar >= 0).all()  # StackGAN's ReLU before the split
    torch.testing.assert_close(mu, hidden[:, :100])
    torch.testing.assert_close(logvar, hidden[:, 100:])
    torch.testing.assert_close(c, mu + torch.exp(logvar / 2) * eps)
    # Same text, same eps: same c; the module draws nothing itself.
    torch.testing.assert_close(ca(text, eps)[0], c)


def test_kl_loss_matches_the_closed_form() -> None:
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]])
    by_hand = (
        sum(
            -0.5 * (1 + lv - m**2 - math.exp(lv))
            for m, lv in zip(mu.flatten().tolist(), logvar.flatten().tolist(), strict=True)
        )
        / 4
    )
    assert kl_loss(mu, logvar).item() == pytest.approx(by_hand, rel=1e-6)
    assert kl_loss(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


@pytest.mark.parametrize("activation", ["glu", "relu"])
def test_up_block_doubles_resolution_with_official_layout(activation: str) -> None:
    torch.manual_seed(0)
    block = up_block(16, 8, activation).eval()
    conv_out = 16 if activation == "glu" else 8
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items() if "num_batches" not in k}
    assert shapes == {
        "1.weight": (conv_out, 16, 3, 3), "2.weight": (conv_out,), "2.bias": (conv_out,),
        "2.running_mean": (conv_out,), "2.running_var": (conv_out,),
    }  # fmt: skip
    x = torch.randn(2, 16, 4, 4)
    y = block(x)
    assert y.shape == (2, 8, 8, 8)
    h = F.batch_norm(F.conv2d(F.interpolate(x, scale_factor=2), block[1].weight, padding=1), block[2].running_mean,
                     block[2].running_var, block[2].weight, block[2].bias)  # fmt: skip
    torch.testing.assert_close(y, F.glu(h, 1) if activation == "glu" else h.relu())
