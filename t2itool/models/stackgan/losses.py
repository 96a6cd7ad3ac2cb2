"""StackGAN's matching-aware BCE losses (hanzhanggit/StackGAN-Pytorch code/miscc/utils.py
compute_discriminator_loss, compute_generator_loss; trainer.py adds the CA KL term), as functions of logits.

The official heads end in a sigmoid and use BCELoss on the probabilities; these functions take the logits before that
sigmoid and use BCE-with-logits, the same value without the sigmoid's saturation. Each BCE is a mean over its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2itool.models.blocks.conditioning import kl_loss


def bce_real(logits: torch.Tensor) -> torch.Tensor:
    """mean of -log sigmoid(logits): BCE against label 1."""
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def bce_fake(logits: torch.Tensor) -> torch.Tensor:
    """mean of -log(1 - sigmoid(logits)): BCE against label 0."""
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def mismatched_pairs(features: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The code's wrong pairs: real features of samples 0..B-2 with the conditions of samples 1..B-1 (no check that
    the two captions differ). Feed them to the conditional head; the result has B - 1 logits."""
    assert features.shape[0] == condition.shape[0] >= 2, "wrong pairs need a batch of at least 2"
    return features[:-1], condition[1:]


def discriminator_loss(
    real: torch.Tensor,
    wrong: torch.Tensor,
    fake: torch.Tensor,
    uncond_real: torch.Tensor | None = None,
    uncond_fake: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional logits of (real image, its condition), the wrong pairs and (fake image, its condition); the
    condition is the generator's CA mean, detached.

    Stage I (no unconditional logits):  BCE(real, 1) + (BCE(fake, 0) + BCE(wrong, 0)) / 2.
    Stage II (both unconditional logits): (BCE(real, 1) + BCE(uncond_real, 1)) / 2
                                          + (BCE(fake, 0) + BCE(wrong, 0) + BCE(uncond_fake, 0)) / 3.
    """
    if (uncond_real is None) != (uncond_fake is None):
        raise ValueError("give both unconditional logits (stage II) or neither (stage I)")
    return combine_discriminator_terms(
        bce_real(real),
        bce_fake(wrong),
        bce_fake(fake),
        None if uncond_real is None else bce_real(uncond_real),
        None if uncond_fake is None else bce_fake(uncond_fake),
    )


def combine_discriminator_terms(
    real: torch.Tensor,
    wrong: torch.Tensor,
    fake: torch.Tensor,
    uncond_real: torch.Tensor | None = None,
    uncond_fake: torch.Tensor | None = None,
) -> torch.Tensor:
    """`discriminator_loss` from its BCE terms (for callers that form a term themselves, e.g. the wrong pairs of a
    global batch spread over processes)."""
    if uncond_real is None or uncond_fake is None:
        return real + 0.5 * (fake + wrong)
    return (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3


def wrong_pairs_term(logits: torch.Tensor, valid: torch.Tensor, pairs: int, world_size: int = 1) -> torch.Tensor:
    """This process's share of BCE(wrong, 0) averaged over the `pairs` wrong pairs of the global batch.

    `logits` (B,) are the conditional logits of every local real image with the next global sample's condition;
    `valid` (B,) marks the rows that are pairs (the global batch's last sample has no next one). The loop averages
    gradients and statistics over processes, so each process returns world_size x (its sum) / pairs: the average over
    processes is the one-process mean over all pairs."""
    assert logits.shape == valid.shape, f"logits {tuple(logits.shape)}, valid {tuple(valid.shape)}"
    per_row = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (per_row * valid.to(per_row.dtype)).sum() * (world_size / pairs)


def generator_loss(
    fake: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    coeff_kl: float = 2.0,
    uncond_fake: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE(fake, 1) [+ BCE(uncond_fake, 1) in stage II] + coeff_kl * KL(N(mu, exp(logvar)) || N(0, I)).

    `fake` is the conditional head on (fake image, mu detached); mu and logvar (not detached) carry the KL gradient
    into the generator's CA."""
    adversarial = bce_real(fake)
    if uncond_fake is not None:
        adversarial = adversarial + bce_real(uncond_fake)
    return adversarial + coeff_kl * kl_loss(mu, logvar)
