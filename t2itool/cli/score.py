"""`t2itool score`: FID / IS / KID / R-precision of a samples folder against a data file's test split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from t2itool.cli.common import DEVICE_HELP, JSON_HELP, console, out, print_json, resolve_device, user_errors
from t2itool.errors import T2IError


def show(records: list[dict], as_json: bool) -> None:
    if as_json:
        print_json(records)
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
        target: Path | None = typer.Argument(
            None, help="SAMPLES_DIR (or RUN / snapshot with --generate).", metavar="SAMPLES_DIR|RUN"
        ),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="The prepared data file; its test split is the reference (default: the data file in the config.json "
            "of the run that made the samples).",
        ),
        fid: bool = typer.Option(False, "--fid", help="Frechet Inception Distance."),
        isc: bool = typer.Option(False, "--is", help="Inception Score (TF-Inception, 10 splits)."),
        kid: bool = typer.Option(False, "--kid", help="Kernel Inception Distance (subset size lowered if needed)."),
        r_precision: bool = typer.Option(False, "--r-precision", help="DAMSM R-precision (needs --damsm)."),
        damsm: Path | None = typer.Option(
            None, "--damsm", help="DAMSM checkpoint for --r-precision (default: none; required by --r-precision)."
        ),
        shapes_agreement: bool = typer.Option(
            False, "--shapes-agreement", help="Built-in shapes data: colour/shape of each image vs its caption."
        ),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
        fid_flavor: str = typer.Option(
            "tf", "--fid-flavor", help="tf (torch-fidelity) or torchvision (DM-GAN/DF-GAN)."
        ),
        inception_weights: Path | None = typer.Option(
            None,
            "--inception-weights",
            help="Offline weights: weights-inception-2015-12-05-6726825d.pth "
            "(tf) or a torchvision inception_v3 state dict (torchvision) (default: the torch hub cache, else "
            "download).",
        ),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        batch_size: int = typer.Option(64, "--batch-size", help="Images per feature-extraction batch."),
        reference_only: bool = typer.Option(False, "--reference-only", help="Only compute and cache reference stats."),
        no_flips: bool = typer.Option(False, "--no-flips", help="Reference without horizontal flips (not CUB's)."),
        kid_subset_size: int = typer.Option(1000, "--kid-subset-size", help="KID subset size."),
        generate: bool = typer.Option(False, "--generate", help="TARGET is a run/snapshot: sample the protocol first."),
        num_images: int | None = typer.Option(
            None, "--num-images", help="--generate: images (default: --passes over the test split)."
        ),
        passes: int | None = typer.Option(
            None, "--passes", help="--generate: passes over the test images (default: CUB 10, COCO 1, others 1)."
        ),
        samples_out: Path | None = typer.Option(
            None, "--samples-out", help="--generate: where the samples go (default: RUN/eval-<snapshot>-<count>)."
        ),
        extractor: str = typer.Option(
            "inception-v3-compat", "--extractor", help="A registered torch-fidelity extractor."
        ),
    ) -> None:
        """Score samples with FID / IS / KID (torch-fidelity) and R-precision; appends to SAMPLES_DIR/scores.jsonl."""
        from t2itool.metrics.score import ScoreConfig, score
        from t2itool.scoring import data_of_samples, generate_and_score

        device = resolve_device(device)  # before any work: a missing GPU is one line
        if target is None and not reference_only:
            raise T2IError("give SAMPLES_DIR (or a run with --generate, or --reference-only)")
        if generate and target is None:
            raise T2IError("--generate needs a RUN folder or snapshot file as the argument")
        if data is None and target is None:
            raise T2IError("--reference-only needs --data FILE")
        options = dict(
            fid=fid, isc=isc, kid=kid, r_precision=r_precision, damsm=damsm, shapes_agreement=shapes_agreement,
            fid_flavor=fid_flavor, inception_weights=inception_weights, device=device,
            batch_size=batch_size, flips=not no_flips, kid_subset_size=kid_subset_size, extractor=extractor,
            reference_only=reference_only,
        )  # fmt: skip
        if generate:
            report = generate_and_score(
                target, data, samples_out=samples_out, num_images=num_images, passes=passes,
                sample_batch_size=min(batch_size, 32), console=console, **options,
            )  # fmt: skip
        else:
            if data is None:
                data = data_of_samples(target)
            report = score(ScoreConfig(samples_dir=target, data=data, **options), console=console)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}")
        if report.records or as_json:
            show(report.records, as_json)
