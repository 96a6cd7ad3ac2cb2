"""AttnGAN's DAMSM text encoder: word embedding 300, dropout, one bidirectional LSTM layer of 128 per direction.

Parameter names follow AttnGAN's RNN_ENCODER (`encoder.weight`, `rnn.weight_ih_l0`, ...), so its released state
dicts load as they are (`t2itool import-damsm`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from t2itool.encoders.features import TextFeatures

RNN_TYPES = ("lstm", "gru")


class TextEncoder(nn.Module):
    """Token ids (B, T) + lengths (B,) -> words (B, 2H, T), zero past each length, and sentence (B, 2H)."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 300,  # AttnGAN's word embedding size
        hidden_dim: int = 128,  # per direction; words and sentences are 2 * hidden_dim = 256
        rnn_type: str = "lstm",  # AttnGAN's RNN_TYPE option: lstm | gru
        dropout: float = 0.5,  # on the embeddings (the LSTM's own dropout is a no-op with one layer)
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size {vocab_size}: needs at least the padding token and one word")
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type {rnn_type!r}: choose one of {', '.join(RNN_TYPES)}")
        self.vocab_size, self.embedding_dim, self.hidden_dim = int(vocab_size), int(embedding_dim), int(hidden_dim)
        self.rnn_type, self.dropout = rnn_type, float(dropout)
        self.encoder = nn.Embedding(self.vocab_size, self.embedding_dim)
        self.drop = nn.Dropout(self.dropout)
        rnn_class = nn.LSTM if rnn_type == "lstm" else nn.GRU
        self.rnn = rnn_class(self.embedding_dim, self.hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    @property
    def output_dim(self) -> int:
        return 2 * self.hidden_dim

    def config(self) -> dict[str, Any]:
        """Constructor arguments; `TextEncoder.from_config(encoder.config())` rebuilds the same network."""
        return {
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "rnn_type": self.rnn_type,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextEncoder:
        return cls(**config)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(
                f"expected tokens (B, T) and lengths (B,), got {tuple(tokens.shape)}, {tuple(lengths.shape)}"
            )
        batch, max_length = tokens.shape
        # A caption whose words were all out of vocabulary still gets a vector (from the end token), not a crash.
        lengths = lengths.detach().to("cpu", torch.int64).clamp(1, max_length)
        embedded = self.drop(self.encoder(tokens))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        # Always float32: the encoder is small, and oneDNN's CPU LSTM has no bf16 kernel under autocast.
        with torch.autocast(tokens.device.type, enabled=False):
            output, hidden = self.rnn(packed.float() if packed.data.dtype != torch.float32 else packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=max_length)
        words = output.transpose(1, 2)  # (B, 2H, T); pad_packed_sequence leaves zeros past each length
        final = hidden[0] if isinstance(hidden, tuple) else hidden  # (2, B, H): forward then backward direction
        sentence = final.transpose(0, 1).reshape(batch, self.output_dim)
        return words, sentence

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> TextFeatures:
        """`forward` packaged as TextFeatures, with the padding mask (True past each caption's length)."""
        words, sentence = self(tokens, lengths)
        lengths = lengths.to(tokens.device, torch.int64).clamp(1, tokens.shape[1])
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] >= lengths[:, None]
        return TextFeatures(words, sentence, mask, lengths)
