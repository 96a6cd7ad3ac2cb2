"""`t2itool models [MODEL]`: list registered models, or one model's config fields, defaults, help and presets."""

from __future__ import annotations

import dataclasses
import json

import typer
from rich.table import Table

from t2itool.cli.common import JSON_HELP, out, user_errors


def models_command(
    model: str | None = typer.Argument(
        None, help="Show this model's config fields and presets (default: list every model).", metavar="MODEL"
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the registered models, or one model's config."""
    from t2itool.models import get_model, list_models

    if model is None:
        specs = [get_model(name) for name in list_models()]
        if as_json:
            typer.echo(json.dumps([{"name": s.name, "summary": s.summary, "paper": s.paper} for s in specs], indent=2))
            return
        table = Table("model", "summary", "paper")
        for spec in specs:
            table.add_row(spec.name, spec.summary, spec.paper)
        out.print(table)
        return
    spec = get_model(model)
    fields = dataclasses.fields(spec.config_cls)
    defaults = dataclasses.asdict(spec.config_cls())
    if as_json:
        payload = {
            "name": spec.name,
            "summary": spec.summary,
            "paper": spec.paper,
            "fields": [
                {"name": f.name, "default": defaults[f.name], "help": f.metadata.get("help", "")} for f in fields
            ],
            "presets": {k: dict(v) for k, v in spec.presets.items()},
            "train_presets": {k: dict(v) for k, v in spec.train_presets.items()},
            "notes": list(spec.notes),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    out.print(f"[bold]{spec.name}[/]: {spec.summary}\n{spec.paper}", highlight=False)
    table = Table("key", "default", *sorted(spec.presets), "help")
    for f in fields:
        preset_values = [
            repr(spec.presets[p][f.name]) if f.name in spec.presets[p] else "" for p in sorted(spec.presets)
        ]
        table.add_row(f.name, repr(defaults[f.name]), *preset_values, f.metadata.get("help", ""))
    out.print(table)
    for preset in sorted(spec.train_presets):
        settings = ", ".join(f"{k}={v}" for k, v in spec.train_presets[preset].items())
        out.print(f"--preset {preset} also sets: {settings}", highlight=False)
    for note in spec.notes:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("models")(user_errors(models_command))
