"""The `genome-index` command line: a thin typer veneer; every command is a call into the library."""

from __future__ import annotations

import functools
import logging
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


class _StderrHandler(logging.Handler):
    """Log records as plain lines on whatever sys.stderr is at the moment of writing."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def _setup_logging() -> None:
    logger = logging.getLogger("genome_index")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Embed genome assemblies with DNA transformers; search them with FAISS and SQL."""
    _setup_logging()


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


Model = Annotated[str, typer.Option("--model", "-m", help="nt-tiny, a local checkpoint folder or a Hub id.")]
Layer = Annotated[
    int | None,
    typer.Option(help="Hidden state to pool: 0 = embedding output, default the last, negative from the end."),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")]
BatchTokens = Annotated[int | None, typer.Option(help="Tokens per batch (default 65536 on CUDA, 8192 on CPU).")]
ChunkTokens = Annotated[
    int | None, typer.Option(help="Tokens per chunk, <cls> included (default: the model's maximum).")
]
Overlap = Annotated[int, typer.Option(help="Tokens shared by consecutive fixed windows of a record.")]
CHUNKING_HELP = "anchored (cut where the sequence says, so shared sequence gets the same windows) or fixed."
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
    chunking: Annotated[str | None, typer.Option(help=CHUNKING_HELP + " Default anchored.")] = None,
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
    from genome_index.tokenize import DEFAULT_CHUNKING

    files = find_fasta_files(fasta)
    embedder = Embedder(
        model, layer, device, dtype, batch_tokens, chunk_tokens, overlap, trust_remote_code,
        chunking=chunking or DEFAULT_CHUNKING,
    )  # fmt: skip
    with GenomeProgress("embedding", quiet, total=len(files)) as progress:

        def items():  # type: ignore[no-untyped-def]
            for item in embedder.embed_genomes(files):
                progress(item.genome.length)
                yield item

        rows = write_parquet(items(), out, embedder.dim)
    log(
        f"wrote {rows} chunk embeddings of {len(files)} genome(s) to {out} "
        f"(model {model}, layer {embedder.layer}, dim {embedder.dim})",
        quiet,
    )


IndexDir = Annotated[
    Path | None,
    typer.Option("--index", "-i", help="Store folder (default: $GENOME_INDEX, else ./genome-index)."),
]
Format = Annotated[str, typer.Option("--format", "-f", help="table, tsv, csv or json.")]
CONFIG_FILE = "genome-index.toml"
CONFIG_KEYS = {
    "inputs", "index", "model", "layer", "chunk_tokens", "chunking", "overlap", "device", "dtype", "batch_tokens",
    "labels", "trust_remote_code", "index_type", "vector_dtype", "sketch_scaled", "shard", "compile",
}  # fmt: skip


def read_config() -> dict[str, Any]:
    """Options from ./genome-index.toml, if there is one (flags given on the command line win)."""
    path = Path(CONFIG_FILE)
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GenomeIndexError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise GenomeIndexError(f"{path}: unknown option(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
    if isinstance(config.get("inputs"), str):
        config["inputs"] = [config["inputs"]]
    return config


def index_dir(flag: Path | None, config: dict[str, Any] | None = None) -> Path:
    """--index, else the config file's index, else $GENOME_INDEX, else ./genome-index."""
    from genome_index.api import default_index_dir

    if flag is not None:
        return flag
    if config and config.get("index"):
        return Path(config["index"])
    return default_index_dir()


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
def build(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="FASTA files or folders (default: `inputs` in genome-index.toml)."),
    ] = None,
    index: IndexDir = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="nt-tiny, a checkpoint folder or a Hub id (default: the store's, else NT 2.5B).",
        ),
    ] = None,
    layer: Layer = None,
    chunk_tokens: ChunkTokens = None,
    chunking: Annotated[str | None, typer.Option(help=CHUNKING_HELP + " Default anchored.")] = None,
    overlap: Annotated[int | None, typer.Option(help="Tokens shared by consecutive fixed windows (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16.")] = None,
    batch_tokens: BatchTokens = None,
    labels: Annotated[
        Path | None, typer.Option(help="CSV with a `file` or `name` column and any label columns.")
    ] = None,
    trust_remote_code: Annotated[
        bool | None, typer.Option("--trust-remote-code", help="Allow a Hub model to run its own Python code.")
    ] = None,
    index_type: Annotated[
        str | None,
        typer.Option(help="Chunk index: flat (exact, default), hnsw or ivf-pq. Fixed by the first build."),
    ] = None,
    vector_dtype: Annotated[
        str | None,
        typer.Option(help="Vectors kept in DuckDB as float32 (default) or float16 (half the disk)."),
    ] = None,
    sketch_scaled: Annotated[
        int | None,
        typer.Option(help="Re-rank sketch keeps 1 in N canonical 21-mers (default 1000; smaller: finer, more disk)."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: embed only the I-th of N slices of the inputs (see `merge`).")
    ] = None,
    compile_model: Annotated[
        bool | None, typer.Option("--compile", help="torch.compile the model (CUDA only; ignored on CPU).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Embed FASTA genomes into a store; the first build fixes its model, layer and chunking."""
    from genome_index.api import GenomeIndex
    from genome_index.progress import GenomeProgress

    config = read_config()
    inputs = [str(p) for p in paths] if paths else config.get("inputs")
    if not inputs:
        raise GenomeIndexError("no input: give FASTA files or folders, or `inputs` in genome-index.toml")
    store = GenomeIndex(index_dir(index, config))

    def pick(value: Any, key: str, default: Any = None) -> Any:
        return value if value is not None else config.get(key, default)

    with GenomeProgress("building", quiet) as progress:
        report = store.build(
            inputs,
            model=pick(model, "model"),
            layer=pick(layer, "layer"),
            chunk_tokens=pick(chunk_tokens, "chunk_tokens"),
            overlap=pick(overlap, "overlap"),
            chunking=pick(chunking, "chunking"),
            device=pick(device, "device", "auto"),
            dtype=pick(dtype, "dtype", "auto"),
            batch_tokens=pick(batch_tokens, "batch_tokens"),
            labels=pick(labels, "labels"),
            trust_remote_code=bool(pick(trust_remote_code, "trust_remote_code", False)),
            index_type=pick(index_type, "index_type"),
            vector_dtype=pick(vector_dtype, "vector_dtype"),
            sketch_scaled=pick(sketch_scaled, "sketch_scaled"),
            shard=parse_shard(pick(shard, "shard")),
            compile=bool(pick(compile_model, "compile", False)),
            on_progress=progress,
        )
    for file, name in report.duplicates:
        log(f"duplicate: {file} has the same sequence as stored genome {name!r}; not embedded again", quiet)
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
    k: Annotated[int, typer.Option("-k", help="Genomes to report per query.")] = 10,
    index: IndexDir = None,
    mode: Annotated[
        str,
        typer.Option(
            help="auto (genome for queries of 1 Mbp or more, else chunks), genome (the query's mean vector "
            "vs genome vectors) or chunks (chunk-by-chunk votes)."
        ),
    ] = "auto",
    per_record: Annotated[bool, typer.Option("--per-record", help="Each record is its own query.")] = False,
    window_overlap: Annotated[
        float | None, typer.Option(help="Overlap of query windows, a fraction of a window (default 0).")
    ] = None,
    frames: Annotated[
        bool | None,
        typer.Option("--frames/--no-frames", help="Embed all k frames of a k-mer model (default: in chunks mode)."),
    ] = None,
    center: Annotated[
        bool, typer.Option("--center/--no-center", help="Subtract the store's mean vector before the cosine.")
    ] = True,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="Re-order the best 20 hits by k-mer containment.")
    ] = True,
    fmt: Format = "table",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Must be the store's model (read from the store anyway).")
    ] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_tokens: BatchTokens = None,
) -> None:
    """Nearest stored genomes to a sequence, with the store's own model, layer and pooling."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render_dicts

    check_format(fmt)
    store = GenomeIndex.open(index_dir(index, read_config()))
    rows = store.query(
        fasta, k=k, mode=mode, per_record=per_record, window_overlap=window_overlap, frames=frames,
        center=center, rerank=rerank, device=device, dtype=dtype, model=model, batch_tokens=batch_tokens,
    )  # fmt: skip
    typer.echo(render_dicts(rows, fmt), nl=False)


@app.command()
@user_errors
def sql(
    statement: Annotated[str, typer.Argument(help="One SQL statement (read-only).")],
    index: IndexDir = None,
    fmt: Format = "table",
) -> None:
    """Run read-only SQL over the store's tables (genomes, records, chunks, labels, ...)."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render

    check_format(fmt)
    columns, rows = GenomeIndex.open(index_dir(index, read_config())).sql(statement)
    typer.echo(render(columns, rows, fmt), nl=False)


