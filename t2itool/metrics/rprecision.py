"""R-precision of a samples folder: the images, the data file's caption index of each (from samples.jsonl) and the
DAMSM checkpoint, handed to `t2itool.encoders.r_precision`, which implements the protocol
(MinfengZhu/DM-GAN code/trainer.py sampling, code/datasets.py get_mis_caption).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from t2itool.errors import T2IError


class SignedImages(Dataset):
    """uint8 (3, H, W) samples as float (3, H, W) in [-1, 1], the DAMSM image encoder's input range."""

    def __init__(self, samples: Dataset) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.samples[index].float() / 127.5 - 1.0


def caption_indices_of(meta: list[dict[str, Any]], where: str) -> list[int]:
    indices = [record.get("caption_index") for record in meta]
    if not indices or any(index is None for index in indices):
        raise T2IError(
            f"{where}: R-precision needs the data file's caption index of every image, which samples.jsonl records "
            "only for `t2itool sample --split test --data FILE` or `t2itool score RUN --generate`"
        )
    return [int(index) for index in indices]


def r_precision_of_samples(
    samples: Any, meta: list[dict[str, Any]], config: Any, device: torch.device
) -> tuple[float, float | None, dict[str, Any]]:
    """(mean, std, extra record fields) from `t2itool.encoders.r_precision`."""
    from t2itool.data.store import Store
    from t2itool.encoders import load_damsm, r_precision

    indices = caption_indices_of(meta, f"{samples.root}/samples.jsonl")
    store = Store(config.data)
    damsm = load_damsm(config.damsm, store=store, device=device)
    result = r_precision(damsm, SignedImages(samples), indices, store, device=device)
    extra = {"damsm": str(config.damsm), "damsm_sha256": damsm.sha256, "groups": result.num_groups}
    return result.mean, result.std, extra
