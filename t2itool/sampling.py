"""The sampler: captions -> images from a snapshot. Each noise stream of an image comes from its own generator keyed
by (caption, seed, stream) (t2itool/noise.py), so an image depends only on (snapshot, caption, seed, truncation), not
on batch size or device count. Writes PNGs, samples.jsonl (last), a grid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2itool import cancel
from t2itool.data.dataset import sample_caption
from t2itool.data.text import Vocabulary, tokenize
from t2itool.errors import T2IError
from t2itool.fileio import staged_folder
from t2itool.noise import draw_rows, row_seed

# Passes over the test images per dataset (tobran/DF-GAN code/cfg/{bird,coco}.yml sample_times): the data
# file's source names the dataset; others get one pass.
PROTOCOL_PASSES = {"cub": 10, "coco": 1}


@dataclass
class Prompt:
    """One caption to sample. `key` keys the noise generators and the file names (the data file's caption index for
    `--split`, the position in the list for free text); `caption_index` is set only for data-file captions."""

    key: int
    text: str
    tokens: list[str]
    ids: list[int]
    missing: list[str]
    caption_index: int | None = None


@dataclass
class Job:
    prompt: Prompt
    seed: int


@dataclass
class SampleResult:
    out_dir: Path
    records: list[dict[str, Any]]
    missing_words: dict[str, list[str]] = field(default_factory=dict)  # caption text -> words not in the vocabulary
    grid: Path | None = None


def prompts_from_texts(texts: list[str], vocab: Vocabulary) -> list[Prompt]:
    """Free-text captions tokenised with AttnGAN's rules; unknown words are kept in `missing`, never silently lost."""
    prompts = []
    for key, text in enumerate(texts):
        tokens = tokenize(text)
        ids, missing = vocab.encode(tokens)
        if not ids:
            raise T2IError(f"caption {text!r}: none of its words are in the snapshot's vocabulary")
        prompts.append(Prompt(key, text, tokens, ids, missing))
    return prompts


