"""The `genome-index` command line: a thin typer veneer; every command is a call into the library."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, QueryOptions, RunOptions, StoreOptions, help_of, option_types


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


app = typer.Typer(
    cls=OneLineErrors,
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


CONFIG_FILE = "genome-index.toml"
TYPE_NAMES = {str: "string", int: "whole number", float: "number", bool: "true or false", list: "list of paths"}
FILE_ONLY_TYPES = {"inputs": list, "index": str, "labels": str, "shard": str}  # TOML keys besides the settings
# Options that run code: a file that travels with data (a cloned folder) must never turn them on.
NOT_FROM_FILES = {
    "trust_remote_code": "pass --trust-remote-code (or set GENOME_INDEX_TRUST_REMOTE_CODE=1) yourself",
    "model_package": "pass --model-package yourself",
}


def read_config() -> dict[str, Any]:
    """Options from ./genome-index.toml, if there is one."""
    path = Path(CONFIG_FILE)
    if not path.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GenomeIndexError(f"{path}: not valid TOML ({exc})") from None
    types = {**option_types(), **FILE_ONLY_TYPES}
    for key, value in config.items():
        if key in NOT_FROM_FILES:
            raise GenomeIndexError(
                f"{path}: {key} cannot come from a file that travels with data; {NOT_FROM_FILES[key]}"
            )
        if key not in types:
            raise GenomeIndexError(f"{path}: unknown option {key!r}; known: {sorted(set(types) - set(NOT_FROM_FILES))}")
        if key == "inputs" and isinstance(value, str):
            config[key] = value = [value]
        if not _of_type(value, types[key]):
            raise GenomeIndexError(f"{path}: {key} = {value!r} should be a {TYPE_NAMES[types[key]]}")
    return config


def _of_type(value: Any, wanted: type) -> bool:
    """A TOML value of the option's type (true/false is no number, a whole number is a number)."""
    if wanted is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, wanted) and isinstance(value, bool) == (wanted is bool)


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
        config = read_config()
    except GenomeIndexError as exc:
        typer.echo(f"genome-index: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if config:  # genome-index.toml gives the defaults of every command's matching options
        commands = ctx.command.commands  # type: ignore[attr-defined]
        ctx.default_map = {
            name: {key: value for key, value in config.items() if key in {p.name for p in command.params}}
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


def opt(name: str, *flags: str, **extra: Any) -> Any:
    """A typer option whose help text comes from `settings` (written there once)."""
    return typer.Option(*flags, help=help_of(name), **extra)


# Options that are settings: their names, help and defaults live in genome_index.settings.
Model = Annotated[str | None, opt("model", "--model", "-m")]
Layer = Annotated[int | None, opt("layer")]
ChunkTokens = Annotated[int | None, opt("chunk_tokens")]
Chunking = Annotated[str | None, opt("chunking")]
Overlap = Annotated[int | None, opt("overlap")]
TrustRemoteCode = Annotated[
    bool | None, opt("trust_remote_code", "--trust-remote-code", envvar="GENOME_INDEX_TRUST_REMOTE_CODE")
]
Pooling = Annotated[str | None, opt("pooling")]
ModelPackage = Annotated[str | None, opt("model_package")]
Device = Annotated[str, opt("device")]
Dtype = Annotated[str, opt("dtype")]
BatchTokens = Annotated[int | None, opt("batch_tokens")]
Compile = Annotated[bool, opt("compile", "--compile")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary on stderr.")]
IndexDir = Annotated[
    Path | None,
    typer.Option("--index", "-i", help="Store folder (default: $GENOME_INDEX, else ./genome-index)."),
]
Format = Annotated[str, typer.Option("--format", "-f", help="table, tsv, csv or json.")]


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
    from genome_index.api import default_index_dir

    return flag if flag is not None else default_index_dir()


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
    from genome_index.output import FORMATS

    if fmt not in FORMATS:
        raise GenomeIndexError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")


@app.command()
@user_errors
def embed(
    fasta: Annotated[list[Path], typer.Argument(help="FASTA files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write, one row per chunk.")],
    model: Model = None,
    layer: Layer = None,
    chunk_tokens: ChunkTokens = None,
    chunking: Chunking = None,
    overlap: Overlap = None,
    trust_remote_code: TrustRemoteCode = None,
    pooling: Pooling = None,
    model_package: ModelPackage = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    quiet: Quiet = False,
) -> None:
    """Write raw chunk embeddings (file, genome, record, start, end, n_tokens, embedding) to Parquet."""
    from genome_index.embed import Embedder
    from genome_index.export import write_parquet
    from genome_index.fasta import find_fasta_files
    from genome_index.progress import Shown

    files = find_fasta_files(fasta)
    options = model_options(model, layer, chunk_tokens, chunking, overlap, trust_remote_code, pooling, model_package)
    embedder = Embedder(options, RunOptions(device, dtype, batch_tokens))
    with Shown(quiet).step("embedding", None, "bp", genomes=len(files)) as step:
        rows = write_parquet(embedder.embed_genomes(files, step=step), out, embedder.dim)
    log(
        f"wrote {rows} chunk embeddings of {len(files)} genome(s) to {out} "
        f"(model {embedder.spec.name}, layer {embedder.layer}, dim {embedder.dim})",
        quiet,
    )


@app.command()
@user_errors
def build(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="FASTA files or folders (default: `inputs` in genome-index.toml)."),
    ] = None,
    index: IndexDir = None,
    model: Model = None,
    layer: Layer = None,
    chunk_tokens: ChunkTokens = None,
    chunking: Chunking = None,
    overlap: Overlap = None,
    trust_remote_code: TrustRemoteCode = None,
    pooling: Pooling = None,
    model_package: ModelPackage = None,
    index_type: Annotated[str | None, opt("index_type")] = None,
    vector_dtype: Annotated[str | None, opt("vector_dtype")] = None,
    sketch_scaled: Annotated[int | None, opt("sketch_scaled")] = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    compile: Compile = RunOptions.compile,
    labels: Annotated[
        Path | None, typer.Option(help="CSV with a `file` or `name` column and any label columns.")
    ] = None,
    labels_from_duplicates: Annotated[
        bool,
        typer.Option(
            "--labels-from-duplicates", help="Let a duplicate file's labels replace those of the genome it repeats."
        ),
    ] = False,
    shard: Annotated[
        str | None, typer.Option(help="I/N: embed only the I-th of N slices of the inputs (see `merge`).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Embed FASTA genomes into a store; the first build fixes its model, layer and windows.

    Options left out follow the store (or their defaults for a new one). Every option may also
    come from ./genome-index.toml; flags given here win.
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    if not inputs:
        raise GenomeIndexError("no input: give FASTA files or folders, or `inputs` in genome-index.toml")
    store = GenomeIndex(index_dir(index))
    report = store.build(
        inputs,
        model_options(model, layer, chunk_tokens, chunking, overlap, trust_remote_code, pooling, model_package),
        StoreOptions(index_type, vector_dtype, sketch_scaled),
        RunOptions(device, dtype, batch_tokens, compile),
        labels=labels,
        labels_from_duplicates=labels_from_duplicates,
        shard=parse_shard(shard),
        progress=Shown(quiet),
    )
    ignored = set(report.labels_ignored)
    for file, name in report.duplicates:
        note = ", its labels ignored (--labels-from-duplicates applies them)" if file in ignored else ""
        log(f"duplicate: {file} has the same sequence as stored genome {name!r}; not embedded again{note}", quiet)
    chunks = sum(n for _, _, n in report.added)
    rate = report.bases / report.seconds / 1e6 if report.seconds else 0.0
    summary = (
        f"added {len(report.added)} genome(s), {chunks} chunks, {report.bases / 1e6:.2f} Mbp "
        f"in {report.seconds:.1f} s ({rate:.2f} Mbp/s) to {store.directory}"
    )
    if not report.added:
        summary = f"nothing new to add to {store.directory}"
    if report.already:
        summary += f"; {len(report.already)} already stored"
    if report.duplicates:
        summary += f"; {len(report.duplicates)} duplicate(s) skipped"
    if report.labelled:
        summary += f"; labels set on {report.labelled}"
    log(summary, quiet)


@app.command()
@user_errors
def query(
    fasta: Annotated[Path, typer.Argument(help="Query FASTA (a genome, contig or fragment).")],
    k: Annotated[int, opt("k", "-k")] = QueryOptions.k,
    index: IndexDir = None,
    mode: Annotated[str, opt("mode")] = QueryOptions.mode,
    per_record: Annotated[bool, opt("per_record", "--per-record")] = QueryOptions.per_record,
    window_overlap: Annotated[float | None, opt("window_overlap")] = None,
    frames: Annotated[bool | None, opt("frames", "--frames/--no-frames")] = None,
    center: Annotated[bool, opt("center", "--center/--no-center")] = QueryOptions.center,
    rerank: Annotated[bool, opt("rerank", "--rerank/--no-rerank")] = QueryOptions.rerank,
    fmt: Format = "table",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Must be the store's model (read from the store anyway).")
    ] = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    quiet: Quiet = False,
) -> None:
    """Nearest stored genomes to a sequence, with the store's own model, layer and pooling."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render_dicts
    from genome_index.progress import Shown

    check_format(fmt)
    store = GenomeIndex.open(index_dir(index))
    options = QueryOptions(k, mode, per_record, window_overlap, frames, center, rerank)
    rows = store.query(fasta, options, RunOptions(device, dtype, batch_tokens), model=model, progress=Shown(quiet))
    typer.echo(render_dicts(rows, fmt), nl=False)


@app.command()
@user_errors
def sql(
    statement: Annotated[str, typer.Argument(help="One SQL statement (read-only).")],
    index: IndexDir = None,
    fmt: Format = "table",
    timeout: Annotated[float, typer.Option(help="Stop the statement after this many seconds.")] = 60.0,
    memory_limit: Annotated[str, typer.Option(help="Memory the statement may use, e.g. 2GB.")] = "2GB",
) -> None:
    """Run read-only SQL over the store's tables (genomes, records, chunks, labels, ...)."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render

    check_format(fmt)
    columns, rows = GenomeIndex.open(index_dir(index)).sql(statement, timeout, memory_limit)
    typer.echo(render(columns, rows, fmt), nl=False)


@app.command()
@user_errors
def info(index: IndexDir = None, fmt: Format = "table") -> None:
    """Settings, counts, vector dimension, index type and disk use of a store."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render

    check_format(fmt)
    details = GenomeIndex.open(index_dir(index)).info()
    rows: list[tuple[str, Any]] = [("directory", details["directory"])]
    rows += [(f"count.{k}", v) for k, v in details["counts"].items()]
    rows.append(("count.bases", details["bases"]))
    rows += [(f"setting.{k}", v) for k, v in sorted(details["settings"].items())]
    rows += [(f"disk.{k}", v) for k, v in details["disk_bytes"].items()]
    typer.echo(render(["key", "value"], rows, fmt), nl=False)


@app.command()
@user_errors
def remove(
    genomes: Annotated[list[str], typer.Argument(help="Genome names or ids.")],
    index: IndexDir = None,
    quiet: Quiet = False,
) -> None:
    """Remove genomes: their rows, vectors and index entries."""
    from genome_index.api import GenomeIndex

    removed = GenomeIndex.open(index_dir(index)).remove(genomes)
    for gid, name in removed:
        log(f"removed genome {gid} {name}", quiet)


@app.command()
@user_errors
def reindex(
    index: IndexDir = None,
    index_type: Annotated[str | None, typer.Option(help="Change the chunk index type: flat, hnsw or ivf-pq.")] = None,
    quiet: Quiet = False,
) -> None:
    """Rebuild the FAISS files from the vectors stored in DuckDB (optionally as another type)."""
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    sizes = GenomeIndex.open(index_dir(index)).reindex(index_type, Shown(quiet))
    log(f"rebuilt FAISS indexes: {sizes['chunks']} chunk vectors, {sizes['genomes']} genome vectors", quiet)


@app.command()
@user_errors
def merge(
    out: Annotated[Path, typer.Argument(help="Store to merge into (created if missing).")],
    stores: Annotated[list[Path], typer.Argument(help="Stores built with the same settings.")],
    quiet: Quiet = False,
) -> None:
    """Merge stores (e.g. shards built on several GPUs) into one; duplicates are skipped."""
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    report = GenomeIndex(out).merge(stores, Shown(quiet))
    chunks = sum(n for _, _, n in report.added)
    log(
        f"merged {len(report.added)} genome(s), {chunks} chunks into {out}"
        + (f"; {len(report.duplicates)} already there, skipped" if report.duplicates else ""),
        quiet,
    )


@app.command()
@user_errors
def compare(
    index: IndexDir = None,
    label: Annotated[str | None, typer.Option(help="Label column to colour and summarise by.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the matrix, plots and summary.")] = Path(
        "compare"
    ),
    ani: Annotated[
        bool, typer.Option("--ani", help="Also whole-genome ANI of every pair with skani (ani.tsv), from the files.")
    ] = False,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """Genome-by-genome cosine matrix, clustered heatmap, PCA/UMAP maps and a label summary."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render_dicts
    from genome_index.progress import Shown

    check_format(fmt)
    result = GenomeIndex.open(index_dir(index)).compare(out, label, ani, Shown(quiet))
    typer.echo(render_dicts(result["summary"], fmt), nl=False)
    log("wrote " + ", ".join(result["files"].values()), quiet)


@app.command()
@user_errors
def evaluate(
    fasta: Annotated[list[Path], typer.Argument(help="Labelled FASTA genomes (files or folders).")],
    labels: Annotated[Path, typer.Option(help="CSV with a `file` or `name` column and the label column.")],
    label: Annotated[str, typer.Option(help="The label column to separate, e.g. species.")],
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="Model to evaluate (repeat for several; kmer:K too).")
    ],
    layers: Annotated[str, typer.Option(help="'all' or a list such as 0,4,8,-1.")] = "all",
    chunk_tokens: ChunkTokens = None,
    chunking: Chunking = None,
    trust_remote_code: TrustRemoteCode = None,
    pooling: Pooling = None,
    model_package: ModelPackage = None,
    ani: Annotated[
        bool,
        typer.Option(
            "--ani",
            help="Correlate each layer's cosine with whole-genome ANI (skani) over pairs >= 80 %; with --plot, "
            "also a scatter (PLOT-ani.png).",
        ),
    ] = False,
    fmt: Format = "table",
    plot: Annotated[Path | None, typer.Option(help="PNG of accuracy by layer, one line per model.")] = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    quiet: Quiet = False,
) -> None:
    """Score every (model, layer) on a label: nearest-neighbour accuracy, within/between, silhouette."""
    from genome_index.evaluate import evaluate as run_evaluate
    from genome_index.output import render_dicts
    from genome_index.progress import Shown

    check_format(fmt)
    windows = model_options(
        None, chunk_tokens=chunk_tokens, chunking=chunking, trust_remote_code=trust_remote_code, pooling=pooling,
        model_package=model_package,
    )  # fmt: skip
    pairs: dict = {}
    rows = run_evaluate(
        fasta, labels, label, model, layers, windows, RunOptions(device, dtype, batch_tokens),
        progress=Shown(quiet), ani=ani, pairs=pairs,
    )  # fmt: skip
    typer.echo(render_dicts(rows, fmt), nl=False)
    if plot is not None:
        from genome_index.compare import plot_accuracy_by_layer, plot_ani

        plot_accuracy_by_layer(plot, rows)
        log(f"wrote {plot}", quiet)
        if ani:
            scatter = plot.with_name(f"{plot.stem}-ani{plot.suffix}")
            plot_ani(scatter, pairs, rows)
            log(f"wrote {scatter}", quiet)


@app.command()
@user_errors
def check(
    index: IndexDir = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Only DuckDB's consistency queries: no block reads, no FAISS files.")
    ] = False,
) -> None:
    """Verify a store: complete genomes, chunk coverage, vectors, sketches, FAISS ids equal to DuckDB's."""
    from genome_index.api import GenomeIndex

    store = GenomeIndex.open(index_dir(index))
    problems = store.check(quick)
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise GenomeIndexError(
            f"{store.directory}: {len(problems)} problem(s); `genome-index reindex` repairs FAISS files"
        )
    typer.echo(f"{store.directory}: consistent")


def main() -> None:
    app(prog_name="genome-index")


if __name__ == "__main__":
    sys.exit(main())
