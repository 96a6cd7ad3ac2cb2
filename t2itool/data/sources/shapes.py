"""The built-in captioned dataset: coloured circles, squares and triangles on plain backgrounds, drawn with PIL.

Deterministic from the seed; five phrasings per image; class id = colour index * len(SHAPES) + shape index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from t2itool.data.prepare import PrepOptions, PrepSummary, SourceItem, run_prep

# Well-separated saturated colours (the foreground) and neutral tones (the background); shapes_agreement uses both.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 215, 30),
    "purple": (135, 50, 190),
    "orange": (250, 135, 20),
    "cyan": (30, 200, 215),
    "pink": (245, 120, 195),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (248, 248, 248),
    "light grey": (190, 190, 190),
    "dark grey": (75, 75, 75),
    "black": (15, 15, 15),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
TEST_FRACTION = 0.1
CAPTIONS_PER_IMAGE = 5

_TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape}",
    "there is a {colour} {shape} near the {place}",
    "this picture shows a {size} {shape} that is {colour}",
    "a {shape} coloured {colour} against a plain {background} backdrop",
    "one {size} {colour} {shape} in the {place} of the image",
    "the image contains a single {colour} {shape}",
    "{colour} {shape} drawn on {background}",
)


@dataclass(frozen=True)
class ShapeSpec:
    colour: int
    shape: int
    size: int  # 0 small, 1 large
    background: int
    center: tuple[float, float]  # fractions of the image side


def draw_shape(spec: ShapeSpec, image_size: int) -> np.ndarray:
    """uint8 (S, S, 3) drawing of `spec` (no anti-aliasing: colours stay exactly the palette's)."""
    from PIL import Image, ImageDraw

    background = tuple(BACKGROUNDS.values())[spec.background]
    colour = PALETTE[COLOURS[spec.colour]]
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    half = image_size * (0.16 if spec.size == 0 else 0.3)
    cx, cy = spec.center[0] * image_size, spec.center[1] * image_size
    box = [round(cx - half), round(cy - half), round(cx + half), round(cy + half)]
    name = SHAPES[spec.shape]
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=colour)
    return np.asarray(image, dtype=np.uint8)


def _place(center: tuple[float, float]) -> str:
    vertical = "top" if center[1] < 0.4 else "bottom" if center[1] > 0.6 else "middle"
    horizontal = "left" if center[0] < 0.4 else "right" if center[0] > 0.6 else "centre"
    if vertical == "middle" and horizontal == "centre":
        return "centre"
    if vertical == "middle":
        return f"{horizontal} side"
    return f"{vertical} {horizontal}" if horizontal != "centre" else vertical


def shape_specs(num_images: int, seed: int) -> list[ShapeSpec]:
    rng = np.random.default_rng([seed, 0x5EA9E5])
    specs = []
    for _ in range(num_images):
        size = int(rng.integers(len(SIZES)))
        margin = 0.2 if size == 0 else 0.32
        center = (float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin)))
        specs.append(
            ShapeSpec(
                colour=int(rng.integers(len(COLOURS))),
                shape=int(rng.integers(len(SHAPES))),
                size=size,
                background=int(rng.integers(len(BACKGROUNDS))),
                center=(round(center[0], 4), round(center[1], 4)),
            )
        )
    return specs


def shape_captions(spec: ShapeSpec, rng: np.random.Generator) -> list[str]:
    words = {
        "colour": COLOURS[spec.colour],
        "shape": SHAPES[spec.shape],
        "size": SIZES[spec.size],
        "background": tuple(BACKGROUNDS)[spec.background],
        "place": _place(spec.center),
    }
    chosen = rng.permutation(len(_TEMPLATES))[:CAPTIONS_PER_IMAGE]
    return [_TEMPLATES[int(index)].format(**words) for index in chosen]


def shapes_items(num_images: int, image_size: int, seed: int) -> list[SourceItem]:
    specs = shape_specs(num_images, seed)
    rng = np.random.default_rng([seed, 0xCA9])
    test = (
        set(rng.permutation(num_images)[: max(1, round(num_images * TEST_FRACTION))].tolist())
        if num_images > 1
        else set()
    )
    return [
        SourceItem(
            key=f"shapes_{index:06d}",
            captions=shape_captions(spec, rng),
            class_id=spec.colour * len(SHAPES) + spec.shape,
            split="test" if index in test else "train",
            load=draw_shape,
            load_args=(spec, image_size),
        )
        for index, spec in enumerate(specs)
    ]


def build_shapes(
    out: str | os.PathLike,
    num_images: int = 2048,
    image_size: int = 304,
    seed: int = 0,
    workers: int = 0,  # drawing is cheaper than shipping pixels between processes: no workers is fastest
    image_format: str = "raw",
    show_progress: bool = False,
    caption_features: str | None = None,  # SPEC of precomputed caption features (see t2itool.data.features)
    caption_features_dtype: str = "float32",
) -> PrepSummary:
    """Draw `num_images` captioned shapes and write them to `out` (same bytes for any `workers`)."""
    from t2itool.errors import T2IError

    if num_images < 1:
        raise T2IError(f"--num-images {num_images}: must be at least 1")
    options = PrepOptions(
        image_size=image_size,
        image_format=image_format,
        workers=workers,
        show_progress=show_progress,
        caption_features=caption_features,
        caption_features_dtype=caption_features_dtype,
    )
    return run_prep(
        shapes_items(num_images, image_size, seed),
        out,
        options,
        source="shapes",
        max_captions=CAPTIONS_PER_IMAGE,
        extra_attrs={"seed": seed, "palette": ",".join(COLOURS)},
    )