def read_captions_file(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"--captions {path}: no such file (one caption a line)")
    data = path.read_bytes()
    if b"\x00" in data:
        raise T2IError(f"--captions {path}: holds NUL bytes, as UTF-16 text does; save it as UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise T2IError(
            f"--captions {path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise T2IError(f"--captions {path}: no captions in the file")
    return texts


def _check_vocab(store: Any, vocab_sha256: str) -> None:
    if store.vocab_sha256 != vocab_sha256:
        raise T2IError(
            f"--data {store.path}: its vocabulary ({len(store.vocab)} words, sha256 {store.vocab_sha256[:12]}) differs "
            f"from the snapshot's (sha256 {vocab_sha256[:12]}); use the data file the model was trained on"
        )


def prompts_from_split(store: Any, split: str, vocab_sha256: str) -> list[Prompt]:
    """Every caption of the data file's `split` images, in order; keys are the data file's caption indices."""
    _check_vocab(store, vocab_sha256)
    prompts = []
    for image_index in store.split_indices(split):
        for caption_index in store.caption_indices(int(image_index)):
            prompts.append(_store_prompt(store, caption_index))
    if not prompts:
        raise T2IError(f"--data {store.path}: split {split!r} has no captions")
    return prompts


def _store_prompt(store: Any, caption_index: int) -> Prompt:
    ids = [int(i) for i in store.caption_tokens(caption_index)]
    words = store.vocab.words
    return Prompt(caption_index, store.caption_text(caption_index), [words[i] for i in ids], ids, [], caption_index)


def default_passes(store: Any) -> int:
    """Evaluation passes over the test split for the data file's dataset (CUB 10, COCO 1, as DF-GAN's configs)."""
    return PROTOCOL_PASSES.get(str(getattr(store, "source", "")).lower(), 1)


def protocol_jobs(store: Any, split: str, vocab_sha256: str, num_images: int, seed: int = 0) -> list[Job]:
    """The evaluation protocol: passes over the split's images, one random caption per image per pass (drawn with
    `seed`), pass p sampled with seed `seed + p`, until `num_images` jobs (CUB: 10 passes over the test set)."""
    _check_vocab(store, vocab_sha256)
    images = store.split_indices(split)
    if len(images) == 0:
        raise T2IError(f"--data {store.path}: split {split!r} has no images")
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []
    pass_index = 0
    while len(jobs) < num_images:
        for image_index in images:
            captions = store.caption_indices(int(image_index))
            caption_index = captions[int(rng.integers(len(captions)))]
            jobs.append(Job(_store_prompt(store, caption_index), seed + pass_index))
            if len(jobs) == num_images:
                break
        pass_index += 1
    return jobs


def jobs_for(prompts: list[Prompt], per_caption: int, seed: int) -> list[Job]:
    if per_caption < 1:
        raise T2IError(f"--per-caption {per_caption}: must be at least 1")
    return [Job(prompt, seed + k) for prompt in prompts for k in range(per_caption)]


def noise_keys(jobs: list[Job]) -> list[tuple]:
    """The noise key of each job's image: (caption key, seed); every stream draws from (key..., stream name)."""
    return [("sample", job.prompt.key, job.seed) for job in jobs]


def to_uint8(images: torch.Tensor, rounding: bool = False) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3): (x + 1) * 127.5 truncated towards zero, as the official code
    saves images (tobran/DF-GAN code/lib/utils.py save_img, `astype(np.uint8)`); `rounding=True` rounds to the
    nearest level instead (on average half a level brighter)."""
    assert images.dim() == 4 and images.shape[1] == 3, tuple(images.shape)
    scaled = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    scaled = scaled.round() if rounding else scaled.floor()  # floor == truncation on [0, 255]
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def caption_rows(jobs: list[Job], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, max_words) and lengths (B,) of the jobs' captions. A caption longer than `max_words` keeps a
    random in-order subset of its words, as in training (AttnGAN's get_caption), drawn from (caption key, seed)."""
    rows, lengths = [], []
    for job in jobs:
        rng = np.random.default_rng(row_seed("words", job.prompt.key, job.seed))
        tokens, length = sample_caption(np.asarray(job.prompt.ids, dtype=np.int64), max_words, rng)
        rows.append(tokens)
        lengths.append(length)
    return torch.from_numpy(np.stack(rows)), torch.tensor(lengths, dtype=torch.int64)


def _map_strip(maps: list[torch.Tensor], row: int, size: int) -> np.ndarray:
    """One image's maps of every block, each min-max scaled and resized (nearest) to `size`, side by side."""
    tiles = []
    for block in maps:
        tile = block[row].detach().float().cpu()
        tile = tile.mean(0, keepdim=True) if tile.dim() == 3 else tile.unsqueeze(0)
        tile = (tile - tile.min()) / (tile.max() - tile.min()).clamp_min(1e-8)
        tile = torch.nn.functional.interpolate(tile.unsqueeze(0), size=(size, size), mode="nearest")[0, 0]
        tiles.append((tile * 255).round().to(torch.uint8).numpy())
    return np.concatenate(tiles, axis=1)


def _labelled(tile: np.ndarray, label: str, height: int = 14) -> np.ndarray:
    """`tile` (H, W, 3) uint8 above a white strip with `label` in black (PIL's default font, clipped to the width)."""
    from PIL import ImageDraw

    strip = Image.new("RGB", (tile.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), label, fill=(0, 0, 0))
    return np.concatenate([tile, np.asarray(strip)], axis=0)


