"""Noise for generators: named streams, one random generator per (key, stream), one truncated-normal sampler.

Every random input of a generator (DF-GAN's z, the conditioning-augmentation eps of StackGAN and AttnGAN, ...) is a
named stream declared by the model. A row of a stream is drawn from its own `torch.Generator`, seeded from a key that
names the image (training: run seed, step and position in the global batch; sampling: caption and seed; grids: row
and column), so an image depends only on (weights, caption, key, truncation), never on batch size, rank or device.
Training, sample grids, `sample` and `score --generate` all draw through `draw_rows`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

TRUNCATION_BOUND = 2.0  # DF-GAN samples truncnorm(-2, 2) and scales it (tobran/DF-GAN code/lib/utils.py)


@dataclass(frozen=True)
class NoiseStream:
    """One random input of a generator.

    name:      stream name, also the key of the noise dict the generator receives ("z", "ca", ...).
    dim:       values per image.
    truncated: the sampling truncation applies to it (DF-GAN's z); False for reparameterisation noise such as
               conditioning augmentation, which is always drawn from N(0, I).
    """

    name: str
    dim: int
    truncated: bool = True

    def __post_init__(self) -> None:
        if not self.name or self.dim < 1:
            raise ValueError(f"noise stream {self.name!r}: needs a name and a positive size, got {self.dim}")


def row_seed(*key: Hashable) -> int:
    """A 63-bit seed from a key tuple (blake2b of its text): no two keys share a stream by arithmetic."""
    text = ":".join(str(part) for part in key)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def draw(key: Sequence[Hashable], dim: int, truncation: float | None = None) -> torch.Tensor:
    """One row (dim,) on CPU: N(0, I), or with truncation t a normal truncated to [-2, 2], times t."""
    generator = torch.Generator().manual_seed(row_seed(*key))
    if truncation is None:
        return torch.randn(dim, generator=generator)
    bound = TRUNCATION_BOUND
    row = torch.nn.init.trunc_normal_(torch.empty(dim), 0.0, 1.0, -bound, bound, generator=generator)
    return row * float(truncation)


def draw_rows(
    keys: Sequence[Sequence[Hashable]],
    streams: Sequence[NoiseStream],
    truncation: float | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """{stream name: (len(keys), dim)}: row i of stream s drawn from key (*keys[i], s.name); the truncation applies
    only to streams marked `truncated`."""
    result = {}
    for stream in streams:
        trunc = truncation if stream.truncated else None
        rows = [draw((*key, stream.name), stream.dim, trunc) for key in keys]
        result[stream.name] = torch.stack(rows).to(device) if rows else torch.empty(0, stream.dim, device=device)
    return result
