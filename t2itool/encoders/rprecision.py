"""R-precision (DM-GAN's protocol, MinfengZhu/DM-GAN code/trainer.py): for each image, its true caption and 99
captions of images of other classes (of other images when the data has no classes) are ranked by the cosine
similarity between the DAMSM image code and the sentence vectors; a hit is the true caption ranked first. Hits are
shuffled and split into groups; the result is the mean and standard deviation of the groups' hit rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from t2itool.data.text import pad_tokens
from t2itool.errors import T2IError

NUM_CANDIDATES = 100  # the true caption + 99 mismatched ones
NUM_GROUPS = 10  # DM-GAN: 30,000 images in 10 groups of 3,000


@dataclass
class RPrecision:
    mean: float  # mean over groups of the top-1 hit rate, in [0, 1]
    std: float  # population std over groups (numpy's default, as DM-GAN)
    num_images: int
    num_groups: int
    num_candidates: int
    hits: np.ndarray  # (N,) bool, in the order of the images given

    def __iter__(self):  # `mean, std = r_precision(...)` reads naturally
        return iter((self.mean, self.std))

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("hits")
        return record


def mismatched_captions(
    store: Any,
    caption_indices: Sequence[int],
    num_candidates: int = NUM_CANDIDATES,
    split: str = "test",
    seed: int = 0,
) -> np.ndarray:
    """(N, num_candidates) caption indices: column 0 the true caption, then captions drawn (with replacement, as
    DM-GAN) from `split` captions whose image has another class than the true caption's image."""
    true = np.asarray(caption_indices, dtype=np.int64)
    image_of_caption = store.caption_images
    class_of_image = np.asarray(store.class_ids)
    pool = np.concatenate([np.arange(r.start, r.stop) for r in map(store.caption_indices, store.split_indices(split))])
    pool_class = class_of_image[image_of_caption[pool]]
    true_class = class_of_image[image_of_caption[true]]
    rng = np.random.default_rng(seed)
    need = num_candidates - 1
    out = np.empty((len(true), num_candidates), dtype=np.int64)
    out[:, 0] = true
    for row, klass in enumerate(true_class):
        chosen: list[np.ndarray] = []
        count = 0
        for _ in range(8):  # rejection sampling: cheap while most of the pool is of other classes
            draw = rng.integers(0, len(pool), size=2 * need)
            keep = draw[pool_class[draw] != klass]
            chosen.append(keep)
            count += len(keep)
            if count >= need:
                break
        else:  # a dominant class: draw from the explicit list instead
            eligible = np.flatnonzero(pool_class != klass)
            if len(eligible) == 0:
                raise T2IError(f"{store.path}: R-precision needs {split} captions of another class than class {klass}")
            chosen = [eligible[rng.integers(0, len(eligible), size=need)]]
        out[row, 1:] = pool[np.concatenate(chosen)[:need]]
    return out


@torch.no_grad()
def encode_captions(
    text_encoder: torch.nn.Module,
    store: Any,
    caption_indices: np.ndarray,
    max_words: int = 18,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Sentence vectors (len, D) of the given captions (each cut to its first `max_words` words)."""
    vectors = []
    for start in range(0, len(caption_indices), batch_size):
        chunk = caption_indices[start : start + batch_size]
        token_lists = [store.caption_tokens(int(index)) for index in chunk]
        tokens = torch.from_numpy(np.stack([pad_tokens(t, max_words) for t in token_lists])).to(device)
        lengths = torch.tensor([min(len(t), max_words) for t in token_lists], dtype=torch.int64)
        _, sentence = text_encoder(tokens, lengths)
        vectors.append(sentence.float())
    return torch.cat(vectors)


@torch.no_grad()
def r_precision(
    damsm: Any,
    images: Any,
    caption_indices: Sequence[int],
    store: Any,
    device: str | torch.device = "cpu",
    num_candidates: int = NUM_CANDIDATES,
    num_groups: int = NUM_GROUPS,
    split: str = "test",
    max_words: int = 18,
    batch_size: int = 50,
    seed: int = 0,
    progress: Any = None,
) -> RPrecision:
    """R-precision of `images` (a tensor or dataset of (3, H, W) in [-1, 1]) against their captions.

    `damsm` has `.text_encoder` ((tokens, lengths) -> (words, sentence)) and `.image_encoder`
    (images -> (regions, code)); `caption_indices[k]` is image k's caption in `store`.
    """
    count = len(images)
    if count != len(caption_indices):
        raise ValueError(f"{count} images but {len(caption_indices)} caption indices")
    if count == 0:
        raise T2IError("R-precision of zero images")
    device = torch.device(device)
    text_encoder, image_encoder = damsm.text_encoder, damsm.image_encoder
    text_was_training, image_was_training = text_encoder.training, image_encoder.training
    text_encoder.eval()
    image_encoder.eval()
    try:
        candidates = mismatched_captions(store, caption_indices, num_candidates, split, seed)
        # Each distinct caption is encoded once, then looked up.
        unique, inverse = np.unique(candidates, return_inverse=True)
        sentences = encode_captions(text_encoder, store, unique, max_words, device=device)
        sentences = torch.nn.functional.normalize(sentences, dim=1, eps=1e-8)
        lookup = torch.from_numpy(inverse.reshape(candidates.shape)).to(device)
        hits = torch.zeros(count, dtype=torch.bool)
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            batch = torch.stack([torch.as_tensor(images[k]) for k in range(start, stop)]).to(device).float()
            _, code = image_encoder(batch)
            code = torch.nn.functional.normalize(code.float(), dim=1, eps=1e-8)
            similarity = torch.einsum("bd,bkd->bk", code, sentences[lookup[start:stop]])
            # Ties count against the true caption: a constant encoder must not score 100%.
            best_other = similarity[:, 1:].max(dim=1).values
            hits[start:stop] = (similarity[:, 0] > best_other).cpu()
            if progress is not None:
                progress(stop - start)
    finally:
        text_encoder.train(text_was_training)
        image_encoder.train(image_was_training)
    return summarize_hits(hits.numpy(), num_groups, num_candidates, seed)


def summarize_hits(hits: np.ndarray, num_groups: int, num_candidates: int, seed: int = 0) -> RPrecision:
    """Shuffle the hits and split them into `num_groups` equal groups (fewer when there are fewer images)."""
    shuffled = np.random.default_rng(seed).permutation(hits)
    groups = max(1, min(num_groups, len(hits)))
    size = len(hits) // groups
    rates = shuffled[: groups * size].reshape(groups, size).mean(axis=1)
    return RPrecision(
        mean=float(rates.mean()),
        std=float(rates.std()),
        num_images=len(hits),
        num_groups=groups,
        num_candidates=num_candidates,
        hits=hits.astype(bool),
    )
