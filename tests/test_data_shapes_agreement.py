"""The shapes agreement metric: ~1.0 on real shapes images, ~chance with shuffled captions."""

from __future__ import annotations

import numpy as np
import torch

from t2itool.data.dataset import CaptionDataset
from t2itool.data.sources.shapes import COLOURS
from t2itool.data.store import Store
from t2itool.metrics.shapes_agreement import caption_attributes, shapes_agreement


def test_caption_attributes() -> None:
    assert caption_attributes("A small RED circle on a white background") == ("red", "circle")
    assert caption_attributes("a red and blue thing") == (None, None)


def test_real_images_agree_shuffled_captions_do_not(shapes_h5: str) -> None:
    store = Store(shapes_h5)
    images = np.stack([store.image(i) for i in range(store.num_images)])
    captions = [store.caption_text(store.caption_indices(i)[0]) for i in range(store.num_images)]
    real = shapes_agreement(images, captions)
    assert real.colour_agreement == 1.0 and real.shape_agreement >= 0.95 and real.num_colour == 96
    assert 1 / len(COLOURS) - 0.05 < real.colour_chance < 0.3
    shuffled = [captions[i] for i in np.random.default_rng(0).permutation(len(captions))]
    low = shapes_agreement(images, shuffled)
    assert low.colour_agreement < real.colour_chance + 0.15 and low.shape_agreement < 0.6


def test_dataset_tensors_in_minus_one_one(shapes_h5: str) -> None:
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(64,), augment=True)
    items = [dataset[i] for i in range(40)]
    images = torch.stack([item["images"][0] for item in items])
    captions = [dataset.store.caption_text(item["caption_index"]) for item in items]
    result = shapes_agreement(images, captions)
    assert result.colour_agreement >= 0.95