@app.command()
@user_errors
def info(index: IndexDir = None, fmt: Format = "table") -> None:
    """Settings, counts, vector dimension, index type and disk use of a store."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render

    check_format(fmt)
    details = GenomeIndex.open(index_dir(index, read_config())).info()
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

    removed = GenomeIndex.open(index_dir(index, read_config())).remove(genomes)
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

    sizes = GenomeIndex.open(index_dir(index, read_config())).reindex(index_type)
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
    from genome_index.progress import GenomeProgress

    with GenomeProgress("merging", quiet) as progress:
        report = GenomeIndex(out).merge(stores, on_progress=progress)
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
    fmt: Format = "table",
) -> None:
    """Genome-by-genome cosine matrix, clustered heatmap, PCA/UMAP maps and a label summary."""
    from genome_index.api import GenomeIndex
    from genome_index.output import render_dicts

    check_format(fmt)
    result = GenomeIndex.open(index_dir(index, read_config())).compare(out, label)
    typer.echo(render_dicts(result["summary"], fmt), nl=False)
    log("wrote " + ", ".join(result["files"].values()))


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
    fmt: Format = "table",
    plot: Annotated[Path | None, typer.Option(help="PNG of accuracy by layer, one line per model.")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    quiet: Quiet = False,
) -> None:
    """Score every (model, layer) on a label: nearest-neighbour accuracy, within/between, silhouette."""
    from genome_index.evaluate import evaluate as run_evaluate
    from genome_index.output import render_dicts
    from genome_index.progress import GenomeProgress

    check_format(fmt)
    with GenomeProgress("evaluating", quiet) as progress:
        rows = run_evaluate(fasta, labels, label, model, layers, device, dtype, on_progress=progress)
    typer.echo(render_dicts(rows, fmt), nl=False)
    if plot is not None:
        from genome_index.compare import plot_accuracy_by_layer

        plot_accuracy_by_layer(plot, rows)
        log(f"wrote {plot}", quiet)


@app.command()
@user_errors
def check(index: IndexDir = None) -> None:
    """Verify a store: complete genomes, chunk coverage, vectors, FAISS ids equal to DuckDB's."""
    from genome_index.api import GenomeIndex

    store = GenomeIndex.open(index_dir(index, read_config()))
    problems = store.check()
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
