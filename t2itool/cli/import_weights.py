"""`t2itool import-weights MODEL FILE`: a released checkpoint of the official code -> a t2itool snapshot."""

from __future__ import annotations

from pathlib import Path

import typer

from t2itool.cli.common import out, parse_key_values, user_errors


def register(app: typer.Typer) -> None:
    @app.command("import-weights")
    @user_errors
    def import_weights_command(
        model: str = typer.Argument(..., help="Registered model name (dfgan, dfgan-ssacn, ...)."),
        file: Path = typer.Argument(..., help="The official checkpoint (state file or generator state dict)."),
        data: Path = typer.Option(..., "--data", help="Prepared data file (its vocabulary goes into the snapshot)."),
        damsm: Path | None = typer.Option(
            None,
            "--damsm",
            help="DAMSM checkpoint the weights were trained with (default: none; needed with --text damsm).",
        ),
        out_file: Path = typer.Option(..., "--out", help="Snapshot file to write."),
        preset: str | None = typer.Option(
            None,
            "--preset",
            help="Paper preset: birds or coco (default: none: model defaults and what the file fixes).",
        ),
        sets: list[str] = typer.Option([], "--set", help="Model config override key=value (repeatable)."),
        with_discriminator: bool = typer.Option(
            False, "--with-discriminator", help="Also write NAME.state.pt beside OUT: discriminators for --init-from."
        ),
        discriminator: list[Path] = typer.Option(
            [], "--discriminator", help="Discriminator file(s) when FILE holds only the generator (model's order)."
        ),
        text: str = typer.Option("damsm", "--text", help="Text source: damsm, or precomputed (data file features)."),
    ) -> None:
        """Turn an official generator checkpoint into a snapshot that `sample` and `score --generate` use."""
        from t2itool.weights import import_weights

        result = import_weights(
            model, file, data=data, out=out_file, damsm=damsm, text=text, preset=preset,
            sets=parse_key_values(sets, "--set"), with_discriminator=with_discriminator or bool(discriminator),
            discriminator_files=discriminator,
        )  # fmt: skip
        imported = result.imported
        shapes = ", ".join(f"{k}={v}" for k, v in imported.from_file.items())
        origin = imported.origin
        out.print(
            f"wrote {result.snapshot}: {model} from {origin['file']} (sha256 {origin['sha256'][:12]}, "
            f"{', '.join(origin['networks'])}); from the file: {shapes}",
            highlight=False,
            soft_wrap=True,
        )
        if result.state is not None:
            out.print(f"wrote {result.state}: {', '.join(imported.nets)} for --init-from", highlight=False)