def _resize_tile(array: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(C, h, w) float -> (C, size, size)."""
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(array[None], size=(size, size), mode=mode, **kwargs)[0]


def attention_figure(images: list[torch.Tensor], attention: list[torch.Tensor], words: list[str]) -> np.ndarray:
    """AttnGAN's figure for one image (Xu et al., CVPR 2018, Fig. 2 / code/miscc/utils.py build_super_images):
    row 1 the images of every stage (smallest first, each (3, h, w) in [-1, 1]); then one row per attention stage
    ((T, h, w) word attention): that stage's output image, then one map per caption word over it, the word below.
    Each map is scaled by its own maximum and shown as the image darkened where the word is not attended."""
    tile = max(64, int(images[-1].shape[-1]))
    pictures = [_resize_tile(image.detach().float().cpu().clamp(-1, 1).add(1).mul(0.5), tile, "nearest") for image
                in images]  # fmt: skip

    def to_uint8(picture: torch.Tensor) -> np.ndarray:
        return (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    rows = [[_labelled(to_uint8(p), f"{int(im.shape[-1])} px") for p, im in zip(pictures, images, strict=True)]]
    for stage, maps in enumerate(attention):
        base = pictures[min(stage + 1, len(pictures) - 1)]  # the image this stage's attention helped produce
        row = [_labelled(to_uint8(base), f"attn {int(maps.shape[-1])} px")]
        for index, word in enumerate(words[: maps.shape[0]]):
            weights = maps[index].detach().float().cpu()
            weights = _resize_tile((weights / weights.max().clamp_min(1e-8))[None], tile, "bilinear")
            row.append(_labelled(to_uint8(base * (0.2 + 0.8 * weights.clamp(0, 1))), word))
        rows.append(row)
    width = max(len(row) for row in rows)
    blank = np.full_like(rows[0][0], 255)
    return np.concatenate([np.concatenate(row + [blank] * (width - len(row)), axis=1) for row in rows], axis=0)


def _grid(arrays: list[np.ndarray], columns: int = 8) -> np.ndarray:
    count = len(arrays)
    columns = min(columns, count)
    rows = (count + columns - 1) // columns
    height, width = arrays[0].shape[:2]
    canvas = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, array in enumerate(arrays):
        r, c = divmod(index, columns)
        canvas[r * height : (r + 1) * height, c * width : (c + 1) * width] = array
    return canvas


@torch.no_grad()
def generate_batches(
    snapshot: Any,
    jobs: list[Job],
    truncation: float | None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    store: Any = None,
) -> Iterator[tuple[list[Job], Any]]:
    """(jobs of the batch, GeneratorOutput) for consecutive batches of `jobs`; each image's noise comes from its own
    (caption key, seed) generators, so batching never changes an image."""
    device = torch.device(device)
    spec, config, source = snapshot.spec, snapshot.config, snapshot.text
    if source.kind == "precomputed":
        if store is None or any(job.prompt.caption_index is None for job in jobs):
            raise T2IError(
                f"this model conditions on {source.describe()}, which exist only for the captions of its data file: "
                "free text cannot be encoded; sample the data file's captions with --split test"
            )
        source.check_store(store)
    streams = spec.noise_streams(config)
    max_words = int(config.max_words)
    generator = snapshot.generator.to(device).eval()
    if source.encoder is not None:
        source.encoder.to(device).eval()
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        if source.kind == "precomputed":
            text = source.stored(store, [job.prompt.caption_index for job in batch], device)
        else:
            tokens, lengths = caption_rows(batch, max_words)
            text = source.encode(tokens.to(device), lengths.to(device))
        noise = draw_rows(noise_keys(batch), streams, truncation, device)
        yield batch, spec.generate(generator, noise, text)


def run_dir_of(snapshot_path: str | os.PathLike) -> Path:
    """The run folder a snapshot belongs to: RUN/snapshots/snapshot-N.pt and RUN/best-<metric>.pt -> RUN."""
    path = Path(snapshot_path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "snapshots" else path.parent


def run_data_file(snapshot_path: str | os.PathLike, flag: str = "--data") -> Path:
    """The prepared data file named by the config.json of the run `snapshot_path` belongs to (used when `flag` is
    not given); one T2IError naming `flag` when the run records none or the file is gone."""
    config_file = run_dir_of(snapshot_path) / "config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError):
        data = None
    if not data:
        raise T2IError(f"{flag} FILE is needed: {config_file} does not name the run's data file")
    if not Path(data).is_file():
        raise T2IError(f"{flag} FILE is needed: the run's data file {data} (from {config_file}) does not exist")
    return Path(data)


def generate_images(
    snapshot: Any,
    jobs: list[Job],
    truncation: float | None | str = "default",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    store: Any = None,
) -> torch.Tensor:
    """Final images (N, 3, H, W) in [-1, 1] of `jobs`, on the CPU (the Python API's `Snapshot.generate`)."""
    if truncation == "default":
        truncation = snapshot.spec.default_truncation(snapshot.config)
    device = device or next(snapshot.generator.parameters()).device
    parts = [output.image.float().cpu() for _, output in generate_batches(snapshot, jobs, truncation, batch_size,
                                                                         device, store)]  # fmt: skip
    return torch.cat(parts)


@torch.no_grad()
def sample(
    snapshot: Any,
    jobs: list[Job],
    out_dir: str | os.PathLike,
    *,
    truncation: float | None | str = "default",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    visualize: bool = False,
    grid_size: int = 64,
    console: Any = None,
    store: Any = None,
) -> SampleResult:
    """Generate one PNG per job into `out_dir` with samples.jsonl (written last, atomically) and grid.png.

    `snapshot` is a `t2itool.training.checkpoint.Snapshot` (spec, config, generator, text source, sha256, ...).
    `truncation="default"` takes the model preset's value (`spec.default_truncation(config)`). A snapshot trained on
    precomputed caption features needs `store`, the data file whose captions the jobs name.
    """
    from t2itool.metrics.fidelity import progress_bar

    if not jobs:
        raise T2IError("nothing to sample: give --text, --captions or --split")
    if batch_size < 1:
        raise T2IError(f"--batch-size {batch_size}: must be at least 1")
    out = Path(out_dir)
    if truncation == "default":
        truncation = snapshot.spec.default_truncation(snapshot.config)
    records: list[dict[str, Any]] = []
    grid_images: list[np.ndarray] = []
    missing = {job.prompt.text: job.prompt.missing for job in jobs if job.prompt.missing}
    # All or nothing: the files appear in `out` together when every one is written, samples.jsonl last; a failed
    # write, Ctrl-C or SIGTERM leaves `out` as it was (t2itool.fileio.staged_folder).
    with staged_folder(out, last="samples.jsonl") as stage, progress_bar(console) as progress:
        task = progress.add_task("sampling", total=len(jobs))
        for batch, output in generate_batches(snapshot, jobs, truncation, batch_size, device, store):
            arrays = to_uint8(output.image)
            for row, job in enumerate(batch):
                cancel.check()
                stem = f"c{job.prompt.key:06d}-s{job.seed:04d}"
                with stage.write(f"{stem}.png") as path:
                    Image.fromarray(arrays[row]).save(path, format="PNG")
                record: dict[str, Any] = {
                    "file": f"{stem}.png",
                    "caption": job.prompt.text,
                    "tokens": job.prompt.tokens,
                    "token_ids": job.prompt.ids,
                    "missing_words": job.prompt.missing,
                    "caption_index": job.prompt.caption_index,
                    "key": job.prompt.key,
                    "seed": job.seed,
                    "truncation": truncation,
                    "snapshot": str(snapshot.path),
                    "snapshot_sha256": snapshot.sha256,
                }
                if visualize and output.maps:
                    record["maps"] = {}
                    for name, maps in output.maps.items():
                        map_file = f"maps/{stem}-{name}.png"
                        if name == "attention":  # word attention (B, T, h, w): one map per caption word
                            # the words the generator saw: a long caption's in-order subset, as caption_rows drew it
                            tokens, length = caption_rows([job], int(maps[0].shape[1]))
                            words = [snapshot.vocab_words[i] for i in tokens[0, : int(length[0])].tolist()]
                            figure = attention_figure([im[row] for im in output.images], [m[row] for m in maps], words)
                        else:
                            figure = _map_strip(maps, row, arrays.shape[1])
                        with stage.write(map_file) as path:
                            Image.fromarray(figure).save(path, format="PNG")
                        record["maps"][name] = map_file
                records.append(record)
                if len(grid_images) < grid_size:
                    grid_images.append(arrays[row])
            progress.advance(task, len(batch))
        with stage.write("grid.png") as path:
            Image.fromarray(_grid(grid_images)).save(path, format="PNG")
        with stage.write("samples.jsonl") as path:
            path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    grid = out / "grid.png"
    return SampleResult(out, records, missing, grid)
