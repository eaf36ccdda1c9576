"""The command line: a typer app over the library (`app`), its help style (`help`) and how results print (`output`)."""

from genome_index.cli.app import app, main

__all__ = ["app", "main"]
