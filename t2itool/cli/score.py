"""`t2itool score`: FID / IS / KID / R-precision of a samples folder against a data file's test split."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from t2itool.cli.common import check_device, console, out, user_errors
from t2itool.errors import T2IError

PASSES = 10  # CUB protocol: 10 passes over the test images, one random caption each (REFERENCES 4.2)


def generate_protocol(
    run: Path, data: Path, samples_out: Path | None, num_images: int | None, device: str, batch_size: int
) -> Path:
    """Sample the standard protocol from a run folder or snapshot; returns the samples folder."""
    from t2itool import sampling
    from t2itool.data.store import Store
    from t2itool.training.checkpoint import load_snapshot

    snap = load_snapshot(run, device=device)
    store = Store(data)
    count = num_images if num_images is not None else PASSES * len(store.split_indices("test"))
    if count < 1:
        raise T2IError(f"--num-images {count}: must be at least 1")
    run_dir = snap.path.parent.parent if snap.path.parent.name == "snapshots" else snap.path.parent
    target = samples_out or run_dir / f"eval-{snap.path.stem}-{count}"
    jobs = sampling.protocol_jobs(store, "test", snap.vocab_sha256, count)
    sampling.sample(snap, jobs, target, batch_size=batch_size, device=device, console=console, store=store)
    console.print(f"sampled {count} images into {target}")
    return target


def show(records: list[dict], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(records))
        return
    table = Table(title="scores")
    for column in ("metric", "value", "std", "chance", "flavour", "images", "reference"):
        table.add_column(column)
    for r in records:
        std = "" if r.get("std") is None else f"{r['std']:.5g}"
        chance = "" if r.get("chance") is None else f"{r['chance']:.3g}"
        table.add_row(
            r["metric"], f"{r['value']:.5g}", std, chance, r["flavour"], str(r["num_images"]),
            str(r.get("num_reference", "")),
        )  # fmt: skip
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command("score")
    @user_errors
    def score_command(
        target: Path | None = typer.Argument(None, help="SAMPLES_DIR (or RUN / snapshot with --generate)."),
        data: Path = typer.Option(..., "--data", help="The prepared data file; its test split is the reference."),
        fid: bool = typer.Option(False, "--fid", help="Frechet Inception Distance."),
        isc: bool = typer.Option(False, "--is", help="Inception Score (TF-Inception, 10 splits)."),
        kid: bool = typer.Option(False, "--kid", help="Kernel Inception Distance (subset size lowered if needed)."),
        r_precision: bool = typer.Option(False, "--r-precision", help="DAMSM R-precision (needs --damsm)."),
        damsm: Path | None = typer.Option(None, "--damsm", help="DAMSM checkpoint for --r-precision."),
        shapes_agreement: bool = typer.Option(
            False, "--shapes-agreement", help="Built-in shapes data: colour/shape of each image vs its caption."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the records as JSON on stdout."),
        fid_flavor: str = typer.Option(
            "tf", "--fid-flavor", help="tf (torch-fidelity) or torchvision (DM-GAN/DF-GAN)."
        ),
        inception_weights: Path | None = typer.Option(
            None,
            "--inception-weights",
            help="Offline weights: weights-inception-2015-12-05-6726825d.pth "
            "(tf) or a torchvision inception_v3 state dict (torchvision).",
        ),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
        batch_size: int = typer.Option(64, "--batch-size", help="Images per feature-extraction batch."),
        reference_only: bool = typer.Option(False, "--reference-only", help="Only compute and cache reference stats."),
        no_flips: bool = typer.Option(False, "--no-flips", help="Reference without horizontal flips (not CUB's)."),
        kid_subset_size: int = typer.Option(1000, "--kid-subset-size", help="KID subset size."),
        generate: bool = typer.Option(False, "--generate", help="TARGET is a run/snapshot: sample the protocol first."),
        num_images: int | None = typer.Option(None, "--num-images", help="--generate: images (default 10 passes)."),
        samples_out: Path | None = typer.Option(None, "--samples-out", help="--generate: where the samples go."),
        extractor: str = typer.Option(
            "inception-v3-compat", "--extractor", help="A registered torch-fidelity extractor."
        ),
    ) -> None:
        """Score samples with FID / IS / KID (torch-fidelity) and R-precision; appends to SAMPLES_DIR/scores.jsonl."""
        from t2itool.metrics.score import ScoreConfig, score

        check_device(device)
        if target is None and not reference_only:
            raise T2IError("give SAMPLES_DIR (or a run with --generate, or --reference-only)")
        if generate:
            if target is None:
                raise T2IError("--generate needs a RUN folder or snapshot file as the argument")
            target = generate_protocol(target, data, samples_out, num_images, device, min(batch_size, 32))
        config = ScoreConfig(
            samples_dir=target,
            data=data,
            fid=fid,
            isc=isc,
            kid=kid,
            r_precision=r_precision,
            damsm=damsm,
            shapes_agreement=shapes_agreement,
            fid_flavor=fid_flavor,
            inception_weights=inception_weights,
            device=device,
            batch_size=batch_size,
            flips=not no_flips,
            kid_subset_size=kid_subset_size,
            extractor=extractor,
            reference_only=reference_only,
        )
        report = score(config, console=console)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}")
        if report.records:
            show(report.records, as_json)
