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

PAIR_MODES = {None: None, "same": 1.0, "other": 0.0}  # the older names of pair_same_probability


def load_size(image_size: int) -> int:
    """The size images are brought to before cropping `image_size` (AttnGAN's 76/64 margin: 256 -> 304)."""
    return int(image_size * 76 / 64)


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """torchvision `Resize(shorter)`'s output size: the shorter side becomes `shorter`, the longer side is truncated."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


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
    `index`, `caption_index`.

    `text_features=True` (a file prepared with --caption-features) adds `sentence_features` float32 (D,) and, when
    the file has word features, `word_features` float32 (T, Dw) zero past `word_length`. `features_average=k` makes
    `sentence_features` the mean over k distinct random captions of the image (StackGAN's TF code uses 4), the first
    of which is the item's caption; images with fewer captions average all of theirs.

    `pair_same_probability=p` adds a second caption: of the same image (a different caption when there is one) with
    probability p, else of another image of the split (SD-GAN's Siamese pairs): `tokens2`, `length2`, `index2`,
    `caption_index2`, `pair_label` (1 = same image) and with text features `sentence_features2` (averaged alike),
    `word_features2`, `word_length2`. `pair="same"`/`"other"` are p = 1 / p = 0.

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
        text_features: bool = False,
        features_average: int = 1,
        pair_same_probability: float | None = None,
        crop_margin: bool = True,
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
        if pair is not None and pair_same_probability is not None:
            raise T2IError("give pair or pair_same_probability, not both (pair='same' is p=1, 'other' is p=0)")
        probability = PAIR_MODES[pair] if pair_same_probability is None else float(pair_same_probability)
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise T2IError(f"pair_same_probability {pair_same_probability}: must be between 0 and 1")
        self.max_words = int(max_words)
        self.augment = bool(augment)
        self.pair = pair
        self.pair_same_probability = probability
        self.seed = int(seed)
        self.epoch = 0
        self.indices = np.asarray(self.store.split_indices(split), dtype=np.int64)
        if len(self.indices) == 0:
            raise T2IError(f"{self.store.path}: split {split!r} has no images")
        if probability is not None and probability < 1 and len(self.indices) < 2:
            raise T2IError(f"{self.store.path}: pairs of different images need at least two images in split {split!r}")
        self.text_features = bool(text_features)
        self.features_average = int(features_average)
        self.word_features = False
        if self.features_average < 1:
            raise T2IError(f"features_average {features_average}: must be at least 1")
        if self.text_features:
            info = self.store.require_caption_features()
            self.word_features = info.word_dim is not None
            if self.word_features and self.features_average > 1:
                raise T2IError(
                    f"{self.store.path}: features_average {self.features_average} averages sentence features, but "
                    f"the file's {info.name} features have word features, which cannot be averaged; use 1"
                )
        elif self.features_average != 1:
            raise T2IError("features_average applies to text features: pass text_features=True")
        self.crop_size = max(self.image_sizes)
        # Official transforms resize the shorter side to 76/64 of the crop (256 -> 304) and crop anywhere; DF-GAN's
        # CelebA transform (tobran/DF-GAN code/lib/perpare.py) resizes straight to the crop size.
        self.crop_margin = bool(crop_margin)
        self.resize_to = load_size(self.crop_size) if self.crop_margin else self.crop_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def rng(self, image_index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, int(image_index)])

    def images(self, image_index: int, rng: np.random.Generator) -> list[torch.Tensor]:
        """The official transform: the stored image with its shorter side at the crop's 76/64 margin (resized here
        only if prep stored another size), a crop anywhere in it (random + flip when augmenting, else the centre),
        rescaled to every size of `image_sizes`."""
        stored = self.store.image(image_index)  # (H, W, 3) uint8, aspect kept (or a square with prep --square)
        height, width = stored.shape[:2]
        image: np.ndarray | torch.Tensor = stored
        if min(height, width) != self.resize_to:
            image = torch.from_numpy(np.ascontiguousarray(stored)).permute(2, 0, 1)
            size = resized_shape(height, width, self.resize_to)
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

    def _averaged(self, captions: range, first: int, rng: np.random.Generator) -> list[int]:
        """`first` and up to features_average - 1 other distinct captions of the same image, drawn at random."""
        if self.features_average == 1:
            return [first]
        rest = [caption for caption in captions if caption != first]
        count = min(self.features_average - 1, len(rest))
        return [first, *(rest[int(i)] for i in rng.choice(len(rest), size=count, replace=False))]

    def _features(self, image_index: int, chosen: list[int], suffix: str = "") -> dict[str, Any]:
        """`sentence_features` (mean over `chosen`), and the first caption's word features when the file has them."""
        if len(chosen) == 1:
            sentence = self.store.caption_sentence(chosen[0])
        else:
            first = self.store.caption_indices(image_index).start
            block = self.store.image_sentences(image_index)
            sentence = block[[caption - first for caption in chosen]].mean(axis=0, dtype=np.float64).astype(np.float32)
        features = {f"sentence_features{suffix}": torch.from_numpy(sentence)}
        if self.word_features:
            words, length = self.store.caption_words(chosen[0])
            features[f"word_features{suffix}"], features[f"word_length{suffix}"] = torch.from_numpy(words), length
        return features

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
        if self.text_features:
            item.update(self._features(image_index, self._averaged(captions, caption_index, rng)))
        probability = self.pair_same_probability
        if probability is not None:
            # p = 0 and p = 1 draw nothing here, so they give the same items as the older pair="other"/"same".
            same = probability >= 1 or (probability > 0 and rng.random() < probability)
            if same:
                # A different caption of the same image when there is one.
                others = [c for c in captions if c != caption_index] or [caption_index]
                second = others[int(rng.integers(len(others)))]
                second_image, second_captions = image_index, captions
            else:
                other_position = int(rng.integers(len(self.indices) - 1))
                other_position += other_position >= position
                second_image = int(self.indices[other_position])
                second_captions = self.store.caption_indices(second_image)
                second = second_captions[int(rng.integers(len(second_captions)))]
            item["tokens2"], item["length2"] = self._caption(second, rng)
            item["pair_label"] = int(same)
            item["index2"], item["caption_index2"] = second_image, second
            if self.text_features:
                item.update(self._features(second_image, self._averaged(second_captions, second, rng), suffix="2"))
        return item
