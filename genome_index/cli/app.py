"""The `genome-index` command line: a thin typer veneer; every command is a call into the library.

The app, its errors as one line and its logging are here; the commands are in one module a
group, each a page of the manual: `build_commands` (embed, build, merge, backfill-sequences),
`search_commands` (query, gather, extract, serve), `store_commands` (sql, info, check, remove,
migrate, reindex) and `analysis_commands` (compare, evaluate). Options shared by several commands,
with their help from `settings`, are in `options`; how results print, in `output`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from typer.completion import completion_init

from genome_index.cli.help import HelpCommand, OneLineErrors
from genome_index.config import load as load_config
from genome_index.errors import GenomeIndexError

app = typer.Typer(
    cls=OneLineErrors,
    help="Embed genome assemblies with DNA transformers; search them with FAISS and SQL.",
    epilog="Run `genome-index COMMAND --help` for a command's options and examples.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
    pretty_exceptions_enable=False,
    add_completion=False,  # the `completion` command prints the script: one way, not two
)
completion_init()  # what answers the shell's completion requests (typer sets it up only with its own options)
command = functools.partial(app.command, cls=HelpCommand)

F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from genome_index import __version__

        typer.echo(f"genome-index {__version__}")
        raise typer.Exit()


class _StderrHandler(logging.Handler):
    """The library's log records as plain lines on whatever sys.stderr is at the moment of
    writing; warnings say `notice:` (the library's own messages carry no prefix)."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "notice: " if record.levelno >= logging.WARNING else ""
        typer.echo(prefix + self.format(record), err=True)


def _setup_logging() -> None:
    logger = logging.getLogger("genome_index")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Embed genome assemblies with DNA transformers; search them with FAISS and SQL."""
    _setup_logging()
    try:
        values = load_config().values
    except GenomeIndexError as exc:
        typer.echo(f"genome-index: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if values:  # genome-index.toml gives the defaults of every command's matching options
        commands = ctx.command.commands  # type: ignore[attr-defined]
        ctx.default_map = {
            name: {key: value for key, value in values.items() if key in {p.name for p in command.params}}
            for name, command in commands.items()
        }


def user_errors(func: F) -> F:
    """Turn GenomeIndexError into one line on stderr and exit status 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GenomeIndexError as exc:
            typer.echo(f"genome-index: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # the reader of stdout left (`| head`): nothing more to say
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as exc:  # e.g. an output path in a missing or read-only folder
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"genome-index: error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("genome-index: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def log(message: str, quiet: bool = False) -> None:
    """Human-readable progress and summaries go to stderr, never mixed with results."""
    if not quiet:
        typer.echo(message, err=True)


# The commands register in this order, the order of `--help` and of the manual.
from genome_index.cli import build_commands, search_commands, store_commands, analysis_commands  # noqa: E402, F401  # isort: skip


@command()
@user_errors
def completion(
    shell: Annotated[str, typer.Argument(help="The shell to complete in.", metavar="[bash|zsh|fish]")],
) -> None:
    """Print a shell completion script.

    \b
    Examples:
      genome-index completion bash > ~/.local/share/bash-completion/completions/genome-index
      genome-index completion zsh > "${fpath[1]}/_genome-index"
    """
    from typer.completion import get_completion_script

    if shell not in ("bash", "zsh", "fish"):
        raise GenomeIndexError(f"no completion for {shell!r}: use bash, zsh or fish")
    typer.echo(get_completion_script(prog_name="genome-index", complete_var="_GENOME_INDEX_COMPLETE", shell=shell))


def main() -> None:
    app(prog_name="genome-index")
