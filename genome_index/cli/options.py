"""Options shared by several commands: their names, help and defaults come from `settings`."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from genome_index.config import load as load_config
from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, help_of, shown_default


def opt(name: str, *flags: str, **extra: Any) -> Any:
    """A typer option whose help text and shown default come from `settings` (written there once)."""
    shown = shown_default(name)
    return typer.Option(*flags, help=help_of(name), **({"show_default": shown} if shown else {}), **extra)


# Options that are settings: their names, help and defaults live in genome_index.settings.
Model = Annotated[str | None, opt("model", "--model", "-m", metavar="MODEL")]
Layer = Annotated[int | None, opt("layer")]
ChunkTokens = Annotated[int | None, opt("chunk_tokens")]
Chunking = Annotated[str | None, opt("chunking", metavar="[anchored|fixed]")]
Overlap = Annotated[int | None, opt("overlap")]
TrustRemoteCode = Annotated[
    bool | None, opt("trust_remote_code", "--trust-remote-code", envvar="GENOME_INDEX_TRUST_REMOTE_CODE")
]
Pooling = Annotated[str | None, opt("pooling", metavar="[mean|cls|last]")]
ModelPackage = Annotated[
    str | None, opt("model_package", "--model-package", metavar="PACKAGE", envvar="GENOME_INDEX_MODEL_PACKAGE")
]
Device = Annotated[str, opt("device", metavar="DEVICE")]
Dtype = Annotated[str, opt("dtype", metavar="[auto|float32|bfloat16|float16]")]
BatchTokens = Annotated[int | None, opt("batch_tokens")]
Compile = Annotated[bool, opt("compile", "--compile")]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray", metavar="auto|ADDRESS", envvar="GENOME_INDEX_RAY",
        help="Embed on a Ray actor pool: auto (the cluster at $RAY_ADDRESS or one `ray start`ed on this machine, "
        "else a new local Ray with this machine's GPUs) or a cluster's address (host:6379). Needs the [ray] extra.",
    ),
]  # fmt: skip
RayActors = Annotated[
    int | None,
    typer.Option(
        "--ray-actors", metavar="N", help="Embedding actors on Ray (each loads the model once).",
        show_default="one per GPU; on CPUs, half of them",
    ),
]  # fmt: skip
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
IndexDir = Annotated[
    Path | None,
    typer.Option("--index", "-i", help="Store folder.", show_default="$GENOME_INDEX, else ./genome-index"),
]
Format = Annotated[str, typer.Option("--format", "-f", help="Output format.", metavar="[table|tsv|csv|json]")]
Columns = Annotated[
    str | None,
    typer.Option(
        "--columns", "-c", help="Comma-separated columns to print, in any format.",
        show_default="in a table, a few that fit a terminal; else all",
    ),
]  # fmt: skip


def model_options(
    model: str | None, layer: int | None = None, chunk_tokens: int | None = None, chunking: str | None = None,
    overlap: int | None = None, trust_remote_code: bool | None = None, pooling: str | None = None,
    model_package: str | None = None,
) -> ModelOptions:  # fmt: skip
    return ModelOptions(
        model=model, layer=layer, chunk_tokens=chunk_tokens, chunking=chunking, overlap=overlap,
        trust_remote_code=trust_remote_code, pooling=pooling, model_package=model_package,
    )  # fmt: skip


def index_dir(flag: Path | None) -> Path:
    """--index (or the config file's index), else $GENOME_INDEX, else ./genome-index."""
    return load_config().index(flag)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4)."""
    if value is None:
        return None
    try:
        i, n = (int(part) for part in str(value).split("/"))
    except ValueError:
        raise GenomeIndexError(f"--shard {value!r}: write it as I/N, e.g. 2/4") from None
    return i, n


def check_format(fmt: str) -> None:
    from genome_index.cli.output import FORMATS

    if fmt not in FORMATS:
        raise GenomeIndexError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")


@contextlib.contextmanager
def stdin_as_file(paths: list[Path]) -> Iterator[list[Path]]:
    """The paths with `-` replaced by standard input, copied to a temporary `stdin.fa` first:
    a build or a query reads its input more than once, which a pipe cannot give."""
    if Path("-") not in paths:
        yield paths
        return
    if sys.stdin.isatty():
        raise GenomeIndexError("`-` reads FASTA from standard input, but nothing is piped in")
    with tempfile.TemporaryDirectory(prefix="genome-index-stdin-") as folder:
        spooled = Path(folder) / "stdin.fa"
        with open(spooled, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield [spooled if path == Path("-") else path for path in paths]
