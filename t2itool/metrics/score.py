"""`score`: every metric of a samples folder against a data file, as records appended to `scores.jsonl`.

Resolves weights first (one clear error offline), reuses cached reference features, and names the protocol used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t2itool.errors import T2IError
from t2itool.fileio import append_jsonl
from t2itool.metrics import fidelity, torchvision_fid
from t2itool.metrics.extractors import TF_INCEPTION, resolve_tf_weights

FID_FLAVORS = ("tf", "torchvision")


@dataclass
class ScoreConfig:
    samples_dir: Path | None
    data: Path
    fid: bool = False
    isc: bool = False
    kid: bool = False
    r_precision: bool = False
    damsm: Path | None = None
    shapes_agreement: bool = False  # built-in shapes data only: colour/shape of each image vs its caption
    fid_flavor: str = "tf"
    inception_weights: Path | None = None
    device: str = "cpu"
    batch_size: int = 64
    split: str = "test"
    flips: bool = True  # CUB convention: reference = test images + their horizontal mirrors
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    isc_splits: int = 10
    extractor: str = TF_INCEPTION  # another registered torch-fidelity extractor (tests: the tiny one)
    cache_dir: Path | None = None
    reference_only: bool = False
    resolution: int | None = None  # reference resolution for --reference-only (default: the data file's)


@dataclass
class ScoreReport:
    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    samples_dir: Path | None = None  # the scored folder (the generated one for `generate_and_score`)


def validate(config: ScoreConfig, need_samples: bool = True) -> None:
    if config.fid_flavor not in FID_FLAVORS:
        raise T2IError(f"--fid-flavor {config.fid_flavor!r}: choose one of {', '.join(FID_FLAVORS)}")
    if not (config.fid or config.isc or config.kid or config.r_precision or config.shapes_agreement) and not (
        config.reference_only
    ):
        raise T2IError(
            "choose at least one of --fid, --is, --kid, --r-precision, --shapes-agreement (or --reference-only)"
        )
    if config.r_precision and config.damsm is None:
        raise T2IError("--r-precision needs --damsm CKPT (the DAMSM checkpoint used in training)")
    if not Path(config.data).is_file():
        raise T2IError(f"--data {config.data}: no such file")
    if need_samples and not config.reference_only and config.samples_dir is None:
        raise T2IError("give a SAMPLES_DIR (or --reference-only)")


def check_weights(config: ScoreConfig) -> None:
    """Every file the requested metrics will load, checked now (before any sampling or feature extraction): the
    TF-Inception weights (FID/IS/KID), the torchvision Inception weights (--fid-flavor torchvision), the DAMSM
    checkpoint and its vocabulary (R-precision), the data file's source (shapes agreement). One T2IError each."""
    from t2itool.data.store import Store

    validate(config, need_samples=False)
    store = Store(config.data)
    need_tf = config.isc or config.kid or (config.fid and config.fid_flavor == "tf")
    if need_tf and config.extractor == TF_INCEPTION:
        resolve_tf_weights(config.inception_weights)
    if config.fid and config.fid_flavor == "torchvision":
        torchvision_fid.check_weights(config.inception_weights)
    if config.r_precision:
        from t2itool.encoders.checkpoint import check_vocabulary, read_damsm

        file, record = read_damsm(config.damsm)
        check_vocabulary(record, store, str(file))
    if config.shapes_agreement and store.source != "shapes":
        raise T2IError(
            f"--shapes-agreement: {config.data} is not from `t2itool prep shapes`; it measures shapes images only"
        )


