"""Conditioning augmentation (CA): a text vector mapped to a Gaussian whose sample conditions the generator.

StackGAN (Zhang et al., ICCV 2017, Sec. 3.1; hanzhanggit/StackGAN-Pytorch code/model.py CA_NET) maps the text
embedding with Linear -> ReLU; AttnGAN (Xu et al., CVPR 2018; taoxugit/AttnGAN code/model.py CA_NET) with
Linear -> GLU. Both split the result into mean and log-variance and reparameterise with noise the caller passes in,
so the sample depends only on the noise stream the loop or sampler drew for that image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "glu")


class ConditioningAugmentation(nn.Module):
    """text (B, text_dim) + eps (B, cond_dim) -> (c, mu, logvar), each (B, cond_dim); c = mu + exp(logvar / 2) * eps.

    activation "relu" (StackGAN): Linear(text_dim, 2 cond_dim) -> ReLU, so mu and logvar are both non-negative (a
    quirk of the PyTorch code, kept). "glu" (AttnGAN): Linear(text_dim, 4 cond_dim) -> GLU -> 2 cond_dim.
    The linear layer is `fc`, as in both official classes.
    """

    def __init__(self, text_dim: int, cond_dim: int, activation: str = "glu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        self.text_dim, self.cond_dim, self.activation = int(text_dim), int(cond_dim), activation
        self.fc = nn.Linear(text_dim, cond_dim * (4 if activation == "glu" else 2))

    def forward(self, text: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert text.dim() == 2 and text.shape[1] == self.text_dim, f"text {tuple(text.shape)}"
        assert eps.shape == (text.shape[0], self.cond_dim), f"eps {tuple(eps.shape)}"
        hidden = self.fc(text)
        hidden = F.glu(hidden, dim=1) if self.activation == "glu" else F.relu(hidden)
        mu, logvar = hidden[:, : self.cond_dim], hidden[:, self.cond_dim :]
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype), mu, logvar


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) as both official codes compute it: -1/2 mean(1 + logvar - mu^2 - exp(logvar)),
    the mean taken over batch and dimensions."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
