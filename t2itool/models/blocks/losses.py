"""Adversarial losses shared by several models: hinge losses and DF-GAN's matching-aware gradient penalty (MA-GP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2itool.models.blocks.penalty_conv import input_gradients_only


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, mismatch: torch.Tensor | None = None) -> torch.Tensor:
    """Discriminator hinge loss; with `mismatch`: E relu(1 - real) + (E relu(1 + fake) + E relu(1 + mismatch)) / 2."""
    loss_real = F.relu(1.0 - real).mean()
    if mismatch is None:
        return loss_real + F.relu(1.0 + fake).mean()
    return loss_real + 0.5 * (F.relu(1.0 + fake).mean() + F.relu(1.0 + mismatch).mean())


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[logit(fake)]."""
    return -fake.mean()


def matching_aware_gp(
    logits: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    weight: float = 2.0,
    power: float = 6.0,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """DF-GAN's MA-GP: weight * E_i[ ||(dlogit_i/dx_i, dlogit_i/ds_i)||_2 ^ power ], with create_graph.

    `logits` (B,) are the real-matching outputs, `inputs` the tensors they are differentiated against (real images
    and sentence vectors, both requiring grad); each sample's gradients are flattened and concatenated before the norm.
    `grad_scale` is the fp16 GradScaler scale (the gradients are taken of scaled logits and unscaled afterwards).
    The norm is written as (sum of squares)^(power/2): the same value, without sqrt's infinite slope at 0.
    """
    with input_gradients_only():  # PenaltyConv2d layers skip the weight gradients this call does not ask for
        grads = torch.autograd.grad(logits.sum() * grad_scale, inputs, create_graph=True)
    batch = logits.shape[0]
    flat = torch.cat([g.reshape(batch, -1).float() / grad_scale for g in grads], dim=1)
    return weight * flat.square().sum(dim=1).pow(power / 2).mean()
