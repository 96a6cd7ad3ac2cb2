"""Images/s of t2itool's CaptionDataset against an AttnGAN/DF-GAN-style JPEG dataset on the same images, and prep speed.

Usage: python benchmarks/bench_data.py [--images 400] [--size 256] [--workers 0 2] [--batch 32] [--epochs 3] [--square]

The store keeps each image's aspect ratio (as the baseline's Resize does); --square stores centre squares instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from t2itool.data.dataset import CaptionDataset, load_size, to_signed
from t2itool.data.sources.folder import build_folder


class JpegBaseline(Dataset):
    """What the reference datasets do per item: open the JPEG with PIL, resize, random crop, flip, to tensor."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files = files
        self.transform = transforms.Compose(
            [
                transforms.Resize(load_size(size)),
                transforms.RandomCrop(size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))


def make_images(folder: Path, count: int) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields plus mild noise) of CUB-like sizes, with one caption file each."""
    rng = np.random.default_rng(0)
    files = []
    for index in range(count):
        width, height = int(rng.integers(400, 500)), int(rng.integers(300, 375))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([np.sin(x / rng.uniform(20, 80) + c) * np.cos(y / rng.uniform(20, 80)) for c in range(3)], -1)
        pixels = (base * 90 + 128 + rng.normal(0, 8, size=base.shape)).clip(0, 255).astype(np.uint8)
        path = folder / f"img{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        path.with_suffix(".txt").write_text(f"a photo number {index} of a small bird\nanother caption\n")
        files.append(path)
    return files


def throughput(dataset: Dataset, workers: int, batch: int, epochs: int = 1, convert: bool = True) -> float:
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    count = 0
    for _ in iter(loader):  # warm-up pass: page cache and worker start
        break
    start = time.perf_counter()
    for _ in range(epochs):
        for items in loader:
            images = items["images"][0] if isinstance(items, dict) else items
            if convert:  # what the training loop does after moving a batch to its device (on the GPU when there is one)
                images = to_signed(images)
            count += images.shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="number of JPEGs to generate")
    parser.add_argument("--size", type=int, default=256, help="training crop size")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="passes timed per figure (one pass of 400 is ~0.3 s)")
    parser.add_argument("--square", action="store_true", help="store centre squares (prep --square)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        files = make_images(folder, args.images)
        out = Path(tmp) / "bench.h5"
        start = time.perf_counter()
        summary = build_folder(
            folder, out, image_size=load_size(args.size), workers=2, show_progress=False, square=args.square
        )
        prep_seconds = time.perf_counter() - start
        layout = "centre squares" if args.square else "shorter side"
        print(f"prep: {summary.images} JPEGs -> {load_size(args.size)} px ({layout}) raw HDF5 in {prep_seconds:.1f} s "
              f"({summary.images / prep_seconds:.0f} images/s, 2 workers)")  # fmt: skip
        ours = CaptionDataset(out, "all", image_sizes=(args.size,), augment=True)
        ours_uint8 = CaptionDataset(out, "all", image_sizes=(args.size,), augment=True, uint8=True)
        baseline = JpegBaseline(files, args.size)
        print(
            f"{args.size} px crops, batch {args.batch}. uint8 = the training loop's mode; 'delivered' is what reaches"
        )
        print("the device (converted to [-1, 1] there: on the GPU in GPU training); '+cpu' converts in the consumer.")
        header = [
            "workers",
            "JPEG baseline",
            "t2itool float",
            "ratio",
            "uint8 delivered",
            "ratio",
            "uint8+cpu",
            "ratio",
        ]
        print("  ".join(f"{h:>{max(len(h), 6)}}" for h in header) + "   (images/s)")
        for workers in args.workers:
            base_rate = throughput(baseline, workers, args.batch, args.epochs)
            float_rate = throughput(ours, workers, args.batch, args.epochs)
            delivered_rate = throughput(ours_uint8, workers, args.batch, args.epochs, convert=False)
            uint8_rate = throughput(ours_uint8, workers, args.batch, args.epochs)
            values = [f"{workers}", f"{base_rate:.0f}", f"{float_rate:.0f}", f"{float_rate / base_rate:.1f}x"]
            values += [f"{delivered_rate:.0f}", f"{delivered_rate / base_rate:.1f}x"]
            values += [f"{uint8_rate:.0f}", f"{uint8_rate / base_rate:.1f}x"]
            print("  ".join(f"{v:>{max(len(h), 6)}}" for v, h in zip(values, header, strict=True)))


if __name__ == "__main__":
    main()
