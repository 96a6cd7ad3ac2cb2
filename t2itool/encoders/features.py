"""The text features every stage passes around: word and sentence embeddings from the DAMSM text encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextFeatures:
    """Encoded captions for one batch.

    words:    (B, D, T) per-word features (D = 256 for DAMSM), zero past each caption's length.
    sentence: (B, D) sentence vectors.
    mask:     (B, T) bool, True at padding positions (AttnGAN's convention: tokens == 0).
    lengths:  (B,) int64 caption lengths (<= T).
    """

    words: torch.Tensor
    sentence: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def detach(self) -> TextFeatures:
        return TextFeatures(self.words.detach(), self.sentence.detach(), self.mask, self.lengths)

    def to(self, device: torch.device | str) -> TextFeatures:
        return TextFeatures(
            self.words.to(device), self.sentence.to(device), self.mask.to(device), self.lengths.to(device)
        )

    def __len__(self) -> int:
        return self.sentence.shape[0]
