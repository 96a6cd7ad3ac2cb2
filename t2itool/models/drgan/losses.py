"""DR-GAN's loss terms (Tan et al., TNNLS 2023, Eqs. of the SDL, RIRM and DNM; DR-GAN repo model.py NEXT_STAGE_G /
G_NET, miscc/losses.py discriminator_loss / generator_loss), as functions of global-batch tensors.

Notation: m(v) the batch mean of vectors v (N, C); var(v) the batch variance mean_n (v_n - m(v))^2; S the side of the
SDM's hidden map (64 and 128 at 256 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2itool.models.blocks.conditioning import kl_loss


def second_moment(vectors: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
    """Per-channel batch variance (C,). 'fixed': mean_n (v_n - m)^2. 'code': model.py's
    (sum_n (v_n - m))^2 / N, which is zero up to rounding whatever the input."""
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    if mode == "fixed":
        return centred.square().mean(dim=0)
    if mode == "code":
        return centred.sum(dim=0).square() / vectors.shape[0]
    raise ValueError(f"second-moment mode {mode!r}: choose fixed or code")


def _pair_term(kept: torch.Tensor, residual: torch.Tensor, real: torch.Tensor, side: float) -> torch.Tensor:
    """softplus(a_p - a_n) + exp(a_p), a_p = ||kept - real||^2 / S, a_n = ||residual - real||^2 / S."""
    a_p = (kept - real).square().sum() / side
    a_n = (residual - real).square().sum() / side
    return F.softplus(a_p - a_n) + torch.exp(a_p)


def semantic_disentangling_loss(
    x11: torch.Tensor,
    r11: torch.Tensor,
    x12: torch.Tensor,
    r12: torch.Tensor,
    real: torch.Tensor,
    side: float,
    variance: str = "fixed",
) -> torch.Tensor:
    """SDL of one SDM over the global batch (all inputs (N, C)): the kept parts x11, x12 are pulled towards the real
    image's statistics and the residual parts r11, r12 pushed away, on the batch mean and on the batch variance:
        sum over (x, r) in {(x11, r11), (x12, r12)} and moment in {m, var} of
        softplus(a_p - a_n) + exp(a_p),
        a_p = ||moment(x) - moment(real)||^2 / S,  a_n = ||moment(r) - moment(real)||^2 / S.
    """
    total = x11.new_zeros(())
    for moment in (lambda v: v.mean(dim=0), lambda v: second_moment(v, variance)):
        target = moment(real)
        total = total + _pair_term(moment(x11), moment(r11), target, side)
        total = total + _pair_term(moment(x12), moment(r12), target, side)
    return total


def generator_internal_term(
    sdl: list[torch.Tensor], sides: list[float], rirm: list[torch.Tensor], base: float, rirm_weight: float
) -> torch.Tensor:
    """model.py G_NET: base ** (SDL_2 / S_2^2 + SDL_3 / S_3^2) + rirm_weight * (RIRM_2 + RIRM_3)."""
    exponent = sum(loss / side**2 for loss, side in zip(sdl, sides, strict=True))
    return torch.pow(torch.as_tensor(base, dtype=sdl[0].dtype), exponent) + rirm_weight * sum(rirm)


def rirm_loss(squared_sums: torch.Tensor, side: float) -> torch.Tensor:
    """RIRM from each sample's sum of squared errors (N,): sum_n ||x_hat_n - x_n||^2 / (S * S) (a sum over the
    batch, as model.py's torch.sum)."""
    return squared_sums.sum() / (side * side)


def frobenius(squared_sums: torch.Tensor) -> torch.Tensor:
    """||A||_F of a batch tensor from each sample's sum of squares (N,): sqrt(sum), as the code's
    pow(torch.sum(pow(A, 2)), 0.5) (over the whole batch, not a mean)."""
    return squared_sums.sum().add(1e-12).sqrt()


def dnm_discriminator_terms(
    fake_rec_error: torch.Tensor,
    real_rec_error: torch.Tensor,
    mu_real: torch.Tensor,
    logvar_real: torch.Tensor,
    mu_fake: torch.Tensor,
    logvar_fake: torch.Tensor,
    weight: float = 0.1,
    rec_weight: float = 0.01,
    kl_weight: float = 0.01,
    kl_mode: str = "fixed",
) -> torch.Tensor:
    """D's DNM terms (miscc/losses.py discriminator_loss): weight * (rec_weight ||resize(fake) - rec(fake)||_F +
    rec_weight ||rec(real) - real_S0||_F) + kl_weight * (KL(real latent) + KL(fake latent)); the errors are the
    Frobenius norms. kl_mode 'code' reproduces kl_lossD = 2 kl_weight KL(real latent)."""
    reconstruction = weight * rec_weight * (fake_rec_error + real_rec_error)
    if kl_mode == "code":
        return reconstruction + 2 * kl_weight * kl_loss(mu_real, logvar_real)
    if kl_mode != "fixed":
        raise ValueError(f"kl mode {kl_mode!r}: choose fixed or code")
    return reconstruction + kl_weight * (kl_loss(mu_real, logvar_real) + kl_loss(mu_fake, logvar_fake))
