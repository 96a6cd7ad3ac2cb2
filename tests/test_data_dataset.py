"""CaptionDataset: resolutions, crop/flip, AttnGAN's long-caption subset, pairs, worker-independent randomness."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from t2itool.data.dataset import CaptionDataset, load_size, sample_caption
from t2itool.data.sources.shapes import build_shapes
from t2itool.data.store import Store
from t2itool.errors import T2IError


def test_store_reader_and_pickling(shapes_h5: str) -> None:
    store = Store(shapes_h5)
    assert (store.num_images, store.num_captions, store.image_size, store.image_format) == (96, 480, 76, "raw")
    assert len(store.split_indices("train")) + len(store.split_indices("test")) == 96
    image = store.image(5)
    assert image.dtype == np.uint8 and image.shape == (76, 76, 3)
    caption = store.caption_indices(5)[2]
    assert store.caption_image(caption) == 5
    assert store.vocab.decode(store.caption_tokens(caption)) == " ".join(
        w for w in store.caption_text(caption).lower().split()
    )
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.image(5), image) and clone.identity() == store.identity()
    assert store.identity()["vocab_size"] == len(store.vocab)


def test_sample_caption_rule() -> None:
    rng = np.random.default_rng(0)
    short, length = sample_caption(np.array([4, 5, 6]), 5, rng)
    assert list(short) == [4, 5, 6, 0, 0] and length == 3
    tokens = np.arange(1, 31)
    subsets = {tuple(sample_caption(tokens, 18, rng)[0]) for _ in range(20)}
    assert len(subsets) > 1  # a new random subset each draw, not head truncation
    for subset in subsets:
        assert len(subset) == 18 and list(subset) == sorted(subset) and len(set(subset)) == 18


def test_items_shapes_and_ranges(shapes_h5: str) -> None:
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(16, 32, 64), max_words=6)
    item = dataset[3]
    assert [tuple(x.shape) for x in item["images"]] == [(3, 16, 16), (3, 32, 32), (3, 64, 64)]
    assert all(x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 for x in item["images"])
    assert item["tokens"].dtype == torch.int64 and item["tokens"].shape == (6,)
    assert item["length"] == int((item["tokens"] != 0).sum()) and item["index"] == int(dataset.indices[3])
    assert item["caption_index"] in dataset.store.caption_indices(item["index"])
    assert item["class_id"] == int(dataset.store.class_ids[item["index"]])
    # The smaller images are the largest crop rescaled.
    down = torch.nn.functional.interpolate(item["images"][2][None], size=16, mode="bilinear", antialias=True)[0]
    assert (down - item["images"][0]).abs().mean() < 0.02
    assert load_size(256) == 304 and load_size(64) == 76


def test_center_crop_without_augment_and_flip_with(shapes_h5: str) -> None:
    plain = CaptionDataset(shapes_h5, "test", image_sizes=(64,), augment=False)
    image = plain.store.image(int(plain.indices[0]))
    expected = torch.from_numpy(image[6:70, 6:70]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(plain[0]["images"][0], expected)
    augmented = CaptionDataset(shapes_h5, "train", image_sizes=(64,), augment=True)
    crops = set()
    for epoch in range(12):
        augmented.set_epoch(epoch)
        crops.add(augmented[0]["images"][0].numpy().tobytes())
    assert len(crops) > 3


def test_celeba_transform_resizes_straight_to_the_crop(shapes_h5: str) -> None:
    """crop_margin=False (DF-GAN's CelebA transform): the 76 px square store is resized to 64 and cropped whole, so
    augmentation can only flip; with the margin the 64 px crop moves around the 76 px image."""
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(64,), augment=True, crop_margin=False)
    assert dataset.resize_to == 64 and CaptionDataset(shapes_h5, image_sizes=(64,)).resize_to == 76
    stored = torch.from_numpy(dataset.store.image(int(dataset.indices[0]))).permute(2, 0, 1).float()
    whole = F.interpolate(stored[None], size=(64, 64), mode="bilinear", antialias=True, align_corners=False)[0]
    whole = whole.clamp(0, 255) / 127.5 - 1
    for epoch in range(8):  # the whole image or its mirror, nothing else
        dataset.set_epoch(epoch)
        image = dataset[0]["images"][0]
        assert torch.allclose(image, whole, atol=1e-5) or torch.allclose(image, whole.flip(-1), atol=1e-5)
    margin = CaptionDataset(shapes_h5, "train", image_sizes=(64,), augment=True)
    crops = set()
    for epoch in range(8):
        margin.set_epoch(epoch)
        crops.add(margin[0]["images"][0].numpy().tobytes())
    assert len(crops) > 2


def test_resize_when_stored_size_differs(tmp_path) -> None:
    path = tmp_path / "s.h5"
    build_shapes(path, num_images=4, image_size=40, seed=0)
    item = CaptionDataset(path, "train", image_sizes=(48,), augment=False)[0]
    assert item["images"][0].shape == (3, 48, 48)  # 40 px stored -> 57 px -> centre 48


def _collect(dataset, num_workers: int) -> list:
    loader = DataLoader(dataset, batch_size=8, shuffle=False, num_workers=num_workers)
    return [batch for batch in loader]


def test_same_items_for_any_number_of_workers(shapes_h5: str) -> None:
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(32, 64), max_words=4, pair="other", seed=7)
    dataset.set_epoch(3)
    zero, two = _collect(dataset, 0), _collect(dataset, 2)
    for a, b in zip(zero, two, strict=True):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["tokens2"], b["tokens2"])
        assert all(torch.equal(x, y) for x, y in zip(a["images"], b["images"], strict=True))
    dataset.set_epoch(4)
    assert not torch.equal(dataset[0]["images"][1], zero[0]["images"][1][0]) or not torch.equal(
        dataset[0]["tokens"], zero[0]["tokens"][0]
    )


def test_pairs(shapes_h5: str) -> None:
    same = CaptionDataset(shapes_h5, "train", image_sizes=(16,), pair="same")
    other = CaptionDataset(shapes_h5, "train", image_sizes=(16,), pair="other")
    store = same.store
    for position in range(10):
        item = same[position]
        assert item["pair_label"] == 1 and item["length2"] > 0
        texts = {store.vocab.decode(store.caption_tokens(c)) for c in store.caption_indices(item["index"])}
        assert store.vocab.decode(item["tokens2"]) in texts
        item = other[position]
        assert item["pair_label"] == 0
        texts = {store.vocab.decode(store.caption_tokens(c)) for c in store.caption_indices(item["index"])}
        assert store.vocab.decode(item["tokens2"]) not in texts or len(texts) == 1


def test_bad_arguments(shapes_h5: str, tmp_path) -> None:
    with pytest.raises(T2IError, match="pair"):
        CaptionDataset(shapes_h5, pair="both")
    with pytest.raises(T2IError, match="split"):
        CaptionDataset(shapes_h5, split="val")
    with pytest.raises(T2IError, match="no such file"):
        CaptionDataset(tmp_path / "none.h5")


def test_uint8_items_match_float_items(shapes_h5: str, tmp_path) -> None:
    """The training loop's uint8 mode gives the float mode's images once converted: exactly at the crop size
    (no resize, the fast path), within rounding after a resize."""
    from t2itool.data.dataset import to_signed

    sizes = (64, 32)  # shapes_h5 stores 76 px = 64's margin: no resize for the crop
    float_items = CaptionDataset(shapes_h5, image_sizes=sizes, seed=3)
    uint8_items = CaptionDataset(shapes_h5, image_sizes=sizes, seed=3, uint8=True)
    for position in range(6):
        a, b = float_items[position], uint8_items[position]
        assert b["images"][0].dtype == torch.uint8 and b["images"][0].shape == (3, 64, 64)
        torch.testing.assert_close(to_signed(b["images"][0]), a["images"][0], rtol=0, atol=0)
        torch.testing.assert_close(to_signed(b["images"][1]), a["images"][1], rtol=0, atol=0.5 / 127.5 + 1e-6)
        assert torch.equal(a["tokens"], b["tokens"]) and a["caption_index"] == b["caption_index"]
    # A store that needs resizing (40 px for a 64 crop) goes through the float path in both modes.
    other = tmp_path / "small.h5"
    build_shapes(other, num_images=4, image_size=40, seed=0)
    a = CaptionDataset(other, image_sizes=(64,), seed=1)[0]["images"][0]
    b = CaptionDataset(other, image_sizes=(64,), seed=1, uint8=True)[0]["images"][0]
    torch.testing.assert_close(to_signed(b), a, rtol=0, atol=0.5 / 127.5 + 1e-6)


def test_augmented_crop_is_a_window_of_the_stored_image_maybe_mirrored(shapes_h5: str) -> None:
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(64,), augment=True, uint8=True)
    seen_flip = seen_plain = False
    for position in range(8):
        got = dataset[position]["images"][0].permute(1, 2, 0).numpy()
        stored = dataset.store.image(int(dataset.indices[position]))
        windows = [stored[t : t + 64, s : s + 64] for t in range(13) for s in range(13)]
        plain = any(np.array_equal(got, w) for w in windows)
        mirrored = any(np.array_equal(got, w[:, ::-1]) for w in windows)
        assert plain or mirrored
        seen_plain, seen_flip = seen_plain or plain, seen_flip or (mirrored and not plain)
    assert seen_plain and seen_flip
