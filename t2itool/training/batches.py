"""Data for the loop: the training dataset, the global data order sharded over processes, and the grid captions.

The order is a function of (seed, epoch) alone: each epoch is one permutation cut into global batches of
batch_size x world_size (last partial batch dropped); process r takes slice r of every global batch. So a step's
samples do not depend on the number of processes or workers, and resuming at step N needs only N. A recipe that
splits its batch into k parts (`GANRecipe.sub_batches`, e.g. XMC-GAN's discriminator steps) gets global batches cut
into k sub-batches first, each sharded the same way, so part j of every process together is global sub-batch j.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from t2itool.data.dataset import CaptionDataset, to_signed
from t2itool.data.store import Store
from t2itool.encoders.features import TextFeatures
from t2itool.errors import T2IError
from t2itool.models.recipe import Batch, GANRecipe
from t2itool.noise import row_seed


def open_data(
    path: str, recipe: GANRecipe, seed: int, text_kind: str, crop_margin: bool = True
) -> tuple[Store, CaptionDataset]:
    """(Store, training CaptionDataset) with the sizes, caption length, pairing and text features the recipe needs;
    `crop_margin=False` resizes straight to the crop size (DF-GAN's CelebA transform)."""
    store = Store(path)
    precomputed = text_kind == "precomputed"
    dataset = CaptionDataset(
        path,
        "train",
        image_sizes=tuple(recipe.image_sizes()),
        max_words=recipe.max_words(),
        augment=True,
        pair_same_probability=recipe.pair_same_probability(),
        text_features=precomputed,
        features_average=recipe.features_average() if precomputed else 1,
        seed=seed,
        crop_margin=crop_margin,
        uint8=True,  # a quarter of the bytes from workers and to the device; `batches` converts on the device
    )
    return store, dataset


def _features(items: dict[str, Any], suffix: str = "") -> TextFeatures | None:
    """Precomputed caption features of a collated batch (`suffix` "2": the paired caption), or None."""
    sentence = items.get(f"sentence_features{suffix}")
    if sentence is None:
        return None
    words = items.get(f"word_features{suffix}")
    if words is None:
        return TextFeatures(None, sentence)
    lengths = items[f"word_length{suffix}"].to(torch.int64).clamp_min(1)
    mask = torch.arange(words.shape[1])[None, :] >= lengths[:, None]
    return TextFeatures(words.transpose(1, 2), sentence, mask, lengths)


def to_batch(items: dict[str, Any], positions: torch.Tensor, global_size: int) -> Batch:
    images = items["images"]
    return Batch(
        images=list(images) if isinstance(images, (list, tuple)) else [images],
        tokens=items["tokens"],
        lengths=items["length"],
        class_ids=items["class_id"],
        indices=items["index"],
        caption_indices=items["caption_index"],
        positions=positions,
        global_size=global_size,
        text=_features(items),
        tokens2=items.get("tokens2"),
        lengths2=items.get("length2"),
        text2=_features(items, "2"),
        pair_label=items.get("pair_label"),
    )


class ShardedBatches:
    """The global data order and this process's share of it."""

    def __init__(
        self, num_items: int, batch_size: int, world_size: int, rank: int, seed: int, sub_batches: int = 1
    ) -> None:
        self.num_items, self.batch_size, self.world_size, self.rank, self.seed = (
            num_items, batch_size, world_size, rank, seed,
        )  # fmt: skip
        if sub_batches < 1 or batch_size % sub_batches:
            raise T2IError(f"--batch-size {batch_size}: the model splits each batch into {sub_batches} equal parts")
        self.sub_batches = sub_batches
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = num_items // self.global_batch
        if self.steps_per_epoch == 0:
            raise T2IError(
                f"--batch-size {batch_size}: the training split has {num_items} items, fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(row_seed(self.seed, epoch, -1, 1))
        return torch.randperm(self.num_items, generator=generator)

    def positions(self) -> torch.Tensor:
        """Global positions of this process's rows: part j, row i -> j * G/k + rank * B/k + i."""
        part, sub_global = self.batch_size // self.sub_batches, self.global_batch // self.sub_batches
        rows = torch.arange(part) + self.rank * part
        return torch.cat([rows + j * sub_global for j in range(self.sub_batches)])

    def indices(self, order: torch.Tensor, batch_index: int) -> list[int]:
        return order[batch_index * self.global_batch + self.positions()].tolist()

    def batches(
        self, dataset: Any, *, start_step: int, total_steps: int, workers: int, device: torch.device
    ) -> Iterator[Batch]:
        """This process's batches for steps start_step .. total_steps - 1, on `device`.

        One DataLoader serves the whole run (workers prefetch across epoch boundaries): each index carries its epoch,
        and the worker's copy of the dataset is switched with `set_epoch` when the epoch changes.
        """
        positions = self.positions()
        loader = DataLoader(
            _EpochItems(dataset),
            batch_sampler=_StepIndices(self, start_step, total_steps),
            num_workers=workers,
            collate_fn=default_collate,
            pin_memory=device.type == "cuda",
        )
        for items in loader:
            batch = to_batch(items, positions, self.global_batch).to(device)
            batch.images = [to_signed(images) for images in batch.images]
            yield batch


class _StepIndices:
    """Batch sampler: for every step, this process's (epoch, index) pairs."""

    def __init__(self, order: ShardedBatches, start_step: int, total_steps: int) -> None:
        self.order, self.start_step, self.total_steps = order, start_step, total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        permutation, current = None, -1
        for step in range(self.start_step, self.total_steps):
            epoch, batch_index = divmod(step, self.order.steps_per_epoch)
            if epoch != current:
                permutation, current = self.order.epoch_order(epoch), epoch
            yield [(epoch, index) for index in self.order.indices(permutation, batch_index)]


class _EpochItems(torch.utils.data.Dataset):
    """Wraps the dataset so that items are addressed by (epoch, index)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.epoch = dataset, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self.epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[index]


class GridCaptions:
    """A fixed caption set for sample grids: evenly spaced test images (train if no test split), first caption."""

    def __init__(self, store: Store, count: int, max_words: int) -> None:
        images = np.arange(0)
        for split in ("test", "train"):
            try:
                images = np.asarray(store.split_indices(split))
            except (KeyError, ValueError, T2IError):
                continue
            if len(images):
                break
        if not len(images):
            images = np.arange(store.num_images)
        picks = images[np.linspace(0, len(images) - 1, num=min(count, len(images))).round().astype(int)]
        tokens = torch.zeros(len(picks), max_words, dtype=torch.int64)
        lengths = torch.ones(len(picks), dtype=torch.int64)
        self.texts: list[str] = []
        self.caption_indices: list[int] = []
        self.image_indices: list[int] = [int(image) for image in picks.tolist()]
        for row, image in enumerate(picks.tolist()):
            caption = store.caption_indices(int(image))[0]
            self.caption_indices.append(int(caption))
            ids = torch.as_tensor(np.asarray(store.caption_tokens(caption)), dtype=torch.int64)
            ids = ids[ids != 0][:max_words]
            tokens[row, : len(ids)] = ids
            lengths[row] = max(1, len(ids))
            self.texts.append(store.caption_text(caption))
        self.tokens, self.lengths = tokens, lengths

    def real_images(self, store: Store, size: int) -> torch.Tensor:
        """The grid rows' own images, (rows, 3, size, size) in [-1, 1]: the stored centre square resized (bicubic),
        shown beside the generated ones."""
        from PIL import Image

        def one(index: int) -> torch.Tensor:
            picture = Image.fromarray(store.square_image(index)).resize((size, size), Image.Resampling.BICUBIC)
            return torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1

        return torch.stack([one(index) for index in self.image_indices])
