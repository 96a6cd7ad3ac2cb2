"""The command-line interface: a thin Typer layer, one module per command; no logic lives here."""
