"""The `t2itool` entry point: builds the Typer app from the command modules."""

from __future__ import annotations

import importlib

import typer

from t2itool import __version__

# Each module listed here exposes `register(app: typer.Typer) -> None`, which adds its command(s).
# Commands wrap their bodies with `t2itool.cli.common.user_errors`, so bad input ends in one line, not a traceback.
COMMAND_MODULES = [
    "t2itool.cli.prep",
    "t2itool.cli.info",
    "t2itool.cli.damsm",
    "t2itool.cli.train",
    "t2itool.cli.models",
    "t2itool.cli.sample",
    "t2itool.cli.score",
    "t2itool.cli.demo",
    "t2itool.cli.import_weights",
    # add new command modules above this line
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"t2itool {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="t2itool",
        help="Text-to-image GAN research toolkit: prep -> pretrain-damsm -> train -> sample -> score.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        context_settings={
            "max_content_width": 120
        },  # help text is plain text: "[model]" stays, switches show no "<bool>" metavar
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """Text-to-image GAN research toolkit."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


app = build_app()


def main() -> None:
    app()