def score(config: ScoreConfig, console: Any = None) -> ScoreReport:
    """Compute the requested metrics; append one record per metric to SAMPLES_DIR/scores.jsonl."""
    validate(config)
    device = torch.device(config.device)
    need_tf = (config.isc or config.kid or (config.fid and config.fid_flavor == "tf")) or (
        config.reference_only and config.fid_flavor == "tf"
    )
    tf_weights = None
    if need_tf and config.extractor == TF_INCEPTION:
        tf_weights = resolve_tf_weights(config.inception_weights)  # before any long work
    elif need_tf and config.inception_weights is not None:
        tf_weights = Path(config.inception_weights)
    tf_id = fidelity.weights_id(config.extractor, tf_weights) if need_tf else None
    tv_model, tv_id = None, None
    if config.fid and config.fid_flavor == "torchvision" or (config.reference_only and config.fid_flavor != "tf"):
        tv_model = torchvision_fid.load_torchvision_inception(config.inception_weights)
        tv_id = (
            fidelity.weights_id("torchvision", Path(config.inception_weights))
            if config.inception_weights
            else "torchvision:Inception_V3_Weights.IMAGENET1K_V1"
        )
    common = dict(
        split=config.split,
        flips=config.flips,
        device=device,
        batch_size=config.batch_size,
        cache_dir=config.cache_dir,
        console=console,
    )

    if config.reference_only:
        from t2itool.data.store import Store

        resolution = config.resolution or Store(config.data).image_size
        if config.fid_flavor == "tf":
            layers = fidelity.default_layers(config.extractor, ("fid", "kid"))
            ref = fidelity.reference_features(
                config.data,
                resolution=resolution,
                extractor=config.extractor,
                layers=layers,
                weights=tf_weights,
                weights_hash=tf_id,
                **common,
            )
        else:
            ref = fidelity.reference_features(
                config.data,
                resolution=resolution,
                extractor=torchvision_fid.TORCHVISION_EXTRACTOR,
                layers=["2048"],
                weights_hash=tv_id,
                model=tv_model,
                **common,
            )
        state = "already cached" if ref.from_cache else "computed"
        count = len(next(iter(ref.features.values())))
        return ScoreReport([], [f"reference features {state}: {ref.path} ({count} images, {resolution}px)"])

    samples_dir = Path(config.samples_dir)
    samples = fidelity.SampleImages(samples_dir)
    meta = samples.records
    snapshots = sorted({m.get("snapshot_sha256") for m in meta if m.get("snapshot_sha256")})
    resolution = samples.resolution()
    base = {
        "num_images": len(samples),
        "snapshot_sha256": snapshots[0] if len(snapshots) == 1 else snapshots or None,
        "data": str(Path(config.data).resolve()),
        "split": config.split,
        "resolution": resolution,
    }
    records: list[dict[str, Any]] = []
    notes: list[str] = []

    def record(metric: str, value: float, std: float | None, flavour: str, **extra: Any) -> None:
        records.append({"metric": metric, "value": value, "std": std, "flavour": flavour, **base, **extra})

    if config.isc or config.kid or (config.fid and config.fid_flavor == "tf"):
        metrics = tuple(
            m
            for m, on in (("isc", config.isc), ("fid", config.fid and config.fid_flavor == "tf"), ("kid", config.kid))
            if on
        )
        sample_layers = fidelity.default_layers(config.extractor, metrics)
        sample_features = fidelity.extract_features(
            samples, config.extractor, sample_layers, tf_weights, device, config.batch_size, "sample features", console
        )
        ref_dataset, ref = None, None
        if "fid" in metrics or "kid" in metrics:
            ref_layers = fidelity.default_layers(config.extractor, tuple(m for m in metrics if m != "isc"))
            ref = fidelity.reference_features(
                config.data,
                resolution=resolution,
                extractor=config.extractor,
                layers=ref_layers,
                weights=tf_weights,
                weights_hash=tf_id,
                **common,
            )
            ref_dataset = fidelity.ReferenceImages(config.data, config.split, resolution, config.flips)
        result = fidelity.compute_fidelity(
            samples,
            sample_features,
            ref_dataset,
            ref.features if ref else None,
            isc=config.isc,
            fid="fid" in metrics,
            kid=config.kid,
            extractor=config.extractor,
            weights=tf_weights,
            device=device,
            kid_subset_size=config.kid_subset_size,
            kid_subsets=config.kid_subsets,
            isc_splits=config.isc_splits,
        )
        notes.extend(result.notes)
        flavour = f"torch-fidelity:{config.extractor}"
        extra = {"weights": tf_id, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ref_extra = {"num_reference": result.num_reference, "reference_flips": config.flips}
        values = result.values
        if config.isc:
            record(
                "is",
                values["inception_score_mean"],
                values["inception_score_std"],
                flavour,
                splits=config.isc_splits,
                **extra,
            )
        if "fid" in metrics:
            record("fid", values["frechet_inception_distance"], None, flavour, **ref_extra, **extra)
        if config.kid:
            subset = min(config.kid_subset_size, result.num_images, result.num_reference)
            record(
                "kid",
                values["kernel_inception_distance_mean"],
                values["kernel_inception_distance_std"],
                flavour,
                kid_subset_size=subset,
                kid_subsets=config.kid_subsets,
                **ref_extra,
                **extra,
            )

    if config.fid and config.fid_flavor == "torchvision":
        name = torchvision_fid.TORCHVISION_EXTRACTOR
        ref = fidelity.reference_features(
            config.data,
            resolution=resolution,
            extractor=name,
            layers=["2048"],
            weights_hash=tv_id,
            model=tv_model,
            **common,
        )
        fake = fidelity.extract_features(
            samples, name, ["2048"], None, device, config.batch_size, "sample features", console, tv_model
        )
        value = torchvision_fid.frechet_distance(
            *torchvision_fid.statistics(fake["2048"]), *torchvision_fid.statistics(ref.features["2048"])
        )
        record(
            "fid",
            value,
            None,
            "torchvision-inception-v3 (DM-GAN/DF-GAN)",
            num_reference=len(ref.features["2048"]),
            reference_flips=config.flips,
            weights=tv_id,
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    if config.r_precision:
        from t2itool.metrics.rprecision import r_precision_of_samples

        value, std, info = r_precision_of_samples(samples, meta, config, device)
        record("r_precision", value, std, "damsm", **info, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    if config.shapes_agreement:
        for metric, value, chance, count in shapes_agreement_of_samples(samples, meta, config.data):
            record(
                metric,
                value,
                None,
                "shapes",
                chance=chance,
                num_scored=count,
                time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            )

    for item in records:
        append_jsonl(samples_dir / "scores.jsonl", item)
    return ScoreReport(records, notes, samples_dir)


def shapes_agreement_of_samples(
    samples: fidelity.SampleImages, meta: list[dict[str, Any]], data: Path
) -> list[tuple[str, float, float, int]]:
    """(metric, agreement, chance, images scored) for colour and shape: the demo's proof that text conditions."""
    from t2itool.data.store import Store
    from t2itool.metrics.shapes_agreement import shapes_agreement

    if Store(data).source != "shapes":
        raise T2IError(f"--shapes-agreement: {data} is not from `t2itool prep shapes`; it measures shapes images only")
    if len(meta) != len(samples) or any("caption" not in m for m in meta):
        raise T2IError(f"{samples.root}: --shapes-agreement needs samples.jsonl with each image's caption")
    images = torch.stack([samples[k] for k in range(len(samples))])
    result = shapes_agreement(images, [m["caption"] for m in meta])
    return [
        ("colour_agreement", result.colour_agreement, result.colour_chance, result.num_colour),
        ("shape_agreement", result.shape_agreement, result.shape_chance, result.num_shape),
    ]
