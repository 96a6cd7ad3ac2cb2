"""Does a generated shapes image show what its caption asks for? Colour (and shape) agreement against chance.

The foreground is every pixel far from the border colour; its colour is the nearest palette colour by majority vote;
its shape comes from how much of its bounding box it fills (circle ~0.785, square ~1, triangle ~0.5).
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


def measure(image: np.ndarray) -> tuple[str | None, str | None]:
    """(dominant foreground palette colour, shape guess) of one (H, W, 3) image in 0..255."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = np.median(border, axis=0)
    mask = np.linalg.norm(image - background, axis=-1) > BACKGROUND_DISTANCE
    if mask.sum() < max(4, mask.size // 400):
        return None, None
    pixels = image[mask]
    nearest = np.argmin(((pixels[:, None, :] - _PALETTE[None]) ** 2).sum(-1), axis=1)
    colour = COLOURS[int(np.bincount(nearest, minlength=len(COLOURS)).argmax())]
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = mask.sum() / box
    shape = min(_FILL, key=lambda name: abs(_FILL[name] - fill))
    return colour, shape


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
