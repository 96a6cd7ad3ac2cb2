"""Caption text processing identical to AttnGAN's (lower-case, `\\w+` tokens, ASCII only) and the vocabulary.

Also reads AttnGAN's Python-2 `captions.pickle` through the restricted unpickler of `t2itool.data.pickles`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from nltk.tokenize import RegexpTokenizer

from t2itool.data.pickles import load_plain_pickle
from t2itool.errors import T2IError

END_TOKEN = "<end>"
TOKENIZER_NAME = "attngan-regexp-w+-lower-ascii"
_TOKENIZER = RegexpTokenizer(r"\w+")


def tokenize(caption: str) -> list[str]:
    """AttnGAN's tokens: `\\uFFFD\\uFFFD` -> space, lower-case, `\\w+` runs, non-ASCII dropped, empties dropped."""
    caption = caption.replace("\ufffd\ufffd", " ")
    tokens = []
    for token in _TOKENIZER.tokenize(caption.lower()):
        ascii_token = token.encode("ascii", "ignore").decode("ascii")
        if ascii_token:
            tokens.append(ascii_token)
    return tokens


def split_caption_lines(text: str) -> list[str]:
    """Lines of a caption file that hold at least one token, in order (AttnGAN skips empty ones)."""
    return [line for line in text.split("\n") if tokenize(line)]


class Vocabulary:
    """Index 0 is `<end>` (padding only); every other word has one id. Unknown words are reported, never mapped."""

    def __init__(self, words: Sequence[str]) -> None:
        words = [str(word) for word in words]
        if not words or words[0] != END_TOKEN:
            raise T2IError(f"vocabulary: index 0 must be {END_TOKEN!r} (found {words[:1]!r})")
        if len(set(words)) != len(words):
            raise T2IError("vocabulary: duplicate words")
        self.words: list[str] = words
        self.word_to_id: dict[str, int] = {word: index for index, word in enumerate(words)}
        self.sha256: str = hashlib.sha256(json.dumps(words, ensure_ascii=True).encode("ascii")).hexdigest()

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Vocabulary:
        return cls(words)

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_word_count: int = 0) -> Vocabulary:
        """Every word counted over all captions; words with count >= min_word_count, most frequent first."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        # AttnGAN's order is dict iteration order (not reproducible); ours is by count, then alphabetical.
        kept = sorted(
            (word for word, count in counts.items() if count >= min_word_count), key=lambda w: (-counts[w], w)
        )
        return cls([END_TOKEN, *[word for word in kept if word != END_TOKEN]])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, sha256={self.sha256[:12]})"

    def encode(self, tokens: Iterable[str]) -> tuple[list[int], list[str]]:
        """(ids of the known tokens, unknown tokens) — unknown ones are dropped from the ids, as AttnGAN does."""
        ids: list[int] = []
        missing: list[str] = []
        for token in tokens:
            index = self.word_to_id.get(token)
            if index is None or index == 0:
                missing.append(token)
            else:
                ids.append(index)
        return ids, missing

    def decode(self, ids: Iterable[int]) -> str:
        """Words of the non-padding ids joined by spaces."""
        return " ".join(self.words[int(index)] for index in ids if int(index) != 0)


def load_attngan_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """AttnGAN's `captions.pickle` [train, test, ixtoword, wordtoix] -> the exact vocabulary (ids kept)."""
    value = load_plain_pickle(path)
    if not isinstance(value, list) or len(value) != 4:
        raise T2IError(f"{path}: expected AttnGAN's captions.pickle, a 4-item list [train, test, ixtoword, wordtoix]")
    ixtoword, wordtoix = value[2], value[3]
    if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict):
        raise T2IError(f"{path}: items 3 and 4 must be the ixtoword and wordtoix dicts")
    size = len(ixtoword)
    if sorted(ixtoword) != list(range(size)):
        raise T2IError(f"{path}: ixtoword keys are not 0..{size - 1}")
    words = [ixtoword[index] for index in range(size)]
    for word, index in wordtoix.items():
        if not isinstance(index, int) or index >= size or words[index] != word:
            raise T2IError(f"{path}: wordtoix[{word!r}] = {index!r} disagrees with ixtoword")
    return Vocabulary(words)


def pad_tokens(ids: Sequence[int], length: int) -> np.ndarray:
    """Zero-padded (or head-truncated) int64 array of `length` ids: for sampling from free text."""
    out = np.zeros(length, dtype=np.int64)
    ids = list(ids)[:length]
    out[: len(ids)] = ids
    return out
