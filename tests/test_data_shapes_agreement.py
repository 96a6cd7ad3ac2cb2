"""The shapes agreement metric: ~1.0 on real shapes images, also with noise, stray pixels, a border frame or blur;
~chance with shuffled captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2itool.data.dataset import CaptionDataset
from t2itool.data.sources.shapes import COLOURS, SHAPES, draw_shape, shape_specs
from t2itool.data.store import Store
from t2itool.metrics.shapes_agreement import caption_attributes, largest_region, shapes_agreement


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


def _drawn(count: int, image_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """`count` shapes images drawn at the demo's sample size, with a caption naming their colour and shape."""
    specs = shape_specs(count, seed=1)
    images = np.stack([draw_shape(spec, image_size) for spec in specs]).astype(np.float32)
    return images, [f"a {COLOURS[spec.colour]} {SHAPES[spec.shape]}" for spec in specs]


def _all_foreground_shape(image: np.ndarray) -> str:
    """The earlier measurement, for contrast: background from the one-pixel border, bounding box of all foreground."""
    background = np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]), axis=0)
    rows, cols = np.nonzero(np.linalg.norm(image - background, axis=-1) > 60)
    fill = len(rows) / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    return min({"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}.items(), key=lambda kv: abs(kv[1] - fill))[0]


def _noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(images + rng.normal(0, 25, images.shape), 0, 255)


def _stray_pixels(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()  # 2% of the pixels of each image set to random colours
    for image in out:
        count = image.shape[0] * image.shape[1] // 50
        image[rng.integers(0, image.shape[0], count), rng.integers(0, image.shape[1], count)] = rng.integers(
            0, 256, (count, 3)
        )
    return out


def _border_lines(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()  # a one-pixel line of a random colour along each side, as convolution padding draws
    for image in out:
        for line in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
            image[line] = rng.integers(0, 256, 3)
    return out


def _blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.stack(
        [np.asarray(Image.fromarray(i.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0))) for i in images]
    ).astype(np.float32)


def test_largest_region_is_four_connected() -> None:
    mask = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    expected = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=bool)
    assert (largest_region(mask) == expected).all()
    assert not largest_region(np.zeros((4, 4), dtype=bool)).any()


@pytest.mark.parametrize("perturb", [None, _noise, _stray_pixels, _border_lines, _blur])
def test_shape_of_perturbed_real_images(perturb) -> None:
    images, captions = _drawn(240)
    rng = np.random.default_rng(0)
    if perturb is not None:
        images = perturb(images, rng)
    result = shapes_agreement(images, captions)
    # Measured (240 images): clean 100%; noise 95.4%, stray pixels 100%, border lines 95.8%, blur 87.5% shape
    # (all foreground pixels in the bounding box, border-pixel background: 33%, 33%, 32%, 91%).
    assert result.colour_agreement >= 0.9 and result.shape_agreement >= (0.97 if perturb is None else 0.85), result
    if perturb in (_noise, _stray_pixels, _border_lines):  # where measuring all foreground pixels fails
        wanted = [caption_attributes(text)[1] for text in captions]
        naive = np.mean([_all_foreground_shape(image) == shape for image, shape in zip(images, wanted, strict=True)])
        assert naive < 0.5, naive
    # Other images' captions: the robust measurement does not find the shapes they name.
    shuffled = [captions[i] for i in rng.permutation(len(captions))]
    low = shapes_agreement(images, shuffled)
    assert abs(low.shape_agreement - low.shape_chance) < 0.1 and low.colour_agreement < low.colour_chance + 0.1, low
