"""The generate-then-score protocol (`t2itool score RUN --generate`) as a library function: check every weight file
the metrics need, sample the test split's protocol from a run or snapshot, then score the samples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from t2itool.errors import T2IError
from t2itool.metrics.score import ScoreConfig, ScoreReport, check_weights, score


def data_of_samples(samples_dir: str | os.PathLike) -> Path:
    """The data file of the run whose snapshot made `samples_dir` (samples.jsonl names the snapshot), for `score`
    without --data."""
    from t2itool import sampling
    from t2itool.metrics.fidelity import read_samples_index

    meta = read_samples_index(Path(samples_dir))
    snapshots = {m.get("snapshot") for m in meta if m.get("snapshot")}
    if len(snapshots) != 1:
        raise T2IError(
            f"--data FILE is needed: {samples_dir}/samples.jsonl does not name one snapshot whose run to ask"
        )
    return sampling.run_data_file(snapshots.pop())


def generate_protocol(
    run: str | os.PathLike,
    data: str | os.PathLike,
    samples_out: str | os.PathLike | None = None,
    num_images: int | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    console: Any = None,
    passes: int | None = None,
) -> Path:
    """Sample the standard protocol from a run folder or snapshot into `samples_out` (default
    RUN/eval-<snapshot>-<count>): `passes` over the test images, one random caption each (default per dataset as
    DF-GAN's sample_times: CUB 10, COCO 1, others 1), or exactly `num_images`; returns that folder."""
    from t2itool import sampling
    from t2itool.data.store import Store
    from t2itool.training.checkpoint import load_snapshot

    store = Store(data)
    if passes is not None and passes < 1:
        raise T2IError(f"--passes {passes}: must be at least 1")
    passes = passes if passes is not None else sampling.default_passes(store)
    count = num_images if num_images is not None else passes * len(store.split_indices("test"))
    if count < 1:
        raise T2IError(f"--num-images {count}: must be at least 1")
    snap = load_snapshot(run, device=device)
    target = (
        Path(samples_out)
        if samples_out is not None
        else sampling.run_dir_of(snap.path) / f"eval-{snap.path.stem}-{count}"
    )
    jobs = sampling.protocol_jobs(store, "test", snap.vocab_sha256, count)
    sampling.sample(snap, jobs, target, batch_size=batch_size, device=device, console=console, store=store)
    if console is not None:
        console.print(f"sampled {count} images into {target}", highlight=False)
    return target


def generate_and_score(
    run: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    samples_out: str | os.PathLike | None = None,
    num_images: int | None = None,
    passes: int | None = None,
    sample_batch_size: int = 32,
    console: Any = None,
    **score_options: Any,
) -> ScoreReport:
    """Sample the protocol from `run` (a run folder or snapshot file) and score it.

    `data` defaults to the data file in the run's config.json; `score_options` are `ScoreConfig` fields (fid=True,
    r_precision=True, damsm=..., inception_weights=..., device=...). Every weight file the metrics need is checked
    before the first image is generated. The report's `samples_dir` is the generated folder.
    """
    from t2itool import sampling

    if data is None:
        data = sampling.run_data_file(run)
    config = ScoreConfig(samples_dir=None, data=Path(data), **score_options)
    if config.reference_only:
        raise T2IError("--reference-only cannot be combined with --generate")
    check_weights(config)
    config.samples_dir = generate_protocol(
        run, config.data, samples_out, num_images, config.device, sample_batch_size, console, passes
    )
    return score(config, console=console)
