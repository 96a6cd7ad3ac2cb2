"""DAMSM losses (AttnGAN paper Eq. 8-10, taoxugit/AttnGAN code/miscc/losses.py): word-level loss with word-region
attention and sentence-level loss, each the symmetric cross-entropy over the batch's image-caption score matrix, with
same-class pairs masked.

Vectorised over all (image, caption) pairs; `tests/test_encoders.py` checks it against a loop written from the
formulas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8  # AttnGAN's clamp on the product of norms in its cosine similarity


def _cosine(x: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    return (x * y).sum(dim) / (x.norm(dim=dim) * y.norm(dim=dim)).clamp(min=EPS)


def _same_class_mask(class_ids: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    """(B, B) True where i != j share a class: those pairs are neither positives nor negatives."""
    if class_ids is None:
        return None
    class_ids = torch.as_tensor(class_ids, device=device).reshape(-1)
    if class_ids.numel() != batch:
        raise ValueError(f"class_ids has {class_ids.numel()} entries for a batch of {batch}")
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(batch, dtype=torch.bool, device=device)


def _symmetric_cross_entropy(scores: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """scores[i, j] = score(image i, caption j); labels are the diagonal. (image->caption, caption->image)."""
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def word_scores(
    regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, gamma1: float, gamma2: float
) -> torch.Tensor:
    """R(image i, caption j) = log sum_t exp(gamma2 * cos(c_jt, e_jt)) over caption j's words: (B images, B captions).

    regions (B, D, h, w); words (B, D, T) (padding past `lengths` ignored).
    """
    batch, dim, max_length = words.shape
    if regions.shape[:2] != (batch, dim):
        raise ValueError(f"regions {tuple(regions.shape)} do not pair with words {tuple(words.shape)}")
    regions = regions.reshape(batch, dim, -1)  # (B, D, R)
    lengths = lengths.to(words.device).reshape(batch, 1)
    valid = torch.arange(max_length, device=words.device)[None, :] < lengths  # (B captions, T)
    # s[i, j, t, r] = e_jt . v_ir, then a softmax over caption j's words for each region (Eq. 8).
    similarity = torch.einsum("jdt,idr->ijtr", words, regions)
    similarity = similarity.masked_fill(~valid[None, :, :, None], float("-inf")).softmax(dim=2)
    # Attention of each word over the regions (Eq. 9) and the region context it reads.
    attention = (gamma1 * similarity).softmax(dim=3)
    context = torch.einsum("ijtr,idr->ijdt", attention, regions)  # (B, B, D, T)
    relevance = _cosine(context, words[None], dim=2)  # (B, B, T)
    relevance = (gamma2 * relevance).masked_fill(~valid[None], float("-inf"))
    return torch.logsumexp(relevance, dim=2)


def sentence_scores(code: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """cos(global image code i, sentence j): (B images, B captions)."""
    norms = code.norm(dim=1, keepdim=True) * sentence.norm(dim=1, keepdim=True).t()
    return (code @ sentence.t()) / norms.clamp(min=EPS)


def word_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> torch.Tensor:
    """L_w = CE(gamma3 * R, diag) + CE(gamma3 * R^T, diag), same-class pairs masked."""
    scores = gamma3 * word_scores(regions.float(), words.float(), lengths, gamma1, gamma2)
    loss_images, loss_captions = _symmetric_cross_entropy(
        scores, _same_class_mask(class_ids, len(scores), scores.device)
    )
    return loss_images + loss_captions


def sentence_loss(
    code: torch.Tensor, sentence: torch.Tensor, class_ids: torch.Tensor | None = None, gamma3: float = 10.0
) -> torch.Tensor:
    """L_s = CE(gamma3 * cos, diag) + CE(gamma3 * cos^T, diag), same-class pairs masked."""
    scores = gamma3 * sentence_scores(code.float(), sentence.float())
    loss_images, loss_captions = _symmetric_cross_entropy(
        scores, _same_class_mask(class_ids, len(scores), scores.device)
    )
    return loss_images + loss_captions


def damsm_loss(
    regions: torch.Tensor,
    code: torch.Tensor,
    words: torch.Tensor,
    sentence: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> torch.Tensor:
    """L_w + L_s for a batch of matching (image, caption) pairs: image i belongs with caption i."""
    return word_loss(regions, words, lengths, class_ids, gamma1, gamma2, gamma3) + sentence_loss(
        code, sentence, class_ids, gamma3
    )
