"""AttnGAN's adversarial losses (taoxugit/AttnGAN code/miscc/losses.py discriminator_loss, generator_loss, KL_loss)
as functions of discriminator logits.

The code's heads end in a sigmoid and the losses are nn.BCELoss on probabilities; here the heads give logits and
the losses use BCE-with-logits: the same value (log sigmoid(x) = -softplus(-x)), computed without forming
1 - sigmoid(x), which in float32 loses digits as |x| grows (over logits spread in [-15, 15] the mean is off by
6e-4 relative) and, once the sigmoid rounds to 0 or 1 (|x| above about 17), makes nn.BCELoss clamp each log at -100.
"""

from __future__ import annotations

import torch

from t2itool.models.blocks.conditioning import kl_loss
from t2itool.models.blocks.staged_gan import (
    bce_fake,
    bce_real,
    combine_discriminator_terms,
    generator_adversarial_loss,
    generator_loss,
)

__all__ = [
    "bce_fake",
    "bce_real",
    "combine_discriminator_terms",
    "discriminator_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "kl_loss",
    "wrong_pairs",
]


def wrong_pairs(real_features: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The code's mismatched pairs: real image i with sentence i + 1, i = 0 .. B-2
    (`real_features[:B-1]` with `conditions[1:B]`). Needs B >= 2; the sentence of a neighbour in the batch may
    describe the same class (the code does not check)."""
    if real_features.shape[0] < 2:
        raise ValueError("wrong pairs need a batch of at least 2")
    return real_features[:-1], sentence[1:]


def discriminator_loss(
    real_cond: torch.Tensor,
    fake_cond: torch.Tensor,
    wrong_cond: torch.Tensor,
    real_uncond: torch.Tensor | None = None,
    fake_uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """One stage's D loss from its logits (code/miscc/losses.py discriminator_loss):

    with the unconditional head: (BCE(real_uncond, 1) + BCE(real_cond, 1)) / 2
                                 + (BCE(fake_uncond, 0) + BCE(fake_cond, 0) + BCE(wrong_cond, 0)) / 3
    without it:                  BCE(real_cond, 1) + (BCE(fake_cond, 0) + BCE(wrong_cond, 0)) / 2
    Each BCE is a mean over its own samples (wrong_cond has B - 1 of them).
    """
    if (real_uncond is None) != (fake_uncond is None):
        raise ValueError("pass both unconditional logits (real and fake) or neither")
    if real_uncond is None:
        return combine_discriminator_terms(bce_real(real_cond), bce_fake(fake_cond), bce_fake(wrong_cond))
    return combine_discriminator_terms(
        bce_real(real_cond), bce_fake(fake_cond), bce_fake(wrong_cond), bce_real(real_uncond), bce_fake(fake_uncond)
    )
