"""Data for the loop: the training dataset, the global data order sharded over processes, and the grid captions.

The order is a function of (seed, epoch) alone: each epoch is one permutation cut into global batches of
batch_size x world_size (last partial batch dropped); process r takes slice r of every global batch. So a step's
samples do not depend on the number of processes or workers, and resuming at step N needs only N.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from t2itool.data.dataset import to_signed
from t2itool.errors import T2IError
from t2itool.training.recipe import Batch, sample_seed


def open_data(path: str, recipe: Any, seed: int) -> tuple[Any, Any]:
    """(Store, training CaptionDataset) with the sizes, caption length and pairing the recipe asks for."""
    from t2itool.data.dataset import CaptionDataset
    from t2itool.data.store import Store

    store = Store(path)
    dataset = CaptionDataset(
        path,
        "train",
        image_sizes=tuple(recipe.image_sizes()),
        max_words=recipe.max_words(),
        augment=True,
        pair=recipe.pair,
        seed=seed,
        uint8=True,  # a quarter of the bytes from workers and to the device; `batches` converts on the device
    )
    return store, dataset


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
        tokens2=items.get("tokens2"),
        lengths2=items.get("length2"),
        pair_label=items.get("pair_label"),
    )


class ShardedBatches:
    """The global data order and this process's share of it."""

    def __init__(self, num_items: int, batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.num_items, self.batch_size, self.world_size, self.rank, self.seed = (
            num_items, batch_size, world_size, rank, seed,
        )  # fmt: skip
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = num_items // self.global_batch
        if self.steps_per_epoch == 0:
            raise T2IError(
                f"--batch-size {batch_size}: the training split has {num_items} items, fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1, 1))
        return torch.randperm(self.num_items, generator=generator)

    def indices(self, order: torch.Tensor, batch_index: int) -> list[int]:
        start = batch_index * self.global_batch + self.rank * self.batch_size
        return order[start : start + self.batch_size].tolist()

    def batches(
        self, dataset: Any, *, start_step: int, total_steps: int, workers: int, device: torch.device
    ) -> Iterator[Batch]:
        """This process's batches for steps start_step .. total_steps - 1, on `device`.

        One DataLoader serves the whole run (workers prefetch across epoch boundaries): each index carries its epoch,
        and the worker's copy of the dataset is switched with `set_epoch` when the epoch changes.
        """
        positions = torch.arange(self.batch_size) + self.rank * self.batch_size
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

    def __init__(self, store: Any, count: int, max_words: int) -> None:
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
        for row, image in enumerate(picks.tolist()):
            caption = store.caption_indices(int(image))[0]
            ids = torch.as_tensor(np.asarray(store.caption_tokens(caption)), dtype=torch.int64)
            ids = ids[ids != 0][:max_words]
            tokens[row, : len(ids)] = ids
            lengths[row] = max(1, len(ids))
            self.texts.append(store.caption_text(caption))
        self.tokens, self.lengths = tokens, lengths
