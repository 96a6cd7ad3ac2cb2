"""The training-side torch Dataset over a prepared file: multi-resolution crops, AttnGAN's caption sampling, pairs.

Every random choice of an item comes from a generator seeded with (seed, epoch, index), so the output is the same
whatever the number of DataLoader workers or processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from t2itool.data.store import Store
from t2itool.errors import T2IError

PAIR_MODES = (None, "same", "other")


def load_size(image_size: int) -> int:
    """The size images are brought to before cropping `image_size` (AttnGAN's 76/64 margin: 256 -> 304)."""
    return int(image_size * 76 / 64)


def sample_caption(tokens: np.ndarray, max_words: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """AttnGAN's rule: pad short captions with 0; for long ones keep `max_words` random positions in their order."""
    out = np.zeros(max_words, dtype=np.int64)
    if len(tokens) <= max_words:
        out[: len(tokens)] = tokens
        return out, len(tokens)
    keep = np.sort(rng.choice(len(tokens), size=max_words, replace=False))
    out[:] = tokens[keep]
    return out, max_words


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (from `CaptionDataset(..., uint8=True)`) as float in [-1, 1]; float images pass through."""
    return images.float().div_(127.5).sub_(1.0) if images.dtype == torch.uint8 else images


class CaptionDataset(Dataset):
    """Items: `images` (list of (3, s, s) float in [-1, 1], `image_sizes` order), `tokens`, `length`, `class_id`,
    `index`, `caption_index`; with `pair`: `tokens2`, `length2`, `pair_label` (1 = same image).

    `uint8=True` returns the images as uint8 in 0..255 instead (rounded after any resize): a quarter of the bytes
    between DataLoader workers and to the GPU, where `to_signed` converts them.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        image_sizes: Sequence[int] = (256,),
        max_words: int = 18,
        augment: bool = True,
        pair: str | None = None,
        seed: int = 0,
        uint8: bool = False,
    ) -> None:
        self.store = Store(path)
        self.uint8 = bool(uint8)
        self.split = split
        self.image_sizes = tuple(int(size) for size in image_sizes)
        if not self.image_sizes or min(self.image_sizes) < 1:
            raise T2IError(f"image sizes {image_sizes!r}: give one or more positive sizes")
        if max_words < 1:
            raise T2IError(f"max_words {max_words}: must be at least 1")
        if pair not in PAIR_MODES:
            raise T2IError(f"pair {pair!r}: choose None, 'same' or 'other'")
        self.max_words = int(max_words)
        self.augment = bool(augment)
        self.pair = pair
        self.seed = int(seed)
        self.epoch = 0
        self.indices = np.asarray(self.store.split_indices(split), dtype=np.int64)
        if len(self.indices) == 0:
            raise T2IError(f"{self.store.path}: split {split!r} has no images")
        if pair == "other" and len(self.indices) < 2:
            raise T2IError(f"{self.store.path}: pair='other' needs at least two images in split {split!r}")
        self.crop_size = max(self.image_sizes)
        self.resize_to = load_size(self.crop_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def rng(self, image_index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, int(image_index)])

    def images(self, image_index: int, rng: np.random.Generator) -> list[torch.Tensor]:
        """The stored image resized to the crop's 76/64 margin, cropped (random + flip when augmenting), rescaled."""
        stored = self.store.image(image_index)  # (H, W, 3) uint8
        height, width = stored.shape[:2]
        image: np.ndarray | torch.Tensor = stored
        if min(height, width) != self.resize_to:
            image = torch.from_numpy(np.ascontiguousarray(stored)).permute(2, 0, 1)
            scale = self.resize_to / min(height, width)
            size = (max(self.resize_to, round(height * scale)), max(self.resize_to, round(width * scale)))
            image = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            image = image[0].clamp_(0, 255)
            height, width = size
        crop = self.crop_size
        # Draw the random numbers whether or not they are used, so the caption choice does not depend on `augment`.
        top_draw, left_draw, flip_draw = rng.integers(0, 1 << 30, size=3)
        if self.augment:
            top, left, flip = (
                int(top_draw % (height - crop + 1)),
                int(left_draw % (width - crop + 1)),
                bool(flip_draw & 1),
            )
        else:
            top, left, flip = (height - crop) // 2, (width - crop) // 2, False
        if isinstance(image, np.ndarray):  # no resize: crop and flip as views, then one copy into (3, s, s)
            view = image[top : top + crop, left : left + crop]
            patch = torch.from_numpy(np.ascontiguousarray((view[:, ::-1] if flip else view).transpose(2, 0, 1)))
        else:
            patch = image[:, top : top + crop, left : left + crop]
            if flip:
                patch = patch.flip(-1)
        if self.uint8:
            return [self._uint8(patch, size) for size in self.image_sizes]
        patch = patch.float().div_(127.5).sub_(1.0)
        outputs = []
        for size in self.image_sizes:
            if size == crop:
                outputs.append(patch.contiguous())
            else:
                scaled = F.interpolate(
                    patch[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
                outputs.append(scaled[0].clamp_(-1, 1))
        return outputs

    @staticmethod
    def _uint8(patch: torch.Tensor, size: int) -> torch.Tensor:
        """The crop (uint8, or float 0..255 after a resize) at `size`, as uint8."""
        if patch.shape[-1] != size:
            patch = F.interpolate(patch[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
        if patch.dtype != torch.uint8:
            patch = patch.round_().clamp_(0, 255).to(torch.uint8)
        return patch.contiguous()

    def _caption(self, caption_index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        tokens, length = sample_caption(self.store.caption_tokens(caption_index), self.max_words, rng)
        return torch.from_numpy(tokens), length

    def __getitem__(self, position: int) -> dict[str, Any]:
        position = int(position)
        image_index = int(self.indices[position])
        rng = self.rng(image_index)
        captions = self.store.caption_indices(image_index)
        caption_index = captions[int(rng.integers(len(captions)))]
        tokens, length = self._caption(caption_index, rng)
        item: dict[str, Any] = {
            "images": self.images(image_index, rng),
            "tokens": tokens,
            "length": length,
            "class_id": int(self.store.class_ids[image_index]),
            "index": image_index,
            "caption_index": caption_index,
        }
        if self.pair is not None:
            if self.pair == "same":
                # A different caption of the same image when there is one.
                others = [c for c in captions if c != caption_index] or [caption_index]
                second = others[int(rng.integers(len(others)))]
                label = 1
            else:
                other_position = int(rng.integers(len(self.indices) - 1))
                other_position += other_position >= position
                other_captions = self.store.caption_indices(int(self.indices[other_position]))
                second = other_captions[int(rng.integers(len(other_captions)))]
                label = 0
            item["tokens2"], item["length2"] = self._caption(second, rng)
            item["pair_label"] = label
        return item
