"""The `genome-index` command line: a thin typer veneer; every command is a call into the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from genome_index.errors import GenomeIndexError

app = typer.Typer(
    help="Embed genome assemblies with DNA transformers; search them with FAISS and SQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from genome_index import __version__

        typer.echo(f"genome-index {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Embed genome assemblies with DNA transformers; search them with FAISS and SQL."""


def user_errors(func: F) -> F:
    """Turn GenomeIndexError into one line on stderr and exit status 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GenomeIndexError as exc:
            typer.echo(f"genome-index: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("genome-index: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def log(message: str, quiet: bool = False) -> None:
    """Human-readable progress and summaries go to stderr, never mixed with results."""
    if not quiet:
        typer.echo(message, err=True)


Model = Annotated[str, typer.Option("--model", "-m", help="nt-tiny, a local checkpoint folder or a Hub id.")]
Layer = Annotated[
    int | None,
    typer.Option(help="Hidden state to pool: 0 = embedding output, default the last, negative from the end."),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[
    str, typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")
]
BatchTokens = Annotated[
    int | None, typer.Option(help="Tokens per batch (default 65536 on CUDA, 8192 on CPU).")
]
ChunkTokens = Annotated[
    int | None, typer.Option(help="Tokens per chunk, <cls> included (default: the model's maximum).")
]
Overlap = Annotated[int, typer.Option(help="Tokens shared by consecutive chunks of a record.")]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a Hub model to run its own Python code.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary on stderr.")]


@app.command()
@user_errors
def embed(
    fasta: Annotated[list[Path], typer.Argument(help="FASTA files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write, one row per chunk.")],
    model: Model = "nt-tiny",
    layer: Layer = None,
    chunk_tokens: ChunkTokens = None,
    overlap: Overlap = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_tokens: BatchTokens = None,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
) -> None:
    """Write raw chunk embeddings (file, genome, record, start, end, n_tokens, embedding) to Parquet."""
    from genome_index.embed import Embedder
    from genome_index.export import write_parquet
    from genome_index.fasta import find_fasta_files
    from genome_index.progress import GenomeProgress

    files = find_fasta_files(fasta)
    embedder = Embedder(model, layer, device, dtype, batch_tokens, chunk_tokens, overlap, trust_remote_code)
    with GenomeProgress(len(files), "embedding", quiet) as progress:

        def items():  # type: ignore[no-untyped-def]
            for item in embedder.embed_genomes(files):
                progress.advance(item.genome.length)
                yield item

        rows = write_parquet(items(), out, embedder.dim)
    log(
        f"wrote {rows} chunk embeddings of {len(files)} genome(s) to {out} "
        f"(model {model}, layer {embedder.layer}, dim {embedder.dim})",
        quiet,
    )


def main() -> None:
    app(prog_name="genome-index")


if __name__ == "__main__":
    sys.exit(main())
