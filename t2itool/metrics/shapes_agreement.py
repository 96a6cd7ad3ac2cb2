"""Does a generated shapes image show what its caption asks for? Colour (and shape) agreement against chance.

The background colour is the per-channel median of the border ring (the outer eighth of each side, at least one
pixel); the foreground is every pixel farther than BACKGROUND_DISTANCE from it; its colour is the nearest palette
colour by majority vote. The object is the largest 4-connected region of foreground pixels of that colour, its holes
filled, and its shape comes from how much of its bounding box it fills (circle ~0.785, square ~1, triangle ~0.5).

The ring and the object region make the shape robust to what is not the object: a one-pixel border (a striped frame
that convolution padding draws, or a line of any colour) no longer becomes the background estimate, and stray
pixels, noise or a frame of other colours no longer stretch the bounding box to the whole image. On real shapes
images with such perturbations the shape agreement stays above 90% where measuring all foreground pixels falls to
chance; with shuffled captions it stays at chance (tests/test_data_shapes_agreement.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from t2itool.data.sources.shapes import COLOURS, PALETTE, SHAPES
from t2itool.data.text import tokenize

_PALETTE = np.array([PALETTE[name] for name in COLOURS], dtype=np.float32)
_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
BACKGROUND_DISTANCE = 60.0  # RGB distance from the border colour above which a pixel is foreground
BORDER_FRACTION = 8  # the background is estimated on the outer 1/8 of each side (shapes keep a margin: data/sources)


@dataclass
class AgreementResult:
    colour_agreement: float
    colour_chance: float
    shape_agreement: float
    shape_chance: float
    num_colour: int  # captions naming exactly one palette colour
    num_shape: int
    predicted_colours: list[str | None]
    predicted_shapes: list[str | None]

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("predicted")}


def caption_attributes(caption: str) -> tuple[str | None, str | None]:
    """(colour word, shape word) of a caption; None where it names none or several."""
    tokens = set(tokenize(caption))
    colours = [name for name in COLOURS if name in tokens]
    shapes = [name for name in SHAPES if name in tokens]
    return (colours[0] if len(colours) == 1 else None), (shapes[0] if len(shapes) == 1 else None)


def _to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] / uint8, or (N, H, W, 3) uint8 -> (N, H, W, 3) float32 in 0..255."""
    array = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    array = array.astype(np.float32)
    if array.min() < 0 or array.max() <= 1.0:  # [-1, 1] tensors
        array = (array.clip(-1, 1) + 1) * 127.5
    return array


def _regions(mask: np.ndarray) -> np.ndarray:
    """Labels (H, W) of the 4-connected regions of a boolean mask (0 outside it), by joining the runs of each row
    with the overlapping runs of the row above (union-find over runs)."""
    runs: list[tuple[int, int, int]] = []  # (row, first column, last column + 1)
    parent: list[int] = []

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    previous: list[int] = []  # run indices of the row above
    for row in range(mask.shape[0]):
        edges = np.diff(np.concatenate(([0], mask[row].astype(np.int8), [0])))
        current = []
        for start, end in zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True):
            index = len(runs)
            runs.append((row, start, end))
            parent.append(index)
            current.append(index)
            for above in previous:
                if runs[above][1] < end and start < runs[above][2]:  # the runs share a column
                    parent[root(above)] = root(index)
        previous = current
    labels = np.zeros(mask.shape, dtype=np.int64)
    for index, (row, start, end) in enumerate(runs):
        labels[row, start:end] = root(index) + 1
    return labels


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean (H, W) mask (empty if the mask is)."""
    labels = _regions(mask)
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return labels == np.bincount(labels[mask]).argmax()


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region of its complement that does not reach the image border added (a drawn shape has
    no holes; noise inside it must not lower its fill)."""
    outside = np.pad(~mask, 1, constant_values=True)  # the padding joins every border-reaching region
    labels = _regions(outside)
    return ~(labels == labels[0, 0])[1:-1, 1:-1]


def background_colour(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the border ring, 1/BORDER_FRACTION of the side wide (at least one pixel)."""
    ring = max(1, min(image.shape[:2]) // BORDER_FRACTION)
    inside = np.zeros(image.shape[:2], dtype=bool)
    inside[ring:-ring, ring:-ring] = True
    return np.median(image[~inside], axis=0)


def measure(image: np.ndarray) -> tuple[str | None, str | None]:
    """(dominant foreground palette colour, shape guess) of one (H, W, 3) image in 0..255."""
    mask = np.linalg.norm(image - background_colour(image), axis=-1) > BACKGROUND_DISTANCE
    if mask.sum() < max(4, mask.size // 400):
        return None, None
    nearest = np.full(mask.shape, -1)
    nearest[mask] = np.argmin(((image[mask][:, None, :] - _PALETTE[None]) ** 2).sum(-1), axis=1)
    dominant = int(np.bincount(nearest[mask], minlength=len(COLOURS)).argmax())
    region = fill_holes(largest_region(nearest == dominant))
    rows, cols = np.nonzero(region)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = region.sum() / box
    shape = min(_FILL, key=lambda name: abs(_FILL[name] - fill))
    return COLOURS[dominant], shape


def _chance(words: list[str]) -> float:
    """Expected agreement of captions matched to images at random: sum of squared word frequencies (1/K if uniform)."""
    counts = np.array(list(Counter(words).values()), dtype=np.float64)
    return float(((counts / counts.sum()) ** 2).sum())


def shapes_agreement(images: torch.Tensor | np.ndarray, captions: Sequence[str]) -> AgreementResult:
    """Agreement of each image's measured colour/shape with its caption's words, and the chance level."""
    array = _to_uint8(images)
    if len(array) != len(captions):
        raise ValueError(f"{len(array)} images but {len(captions)} captions")
    predicted = [measure(image) for image in array]
    wanted = [caption_attributes(text) for text in captions]
    colour_hits = [p[0] == w[0] for p, w in zip(predicted, wanted, strict=True) if w[0] is not None]
    shape_hits = [p[1] == w[1] for p, w in zip(predicted, wanted, strict=True) if w[1] is not None]
    colour_words = [w[0] for w in wanted if w[0] is not None]
    shape_words = [w[1] for w in wanted if w[1] is not None]
    return AgreementResult(
        colour_agreement=float(np.mean(colour_hits)) if colour_hits else float("nan"),
        colour_chance=_chance(colour_words) if colour_words else 1 / len(COLOURS),
        shape_agreement=float(np.mean(shape_hits)) if shape_hits else float("nan"),
        shape_chance=_chance(shape_words) if shape_words else 1 / len(SHAPES),
        num_colour=len(colour_hits),
        num_shape=len(shape_hits),
        predicted_colours=[p[0] for p in predicted],
        predicted_shapes=[p[1] for p in predicted],
    )
