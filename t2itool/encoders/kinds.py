"""Text sources: where a run's caption features come from, recorded in its states and snapshots.

- "damsm":       AttnGAN's DAMSM text encoder applied to the caption tokens (any caption, free text included).
- "precomputed": features stored per caption in the data file by `prep --caption-features` (StackGAN's
                 char-CNN-RNN embeddings, or BERT features a user computed); only captions of that file can be used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from t2itool.encoders.features import TextFeatures
from t2itool.encoders.text import TextEncoder
from t2itool.errors import T2IError

TEXT_KINDS = ("damsm", "precomputed")


@dataclass
class TextSource:
    """One run's text source. `encoder` is set for "damsm"; `features` (the store's caption-feature record: name,
    source, sentence_dim, word_dim, max_tokens, sha256) for "precomputed"."""

    kind: str
    encoder: TextEncoder | None = None
    features: dict[str, Any] | None = None

    @classmethod
    def damsm(cls, encoder: TextEncoder) -> TextSource:
        return cls("damsm", encoder=encoder)

    @classmethod
    def precomputed(cls, store: Any) -> TextSource:
        info = store.caption_features
        if info is None:
            raise T2IError(
                f"--text precomputed: {store.path} holds no caption features; store them with "
                "`t2itool prep ... --caption-features FILE`, or train with --text damsm"
            )
        fields = ("name", "source", "sentence_dim", "word_dim", "max_tokens", "sha256")
        return cls("precomputed", features={name: getattr(info, name) for name in fields})

    @property
    def sentence_dim(self) -> int:
        return self.encoder.output_dim if self.encoder is not None else int(self.features["sentence_dim"])

    @property
    def word_dim(self) -> int | None:
        if self.encoder is not None:
            return self.encoder.output_dim
        return None if self.features["word_dim"] is None else int(self.features["word_dim"])

    def describe(self) -> str:
        if self.kind == "damsm":
            return f"DAMSM text encoder ({self.sentence_dim}-d words and sentences)"
        words = f", {self.word_dim}-d words" if self.word_dim else ""
        return f"precomputed {self.features['name']} features ({self.sentence_dim}-d sentences{words})"

    # --- encoding ---------------------------------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> TextFeatures:
        """DAMSM features of token ids (B, T) with lengths (B,); only for the "damsm" kind."""
        if self.encoder is None:
            raise T2IError(
                f"this model conditions on {self.describe()}, which exist only for the captions of its data file: "
                "free text cannot be encoded; sample the data file's captions with --split test"
            )
        return self.encoder.encode(tokens, lengths)

    def check_store(self, store: Any) -> None:
        """Refuse a data file whose stored features are not the ones this source was trained with."""
        if self.kind != "precomputed":
            return
        info = store.caption_features
        if info is None or info.sha256 != self.features["sha256"]:
            found = "none" if info is None else f"{info.name}, sha256 {info.sha256[:12]}"
            raise T2IError(
                f"--data {store.path}: its caption features ({found}) are not the ones the model was trained on "
                f"({self.features['name']}, sha256 {self.features['sha256'][:12]}); use the data file of the run"
            )

    def stored(self, store: Any, caption_indices: Sequence[int], device: torch.device | str = "cpu") -> TextFeatures:
        """Precomputed features of the data file's captions `caption_indices`, as a batch."""
        self.check_store(store)
        sentence = torch.from_numpy(np.stack([store.caption_sentence(int(i)) for i in caption_indices]))
        if self.word_dim is None:
            return TextFeatures(None, sentence.to(device))
        rows = [store.caption_words(int(i)) for i in caption_indices]
        words = torch.from_numpy(np.stack([w for w, _ in rows])).transpose(1, 2)  # (B, Dw, T)
        lengths = torch.tensor([max(1, int(n)) for _, n in rows], dtype=torch.int64)
        mask = torch.arange(words.shape[-1])[None, :] >= lengths[:, None]
        return TextFeatures(words, sentence, mask, lengths).to(device)

    # --- records in states and snapshots ----------------------------------------------------------------------
    def record(self, with_weights: bool = True) -> dict[str, Any]:
        """What a snapshot (weights included) or a state (settings only) keeps to rebuild this source."""
        if self.kind == "precomputed":
            return {"kind": "precomputed", **self.features}
        record: dict[str, Any] = {"kind": "damsm", "encoder_config": dict(self.encoder.config())}
        if with_weights:
            record["encoder"] = {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TextSource:
        kind = record.get("kind")
        if kind == "damsm":
            encoder = TextEncoder.from_config(record["encoder_config"])
            encoder.load_state_dict(record["encoder"])
            return cls.damsm(encoder)
        if kind == "precomputed":
            return cls("precomputed", features={k: v for k, v in record.items() if k != "kind"})
        raise T2IError(f"unknown text source kind {kind!r}; this t2itool knows {', '.join(TEXT_KINDS)}")
