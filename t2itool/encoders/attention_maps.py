"""Word-region attention maps of the DAMSM encoders, drawn over the images: what AttnGAN's pretrain_DAMSM.py writes
during pretraining (miscc/utils.py build_super_images), here for a fixed set of test captions so that successive
images show the same captions as the encoders learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from t2itool.fileio import atomic_path

TILE = 128  # pixels per image and per word map
LABEL = 14  # pixels of the word strip above each tile


def word_attention(regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, gamma1: float) -> torch.Tensor:
    """Attention of each word of caption i over the regions of image i (the DAMSM word loss, paper Eq. 8-9, for the
    matching pairs only): (B, T, h, w), each valid word's map summing to 1, padded words all zero."""
    batch, dim, max_length = words.shape
    if regions.shape[:2] != (batch, dim):
        raise ValueError(f"regions {tuple(regions.shape)} do not pair with words {tuple(words.shape)}")
    height, width = regions.shape[2:]
    flat = regions.reshape(batch, dim, -1).float()  # (B, D, R)
    valid = torch.arange(max_length, device=words.device)[None, :] < lengths.to(words.device)[:, None]  # (B, T)
    similarity = torch.einsum("bdt,bdr->btr", words.float(), flat)
    similarity = similarity.masked_fill(~valid[:, :, None], float("-inf")).softmax(dim=1)  # over words (Eq. 8)
    attention = (gamma1 * similarity).softmax(dim=2)  # over regions (Eq. 9)
    attention = attention.masked_fill(~valid[:, :, None], 0.0)
    return attention.reshape(batch, max_length, height, width)


def _tile(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (TILE, TILE, 3) uint8."""
    resized = F.interpolate(image[None].float(), size=(TILE, TILE), mode="bilinear", align_corners=False)[0]
    return ((resized.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _overlay(base: np.ndarray, attention: torch.Tensor) -> np.ndarray:
    """The image darkened where the word does not attend: each map scaled to its own maximum, upsampled."""
    heat = F.interpolate(attention[None, None].float(), size=(TILE, TILE), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat / heat.max().clamp_min(1e-12)).numpy()[:, :, None]
    return (base * (0.25 + 0.75 * heat)).round().astype(np.uint8)


def render_attention(
    images: torch.Tensor, attention: torch.Tensor, captions: list[list[str]], path: str | Path
) -> Path:
    """One row per caption: the image, then each of its words' attention maps with the word above it; a PNG."""
    rows, max_words = len(captions), max((len(words) for words in captions), default=0)
    canvas = Image.new("RGB", ((max_words + 1) * TILE, rows * (TILE + LABEL)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, words in enumerate(captions):
        top = row * (TILE + LABEL)
        base = _tile(images[row])
        canvas.paste(Image.fromarray(base), (0, top + LABEL))
        for column, word in enumerate(words):
            left = (column + 1) * TILE
            canvas.paste(Image.fromarray(_overlay(base, attention[row, column])), (left, top + LABEL))
            draw.text((left + 2, top + 1), word[:18], fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return path
