"""SD-GAN's Siamese contrastive loss (Yin et al., CVPR 2019, Sec. 3.2, Eq. for L_c)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(
    v1: torch.Tensor, v2: torch.Tensor, same: torch.Tensor, alpha: float = 0.1, margin: float = 1.0
) -> torch.Tensor:
    """L_c = 1/(2N) sum_n [ y_n max(d_n, alpha)^2 + (1 - y_n) max(margin - d_n, 0)^2 ], d_n = ||v1_n - v2_n||_2.

    v1, v2: (N, D) features of the two branches; same: (N,) pair labels (1 = both captions describe the same image).
    N counts pairs (the paper's N; whether it means pairs or feature dimensions is not stated, pairs is the
    contrastive-loss convention). alpha floors the positive distance so that same-image fakes are not pulled onto
    one point; margin pushes different-image fakes at least that far apart.
    """
    assert v1.shape == v2.shape and v1.dim() == 2, f"v1 {tuple(v1.shape)}, v2 {tuple(v2.shape)}"
    y = same.to(v1.dtype).view(-1)
    # sqrt of the sum of squares plus a tiny floor: the gradient of ||.|| is undefined at 0.
    distance = (v1 - v2).square().sum(dim=1).add(1e-12).sqrt()
    positive = y * distance.clamp(min=alpha).square()
    negative = (1 - y) * F.relu(margin - distance).square()
    return (positive + negative).sum() / (2 * v1.shape[0])


def branch_features(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Discriminator features (B, C, 4, 4) -> (B, C) by global average pooling, optionally L2-normalised."""
    pooled = features.float().mean(dim=(2, 3))
    return F.normalize(pooled, dim=1) if normalize else pooled
