"""`t2itool demo`: the whole pipeline on the built-in shapes data (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from t2itool.cli.common import DEVICE_HELP, console, out, resolve_device, user_errors


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo_command(
        out_dir: Path = typer.Option(Path("demo-run"), "--out", help="Folder for every file the demo writes."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        steps: int | None = typer.Option(None, "--steps", help="Training steps (default: 500)."),
        quick: bool = typer.Option(False, "--quick", help="A one-minute smoke run (too short to learn)."),
        inception_weights: Path | None = typer.Option(
            None,
            "--inception-weights",
            help="TF-Inception weights: adds FID and IS to the report (default: none, no FID/IS).",
        ),
    ) -> None:
        """The whole pipeline on the shapes data: prep, pretrain-damsm, train drgan, sample, score."""
        from t2itool.demo import DemoSettings, format_report, run_demo

        settings = DemoSettings.quick(out_dir) if quick else DemoSettings(out=out_dir)
        settings.device, settings.inception_weights = resolve_device(device), inception_weights
        if steps is not None:
            if steps < 1:
                raise typer.BadParameter("must be at least 1", param_hint="--steps")
            settings.train_steps = steps

        def echo(line: str) -> None:  # one unwrapped line, markup-escaped: the command can be copied as printed
            console.print(f"\n[bold cyan]{escape(line)}[/]", highlight=False, soft_wrap=True)

        report = run_demo(settings, echo=echo)
        out.print("\n[bold]t2itool demo report[/]")
        for line in format_report(report, settings):
            out.print("  " + line, highlight=False, soft_wrap=True)
