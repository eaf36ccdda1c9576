"""How the command line looks: help pages in the plain style of click, `gh` and `llm`, and
argument errors as one line.

Typer's own help draws boxes and type tags (`<bool>` on plain flags, `<list[Path]>`); here
each option is `-s, --long METAVAR  help  [default: X]`, every default in that one style,
and each command's docstring carries its examples.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

METAVARS = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def metavar(param: TyperArgument | TyperOption) -> str:
    """The placeholder after an option or for an argument: its own, else one by its type."""
    if param.metavar:
        return param.metavar
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    kinds = [annotation, *getattr(annotation, "__args__", ())]
    for kind in kinds:
        if kind in METAVARS:
            name = METAVARS[kind]
            return name if not isinstance(param, TyperArgument) else (param.name or name).upper()
    return (param.name or "VALUE").upper()


def default_text(param: TyperOption) -> str | None:
    """What `[default: ...]` says: a text the option gives, else its value (none for an
    off flag, the flag's name for an on/off pair)."""
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return shown
    value = param.default
    if value is None or callable(value) or value is False or value == ():
        return None
    if value is True and param.secondary_opts:
        return param.opts[-1]
    if isinstance(value, Path):
        return str(value)
    return str(value)


class HelpCommand(TyperCommand):
    """A command whose help lists arguments and options as click does, without type tags."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = metavar(param) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if isinstance(param, TyperArgument):
                arguments.append((metavar(param), getattr(param, "help", None) or ""))
            elif isinstance(param, TyperOption):
                options.append(self._option_row(param))
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)

    @staticmethod
    def _option_row(param: TyperOption) -> tuple[str, str]:
        shorts = [o for o in param.opts if not o.startswith("--")]
        longs = [o for o in param.opts if o.startswith("--")]
        name = ", ".join(shorts + longs)
        if param.secondary_opts:
            name += " / " + ", ".join(param.secondary_opts)
        if not param.is_flag:
            name += " " + metavar(param)
        extra = []
        default = default_text(param)
        if default is not None and param.name != "help":
            extra.append(f"default: {default}")
        if param.envvar:
            extra.append(f"env: {param.envvar}")
        text = param.help or ""
        return name, f"{text}  [{'; '.join(extra)}]" if extra else text


class OneLineErrors(TyperGroup):
    """Argument errors as one line and a hint (`genome-index: error: ... (see CMD --help)`), as
    every other error is, instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("genome-index: interrupted", err=True)
            sys.exit(130)
        except typer.TyperException as exc:  # click's usage and parameter errors (typer vendors click)
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"genome-index: error: {exc.format_message()}{hint}", err=True)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(code if isinstance(code, int) else 0)
