"""The text features every stage passes around: word and sentence embeddings of a batch of captions.

From AttnGAN's DAMSM text encoder (`--text damsm`) or read from the data file (`--text precomputed`: features a
user stored with `prep --caption-features`, e.g. StackGAN's char-CNN-RNN sentence embeddings, which have no words).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextFeatures:
    """Encoded captions for one batch.

    words:    (B, Dw, T) per-word features (Dw = 256 for DAMSM), zero past each caption's length; None when the text
              source has no word features.
    sentence: (B, D) sentence vectors.
    mask:     (B, T) bool, True at padding positions (AttnGAN's convention: tokens == 0); None without words.
    lengths:  (B,) int64 word counts (<= T); None without words.
    """

    words: torch.Tensor | None
    sentence: torch.Tensor
    mask: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def detach(self) -> TextFeatures:
        words = self.words.detach() if self.words is not None else None
        return TextFeatures(words, self.sentence.detach(), self.mask, self.lengths)

    def to(self, device: torch.device | str) -> TextFeatures:
        def move(value: torch.Tensor | None) -> torch.Tensor | None:
            return value.to(device) if value is not None else None

        return TextFeatures(move(self.words), self.sentence.to(device), move(self.mask), move(self.lengths))

    def float(self) -> TextFeatures:
        words = self.words.float() if self.words is not None else None
        return TextFeatures(words, self.sentence.float(), self.mask, self.lengths)

    def __len__(self) -> int:
        return self.sentence.shape[0]
