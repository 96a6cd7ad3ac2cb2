"""The pipeline from Python, with the CLI's argument names: `t2itool.prep`, `t2itool.pretrain_damsm`, `t2itool.train`,
`t2itool.sample`, `t2itool.score`. Each is a thin wrapper over the library function its command calls, so a notebook
and a shell script produce the same files (docs/python-api.md). Flags become keyword arguments (`--per-caption` ->
`per_caption`); `--is` is `isc` (a Python keyword), `--config FILE` is `config`, `--set k=v` is `sets`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from t2itool.errors import T2IError

PathLike = str | os.PathLike
SOURCES = ("cub", "coco", "folder", "shapes")


def prep(
    source: str,
    root: PathLike | None = None,
    *,
    out: PathLike,
    image_size: int = 304,
    image_format: str = "raw",
    workers: int | None = None,
    caption_features: str | None = None,
    caption_features_dtype: str = "float32",
    vocab: PathLike | None = None,
    min_word_count: int = 0,
    strict: bool = False,
    square: bool = False,
    split: PathLike | None = None,
    seed: int = 0,
    num_images: int = 2048,
    progress: bool = False,
) -> Any:
    """`t2itool prep SOURCE [ROOT] --out FILE ...`: one HDF5 file; returns the PrepSummary (`.as_dict()` is what
    `--json` prints). `split`/`seed` are folder's, `num_images`/`seed` shapes' (whose `workers` default is 0)."""
    if source not in SOURCES:
        raise T2IError(f"prep {source!r}: choose one of {', '.join(SOURCES)}")
    if source == "shapes":
        from t2itool.data.sources.shapes import build_shapes

        return build_shapes(
            out, num_images, image_size, seed, workers if workers is not None else 0, image_format,
            show_progress=progress, caption_features=caption_features, caption_features_dtype=caption_features_dtype,
        )  # fmt: skip
    if root is None:
        raise T2IError(f"prep {source} needs ROOT (the dataset folder)")
    if vocab is not None and min_word_count:
        raise T2IError("--min-word-count cannot be combined with --vocab (the imported vocabulary is used as is)")
    from t2itool.data.text import load_attngan_vocabulary

    options = dict(
        image_size=image_size, image_format=image_format, min_word_count=min_word_count, workers=workers,
        strict=strict, caption_features=caption_features, caption_features_dtype=caption_features_dtype,
        square=square, vocab=None if vocab is None else load_attngan_vocabulary(vocab), show_progress=progress,
    )  # fmt: skip
    if source == "cub":
        from t2itool.data.sources.cub import build_cub

        return build_cub(root, out, **options)
    if source == "coco":
        from t2itool.data.sources.coco import build_coco

        return build_coco(root, out, **options)
    from t2itool.data.sources.folder import build_folder

    return build_folder(root, out, split_file=split, seed=seed, **options)


def pretrain_damsm(
    data: PathLike,
    out: PathLike,
    *,
    preset: str = "birds",
    epochs: int | None = None,
    batch_size: int = 48,
    lr: float = 2e-3,
    max_words: int | None = None,
    backbone_weights: str = "imagenet",
    train_backbone: bool = False,
    encoder_image_size: int = 299,
    checkpoint_every: int | None = None,
    rp_images: int | None = None,
    workers: int = 2,
    seed: int = 0,
    device: str = "auto",
    resume: PathLike | None = None,
    log: Callable[[str], None] | None = None,
    **advanced: Any,
) -> Any:
    """`t2itool pretrain-damsm --data FILE --out DIR ...`; returns the PretrainResult (checkpoint, epoch, stats).
    `log` receives the per-epoch lines (default: none); `advanced` takes further PretrainConfig fields
    (e.g. `val_batches`)."""
    from t2itool.cli.common import resolve_device
    from t2itool.encoders.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        data=str(data), out=str(out), preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, max_words=max_words,
        backbone_weights=str(backbone_weights), train_backbone=train_backbone, encoder_image_size=encoder_image_size,
        checkpoint_every=checkpoint_every, rp_images=rp_images, workers=workers, seed=seed,
        device=resolve_device(device), resume=None if resume is None else str(resume), **advanced,
    )  # fmt: skip
    return pretrain(config, log=log or (lambda line: None))


def train(
    model: str,
    *,
    config: PathLike | None = None,
    sets: dict[str, Any] | Iterable[str] | None = None,
    metrics: str | Iterable[str] | None = None,
    **options: Any,
) -> Any:
    """`t2itool train MODEL ...`: every flag as a keyword (`data`, `damsm`, `out`, `steps`, `batch_size`, `resume`,
    `eval_every`, ...; TrainConfig fields); `config` is the TOML file, `sets` the model overrides as a dict or
    "key=value" strings, `metrics` a list or "fid,kid". Returns the TrainResult (run_dir, step, snapshot, ...)."""
    from t2itool.training.loop import train as run_training

    if sets is not None and not isinstance(sets, dict):
        from t2itool.cli.common import parse_key_values

        sets = parse_key_values(list(sets), "--set")
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if metrics is not None:
        options["metrics"] = list(metrics)
    options = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in options.items()}
    if options.get("steps") is not None and options.get("epochs") is not None:
        raise T2IError("give --steps or --epochs, not both")
    return run_training(model, config_file=None if config is None else str(config), sets=sets, **options)


def sample(
    snapshot: PathLike,
    out: PathLike,
    *,
    text: str | Iterable[str] = (),
    captions: PathLike | None = None,
    split: str | None = None,
    data: PathLike | None = None,
    per_caption: int = 1,
    seed: int = 0,
    truncation: str | float | None = None,
    batch_size: int = 16,
    device: str = "auto",
    visualize: bool = False,
) -> dict[str, Any]:
    """`t2itool sample SNAPSHOT --out DIR ...`: PNGs, samples.jsonl and grid.png; returns the summary `--json`
    prints. `data` defaults, for `split`, to the data file of the snapshot's run. For image tensors in memory use
    `t2itool.Snapshot.load(path).generate(texts, seeds)`."""
    from t2itool.cli.sample import run_sample

    texts = [text] if isinstance(text, str) else list(text)
    return run_sample(
        Path(snapshot), Path(out), texts, None if captions is None else Path(captions), split,
        None if data is None else Path(data), per_caption, seed, None if truncation is None else str(truncation),
        batch_size, device, visualize,
    )  # fmt: skip


def score(
    target: PathLike | None = None,
    *,
    data: PathLike | None = None,
    fid: bool = False,
    isc: bool = False,
    kid: bool = False,
    r_precision: bool = False,
    damsm: PathLike | None = None,
    shapes_agreement: bool = False,
    fid_flavor: str = "tf",
    inception_weights: PathLike | None = None,
    device: str = "auto",
    batch_size: int = 64,
    reference_only: bool = False,
    no_flips: bool = False,
    kid_subset_size: int = 1000,
    generate: bool = False,
    num_images: int | None = None,
    samples_out: PathLike | None = None,
    extractor: str = "inception-v3-compat",
) -> Any:
    """`t2itool score TARGET ...`: scores a samples folder, or with `generate=True` samples the protocol from a run
    or snapshot first (`t2itool.scoring.generate_and_score`, which checks every weight file before sampling).
    Returns the ScoreReport (records, notes, samples_dir); records are also appended to SAMPLES_DIR/scores.jsonl."""
    from t2itool.cli.common import resolve_device
    from t2itool.metrics.score import ScoreConfig
    from t2itool.metrics.score import score as score_samples
    from t2itool.scoring import data_of_samples, generate_and_score

    if target is None and not reference_only:
        raise T2IError("give SAMPLES_DIR (or a run with --generate, or --reference-only)")
    if data is None and target is None:
        raise T2IError("--reference-only needs --data FILE")
    options = dict(
        fid=fid, isc=isc, kid=kid, r_precision=r_precision, damsm=None if damsm is None else Path(damsm),
        shapes_agreement=shapes_agreement, fid_flavor=fid_flavor,
        inception_weights=None if inception_weights is None else Path(inception_weights),
        device=resolve_device(device), batch_size=batch_size, flips=not no_flips, kid_subset_size=kid_subset_size,
        extractor=extractor, reference_only=reference_only,
    )  # fmt: skip
    if generate:
        return generate_and_score(
            target, data, samples_out=samples_out, num_images=num_images, sample_batch_size=min(batch_size, 32),
            **options,
        )  # fmt: skip
    if data is None:
        data = data_of_samples(target)
    samples_dir = None if target is None else Path(target)
    return score_samples(ScoreConfig(samples_dir=samples_dir, data=Path(data), **options))
