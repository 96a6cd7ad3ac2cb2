"""XMC-GAN's losses as functions of tensors (google-research/xmcgan_image_generation xmcgan/libml/attention_lib.py,
xmcgan/libml/losses.py, xmcgan/xmc_gan.py): hinge, and the three contrastive terms.

The contrastive losses couple every sample with every other one: pass tensors already gathered over the global batch
(keeping the gradient of the local part), in the same order for both sides, so that pair i of one side matches pair
i of the other. They compute in float32 whatever the input dtype, inside autocast too.

Which D/G outputs feed which loss (weights 1.0 in the code):
  D loss: hinge_d(real, fake) + sentence(real features, sentence embedding) + word_region(real regions, words)
  G loss: hinge_g(fake) + sentence(fake features, sentence embedding) + word_region(fake regions, words)
          + image(fake features, real features) + image(frozen net(fake), frozen net(real))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2itool.models.blocks.losses import hinge_d_loss, hinge_g_loss
from t2itool.models.xmcgan.networks import float32, l2_normalize

__all__ = [
    "contrastive_logits",
    "contrastive_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "image_contrastive_loss",
    "matching_accuracy",
    "sentence_contrastive_loss",
    "word_region_loss",
    "word_region_scores",
]


def contrastive_logits(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, N) logits[i, j] = cos(a_i, b_j) / tau for a, b (N, D) (both l2-normalised, as the code)."""
    assert a.dim() == 2 and a.shape == b.shape, f"contrastive pair {tuple(a.shape)} vs {tuple(b.shape)}"
    with float32(a):
        return l2_normalize(a.float()) @ l2_normalize(b.float()).T / tau


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """CE(logits, diagonal) + CE(logits^T, diagonal), each averaged over the rows (the code sums the two)."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    with float32(logits):
        return F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.float().T, labels)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """The code's contrastive_loss: l2-normalise, logits a b^T / tau, cross-entropy towards the matching pair in both
    directions, summed. Symmetric in (a, b)."""
    return symmetric_cross_entropy(contrastive_logits(a, b, tau))


def sentence_contrastive_loss(
    image_features: torch.Tensor, sentence_embedding: torch.Tensor, tau: float = 0.1
) -> torch.Tensor:
    """Sentence-image: D's pooled features (N, 16 df) against D's projected sentences (N, 16 df). Real pairs feed
    D's loss, fake pairs G's."""
    return contrastive_loss(image_features, sentence_embedding, tau)


def image_contrastive_loss(fake: torch.Tensor, real: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Image-image: a generated image against the real image of the same caption, on D's pooled features or on a
    frozen network's features (N, D). G's loss only."""
    return contrastive_loss(fake, real, tau)


def word_region_scores(
    regions: torch.Tensor,
    words: torch.Tensor,
    mask: torch.Tensor | None,
    rho1: float = 5.0,
    rho2: float = 5.0,
    scale: float = 50.0,
) -> torch.Tensor:
    """(N images, N captions) matching scores of the code's word_loss (AttnGAN's word-level DAMSM score with cosine
    attention and the paper's 1/rho2):

    regions (N, D, H, W) or (N, D, R) and words (N, D, T) are l2-normalised; for image i and caption j,
    alpha = softmax over regions of rho1 cos(region r, word t), context_t = sum_r alpha_rt region_r,
    score_ij = scale * log(sum over caption j's real words t of exp(rho2 cos(word_t, context_t))) / rho2.
    Padding words (mask True) get no term; unlike AttnGAN's DAMSM, there is no extra normalisation over words
    before the region softmax and the attention uses cosines, not dot products. Every caption needs >= 1 word.
    """
    regions = regions.flatten(2)
    count = regions.shape[0]
    assert regions.dim() == 3 and words.dim() == 3, f"regions {tuple(regions.shape)}, words {tuple(words.shape)}"
    assert words.shape[:2] == (count, regions.shape[1]), f"words {tuple(words.shape)} for {tuple(regions.shape)}"
    assert mask is None or mask.shape == (count, words.shape[2]), f"mask {tuple(mask.shape)}"
    with float32(regions):
        regions = l2_normalize(regions.float().transpose(1, 2))  # (N, R, D)
        words = l2_normalize(words.float().transpose(1, 2))  # (N, T, D)
        similarity = torch.einsum("ird,jtd->ijrt", regions, words)  # image i, caption j, region r, word t
        alpha = (rho1 * similarity).softmax(dim=2)
        context = torch.einsum("ijrt,ird->ijtd", alpha, regions)
        cosine = (context * words[None]).sum(-1) / context.norm(dim=-1).clamp_min(1e-8)  # words are unit vectors
        logits = rho2 * cosine  # (N images, N captions, T)
        if mask is not None:
            logits = logits.masked_fill(mask[None], float("-inf"))
        return scale * torch.logsumexp(logits, dim=2) / rho2


def word_region_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    mask: torch.Tensor | None,
    rho1: float = 5.0,
    rho2: float = 5.0,
    scale: float = 50.0,
) -> torch.Tensor:
    """Word-region contrastive loss: cross-entropy of `word_region_scores` towards the matching pair, over images and
    over captions, summed. Real pairs feed D's loss, fake pairs G's."""
    return symmetric_cross_entropy(word_region_scores(regions, words, mask, rho1, rho2, scale))


@torch.no_grad()
def matching_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Share of rows and columns of a square score matrix whose maximum is on the diagonal (the code's accuracy
    statistic, averaged over both directions)."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    rows = (logits.argmax(dim=1) == labels).float().mean()
    cols = (logits.argmax(dim=0) == labels).float().mean()
    return (rows + cols) / 2
