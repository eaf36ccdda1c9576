"""The `genome-index` command line: a thin typer veneer; every command is a call into the library."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.completion import completion_init

from genome_index.cli.help import HelpCommand, OneLineErrors
from genome_index.config import load as load_config
from genome_index.errors import GenomeIndexError
from genome_index.settings import (
    ModelOptions,
    QueryOptions,
    RunOptions,
    StoreOptions,
    help_of,
    shown_default,
)

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


@command()
@user_errors
def embed(
    fasta: Annotated[
        list[Path],
        typer.Argument(help="FASTA files or folders (searched recursively); - reads stdin.", metavar="FASTA"),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parquet file to write, one row per chunk (with --ray: a new folder).")
    ],
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
    ray: Ray = None,
    ray_actors: RayActors = None,
    quiet: Quiet = False,
) -> None:
    """Write chunk embeddings of FASTA files to Parquet.

    One row per window: file, genome, record, start, end, n_tokens, embedding. The file's
    metadata names the model, its revision, the layer, the windows and the tool version.
    With --ray, the inputs are embedded on a Ray cluster and written as a Parquet dataset
    (one or more files with these columns) into the folder --out.

    \b
    Examples:
      genome-index embed genomes/ -o chunks.parquet -m nt-tiny
      genome-index embed plasmid.fa -o plasmid.parquet -m ./my-checkpoint --layer 20
      zcat genome.fna.gz | genome-index embed - -o genome.parquet -m kmer:6
      genome-index embed genomes/ -o chunks/ -m nt-tiny --ray auto
    """
    from genome_index.build.export import embed_to_parquet
    from genome_index.io.fasta import find_fasta_files
    from genome_index.progress import Shown

    with stdin_as_file(fasta) as paths:
        files = find_fasta_files(paths)
        options = model_options(
            model, layer, chunk_tokens, chunking, overlap, trust_remote_code, pooling, model_package
        )
        rows, settings = embed_to_parquet(
            files, out, options, RunOptions(device, dtype, batch_tokens), ray, ray_actors, Shown(quiet)
        )
    where = f"the Parquet dataset {out}/" if ray is not None else str(out)
    log(
        f"wrote {rows} chunk embeddings of {len(files)} genome(s) to {where} "
        f"(model {settings.model}, layer {settings.layer}, dim {settings.dim})",
        quiet,
    )


@command()
@user_errors
def build(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="FASTA files or folders (searched recursively); - reads stdin.",
            metavar="FASTA",
            show_default="`inputs` in genome-index.toml",
        ),
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
    index_type: Annotated[str | None, opt("index_type", metavar="[flat|hnsw|ivf-pq]")] = None,
    vector_dtype: Annotated[str | None, opt("vector_dtype", metavar="[float32|float16]")] = None,
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
        str | None,
        typer.Option(help="Embed only the I-th of N slices of the inputs (see `merge`).", metavar="I/N"),
    ] = None,
    ray: Ray = None,
    ray_actors: RayActors = None,
    force: Annotated[
        bool, typer.Option("--force", help="Store a file that looks like reads (many records under 300 bp) anyway.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Embed FASTA genomes into a store.

    The first build fixes the store's model, layer and windows; later builds add the new
    genomes (by sequence: a file already stored is skipped) with the same settings. Options
    left out follow the store. Every option may also come from ./genome-index.toml; flags
    given here win. Other commands can read the store while a build runs. With --ray, a
    Ray actor pool embeds (one model per GPU) and this process commits; the inputs must be
    readable at the same paths on every Ray node.

    \b
    Examples:
      genome-index build genomes/ -m nt-tiny
      genome-index build more-genomes/ --labels labels.csv
      genome-index build genomes/ -i kmer-store -m kmer:6
      genome-index build genomes/ -m InstaDeepAI/nucleotide-transformer-2.5b-multi-species --layer 20
      genome-index build genomes/ --ray auto
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    if not inputs:
        raise GenomeIndexError("no input: give FASTA files or folders, or `inputs` in genome-index.toml")
    if ray_actors is not None and ray is None:
        raise GenomeIndexError("--ray-actors applies with --ray")
    if quiet:  # the duplicates a build names as it finds them are part of its report
        logging.getLogger("genome_index").setLevel(logging.WARNING)
    store = GenomeIndex(index_dir(index))
    with stdin_as_file(inputs) as paths:
        report = store.build(
            paths,
            model_options(model, layer, chunk_tokens, chunking, overlap, trust_remote_code, pooling, model_package),
            StoreOptions(index_type, vector_dtype, sketch_scaled),
            RunOptions(device, dtype, batch_tokens, compile),
            labels=labels,
            labels_from_duplicates=labels_from_duplicates,
            shard=parse_shard(shard),
            progress=Shown(quiet),
            ray_address=ray,
            ray_actors=ray_actors,
            force=force,
        )
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


@command()
@user_errors
def query(
    fasta: Annotated[
        Path, typer.Argument(help="Query FASTA: a genome, contig or fragment; - reads stdin.", metavar="FASTA")
    ],
    k: Annotated[int, opt("k", "-k", "--top")] = QueryOptions.k,
    index: IndexDir = None,
    mode: Annotated[str, opt("mode", metavar="[auto|genome|chunks]")] = QueryOptions.mode,
    per_record: Annotated[bool, opt("per_record", "--per-record")] = QueryOptions.per_record,
    window_overlap: Annotated[float | None, opt("window_overlap")] = None,
    frames: Annotated[bool | None, opt("frames", "--frames/--no-frames")] = None,
    center: Annotated[bool, opt("center", "--center/--no-center")] = QueryOptions.center,
    rerank: Annotated[bool, opt("rerank", "--rerank/--no-rerank")] = QueryOptions.rerank,
    align: Annotated[bool | None, opt("align", "--align/--no-align")] = None,
    align_top: Annotated[int, opt("align_top", "--align-top", metavar="N")] = QueryOptions.align_top,
    fmt: Format = "table",
    columns: Columns = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Must be the store's model (it is read from the store).", metavar="MODEL"),
    ] = None,
    trust_remote_code: TrustRemoteCode = None,
    model_package: ModelPackage = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    quiet: Quiet = False,
) -> None:
    """Find the stored genomes nearest to a sequence.

    The query is embedded with the store's own model, layer and windows; the best candidates
    are then aligned with minimap2 (queries up to 6 Mbp, or --align) and ranked by identity x
    coverage. Rows carry the cosine score, the sketch figures, the alignment (identity,
    aligned_bp, query_coverage, where in the genome), the rank key (ranked_by; equal keys
    share a rank and are flagged tied), then the genome's labels; the table shows the few
    that fit a terminal, --format json adds every alignment. In chunks mode, support is the
    number of query windows whose best match lies in the genome (identical genomes share a
    window's match, so twins have equal support).

    \b
    Examples:
      genome-index query contig.fa -k 5
      genome-index query assembly.fna.gz --format json --no-align
      genome-index query plasmids.fa --per-record --columns query,rank,name,score
      cat reads.fa | genome-index query -
    """
    from genome_index.api import GenomeIndex
    from genome_index.cli.output import HIT_TABLE_COLUMNS, HIT_TABLE_UNALIGNED, choose, column_names, render_dicts
    from genome_index.progress import Shown
    from genome_index.search.hits import HIT_COLUMNS, label_column

    check_format(fmt)
    store = GenomeIndex.open(index_dir(index))
    hit_columns = [*HIT_COLUMNS, "alignments"] if fmt == "json" else list(HIT_COLUMNS)
    labels = [label_column(key) for key in store.label_names()]
    known = [*hit_columns, *labels]
    choose(known, [], fmt, columns)  # an unknown --columns fails before the model loads
    options = QueryOptions(k, mode, per_record, window_overlap, frames, center, rerank, align, align_top)
    with stdin_as_file([fasta]) as (path,):
        hits = store.query(
            path, options, RunOptions(device, dtype, batch_tokens), model=model, progress=Shown(quiet),
            trust_remote_code=trust_remote_code, model_package=model_package,
        )  # fmt: skip
    rows = [hit.row(alignments=fmt == "json") for hit in hits]
    aligned = any(hit.identity is not None for hit in hits)
    brief = (["query"] if per_record else []) + list(HIT_TABLE_COLUMNS if aligned else HIT_TABLE_UNALIGNED)
    if fmt == "table":  # a tied rank reads `2=`, as in a results table
        rows = [{**row, "rank": f"{row['rank']}=" if row["tied"] else row["rank"]} for row in rows]
    chosen = choose(column_names(rows, known), rows, fmt, columns, brief, labels)
    typer.echo(render_dicts(rows, fmt, chosen), nl=False)


@command()
@user_errors
def extract(
    regions: Annotated[
        list[str],
        typer.Argument(help="GENOME[:RECORD[:START-END]], START-END 1-based and inclusive.", metavar="REGION"),
    ],
    index: IndexDir = None,
    rc: Annotated[bool, typer.Option("--rc", help="Reverse-complement (the name gets /rc).")] = False,
    width: Annotated[
        int | None,
        typer.Option(help="Bases per line; 0 for one line.", metavar="N", show_default="the input file's"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.", metavar="FILE", show_default="stdout")
    ] = None,
) -> None:
    """Write stored sequence as FASTA.

    GENOME is a name or id, RECORD a record name (first word of its header) or number;
    START-END are 1-based and inclusive, like samtools faidx (a query hit's target_start and
    target_end fit as they are). A whole genome comes back byte-identical to its normalised
    input (upper case, the file's line width).

    \b
    Examples:
      genome-index extract BPH2947 > BPH2947.fa
      genome-index extract BPH2947:LR130514.1
      genome-index extract BPH2947:LR130514.1:162276-171382 --rc
    """
    from genome_index.api import GenomeIndex

    if width is not None and width < 0:
        raise GenomeIndexError("--width must be 0 (one line) or more")
    fasta = GenomeIndex.open(index_dir(index)).extract(regions, rc, width)
    if output is None:
        sys.stdout.buffer.write(fasta)
        sys.stdout.flush()
    else:
        try:
            output.write_bytes(fasta)
        except OSError as exc:
            raise GenomeIndexError(f"{output}: cannot write ({exc.strerror})") from None


@command("backfill-sequences")
@user_errors
def backfill_sequences(
    inputs: Annotated[list[Path], typer.Argument(help="The stored genomes' FASTA files or folders.", metavar="INPUTS")],
    index: IndexDir = None,
    quiet: Quiet = False,
) -> None:
    """Store the sequences an older store lacks.

    For stores built before sequences were kept.

    Each file is used only when its sequence's SHA-256 is a stored genome's; extract and
    query --align then work for those genomes. Exit status 1 while some genome still has
    no sequence.

    \b
    Examples:
      genome-index backfill-sequences genomes/
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    store = GenomeIndex.open(index_dir(index))
    report = store.backfill_sequences(inputs, Shown(quiet))
    log(
        f"stored the sequences of {len(report['filled'])} genome(s)"
        + (f"; {len(report['already'])} file(s) had theirs already" if report["already"] else "")
        + (f"; {len(report['unknown'])} file(s) are no genome of this store" if report["unknown"] else ""),
        quiet,
    )
    if report["missing"]:
        shown = ", ".join(report["missing"][:5]) + (", ..." if len(report["missing"]) > 5 else "")
        raise GenomeIndexError(f"{len(report['missing'])} genome(s) still have no sequence: {shown}")


@command()
@user_errors
def serve(
    index: IndexDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.", metavar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", metavar="PORT")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="A file holding the bearer token clients must send.", metavar="FILE"),
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Listen beyond this machine without a token.")] = False,
    max_query_bytes: Annotated[int, typer.Option(help="Largest request body.", metavar="BYTES")] = 50_000_000,
    query_bytes: Annotated[
        int, typer.Option(help="Query bodies handled at once, in bytes (others wait their turn).", metavar="BYTES")
    ] = 50_000_000,
    sql_timeout: Annotated[float, typer.Option(help="Stop SQL after this many seconds.", metavar="SECONDS")] = 10.0,
    sql_memory_limit: Annotated[
        str, typer.Option(help="Memory one SQL statement may use, its planning included.", metavar="SIZE")
    ] = "500MB",
    max_sql: Annotated[int, typer.Option(help="SQL statements run at once.", metavar="N")] = 2,
    queue_wait: Annotated[
        float, typer.Option(help="Seconds a request waits for its turn before a 503.", metavar="SECONDS")
    ] = 5.0,
    compare_dir: Annotated[
        Path | None,
        typer.Option("--compare", help="A `genome-index compare` output folder to show on the page.", metavar="DIR"),
    ] = None,
    trust_remote_code: TrustRemoteCode = None,
    model_package: ModelPackage = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
) -> None:
    """Serve the store over HTTP, with a web page.

    The model loads once; POST /query answers as `query --format json` does, concurrent
    queries are embedded together. Also GET /genomes, /genomes/ID, /info, /health, POST
    /sql, OpenAPI docs at /docs and a web page at /. Listens on 127.0.0.1; another host
    needs --token-file (or --insecure).

    \b
    Examples:
      genome-index serve -i my-index
      curl -s --data-binary @contig.fa 'localhost:8000/query?k=5'
      genome-index serve --host 0.0.0.0 --token-file token.txt --compare compare-out
    """
    from genome_index.api import GenomeIndex
    from genome_index.server.app import serve as run_server
    from genome_index.server.auth import check_host, read_token
    from genome_index.server.limits import Limits

    token = read_token(token_file)
    check_host(host, token, insecure)  # before the store opens
    limits = Limits(
        max_query_bytes=max_query_bytes, query_bytes=query_bytes, sql_timeout=sql_timeout,
        sql_memory=sql_memory_limit, sql=max_sql, queue_wait=queue_wait,
    )  # fmt: skip
    run_server(
        GenomeIndex.open(index_dir(index)), host, port, limits, token, insecure, compare_dir,
        RunOptions(device, dtype, batch_tokens), trust_remote_code=trust_remote_code, model_package=model_package,
    )  # fmt: skip


@command()
@user_errors
def sql(
    statement: Annotated[str, typer.Argument(help="One read-only SQL statement.", metavar="STATEMENT")],
    index: IndexDir = None,
    fmt: Format = "table",
    timeout: Annotated[
        float, typer.Option(help="Stop the statement after this many seconds.", metavar="SECONDS")
    ] = 60.0,
    memory_limit: Annotated[str, typer.Option(help="Memory the statement may use.", metavar="SIZE")] = "2GB",
) -> None:
    """Run read-only SQL over the store.

    Tables: genomes, records, chunks, chunk_vectors, genome_vectors, sketches, labels,
    sequences, settings (the README lists their columns); subsequence(record_id, start,
    "end") gives a window's bases. Writes and file access are refused.

    \b
    Examples:
      genome-index sql "SELECT name, length, gc FROM genomes ORDER BY length DESC LIMIT 5"
      genome-index sql "SELECT key, value, count(*) AS n FROM labels GROUP BY ALL" --format csv
      genome-index sql 'SELECT id, subsequence(record_id, start, "end") FROM chunks LIMIT 2'
    """
    from genome_index.api import GenomeIndex
    from genome_index.cli.output import write_rows

    check_format(fmt)
    with GenomeIndex.open(index_dir(index)).sql_stream(statement, timeout, memory_limit) as result:
        write_rows(result.columns, result.batches(), fmt, sys.stdout.write)
    sys.stdout.flush()


@command()
@user_errors
def info(
    index: IndexDir = None,
    fmt: Format = "table",
    raw_bytes: Annotated[bool, typer.Option("--bytes", help="Sizes in bytes rather than KiB, MiB, GiB.")] = False,
) -> None:
    """Show a store's settings, counts and disk use.

    \b
    Examples:
      genome-index info
      genome-index info -i other-store --format json --bytes
    """
    from genome_index.api import GenomeIndex
    from genome_index.cli.output import human_bytes, render

    check_format(fmt)
    details = GenomeIndex.open(index_dir(index)).info()
    size: Callable[[int], Any] = (lambda n: n) if raw_bytes else human_bytes
    rows: list[tuple[str, Any]] = [("directory", details["directory"])]
    rows += [(f"count.{k}", v) for k, v in details["counts"].items()]
    rows.append(("count.bases", details["bases"]))
    rows += [(f"setting.{k}", v) for k, v in sorted(details["settings"].items())]
    rows += [(f"disk.{k}", size(v)) for k, v in details["disk_bytes"].items()]
    rows.append(("disk.total", size(sum(details["disk_bytes"].values()))))
    typer.echo(render(["key", "value"], rows, fmt), nl=False)


@command()
@user_errors
def remove(
    genomes: Annotated[
        list[str], typer.Argument(help="Genome names or ids (name:X or id:N where both fit).", metavar="GENOME")
    ],
    index: IndexDir = None,
    quiet: Quiet = False,
) -> None:
    """Remove genomes: rows, vectors and index entries.

    \b
    Examples:
      genome-index remove GCA_006094915.1_ASM609491v1_genomic
      genome-index remove id:12 id:13
    """
    from genome_index.api import GenomeIndex

    removed = GenomeIndex.open(index_dir(index)).remove(genomes)
    for gid, name in removed:
        log(f"removed genome {gid} {name}", quiet)


@command()
@user_errors
def reindex(
    index: IndexDir = None,
    index_type: Annotated[
        str | None,
        typer.Option(help="Change the chunk index type.", metavar="[flat|hnsw|ivf-pq]", show_default="the store's"),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Rebuild the FAISS files from the vectors in DuckDB.

    Repairs FAISS files that are missing, damaged or behind (after a full disk), or changes
    the chunk index type.

    \b
    Examples:
      genome-index reindex
      genome-index reindex --index-type hnsw
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    sizes = GenomeIndex.open(index_dir(index)).reindex(index_type, Shown(quiet))
    log(f"rebuilt FAISS indexes: {sizes['chunks']} chunk vectors, {sizes['genomes']} genome vectors", quiet)


@command()
@user_errors
def merge(
    out: Annotated[Path, typer.Argument(help="Store to merge into (created if missing).", metavar="INTO")],
    stores: Annotated[list[Path], typer.Argument(help="Stores built with the same settings.", metavar="STORE")],
    quiet: Quiet = False,
) -> None:
    """Merge stores built with the same settings.

    Genomes already in INTO are skipped; of a sequence stored in several sources, the copy
    whose file sorts first is kept, as a single build would.

    \b
    Examples:
      genome-index build genomes/ -i shard1 --shard 1/2 -m nt-tiny
      genome-index build genomes/ -i shard2 --shard 2/2 -m nt-tiny
      genome-index merge all shard1 shard2
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    report = GenomeIndex(out).merge(stores, Shown(quiet))
    chunks = sum(n for _, _, n in report.added)
    log(
        f"merged {len(report.added)} genome(s), {chunks} chunks into {out}"
        + (f"; {len(report.duplicates)} already there, skipped" if report.duplicates else ""),
        quiet,
    )


@command()
@user_errors
def compare(
    index: IndexDir = None,
    label: Annotated[str | None, typer.Option(help="Label to colour and summarise by.", metavar="LABEL")] = None,
    name_column: Annotated[
        str | None,
        typer.Option(
            help="Label whose value names each genome in the plots.", metavar="LABEL", show_default="the genome name"
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the matrix, plots and summary.")] = Path(
        "compare"
    ),
    plot_format: Annotated[str, typer.Option("--plot-format", help="Plot file type.", metavar="[png|svg|pdf]")] = "png",
    ani: Annotated[
        bool, typer.Option("--ani", help="Also whole-genome ANI of every pair with skani (ani.tsv), from the files.")
    ] = False,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """Compare stored genomes: cosines, heatmap, maps.

    Writes the cosine matrix (TSV), a clustered heatmap with a dendrogram and label colours,
    a PCA map (and UMAP with umap-learn installed), and prints a within/between summary of
    the label.

    \b
    Examples:
      genome-index compare --label species -o compare/
      genome-index compare --label st --name-column strain --plot-format pdf --ani
    """
    from genome_index.api import GenomeIndex
    from genome_index.cli.output import render_dicts
    from genome_index.progress import Shown

    check_format(fmt)
    result = GenomeIndex.open(index_dir(index)).compare(
        out, label, ani, Shown(quiet), name_column=name_column, plot_format=plot_format
    )
    typer.echo(render_dicts(result["summary"], fmt), nl=False)
    log("wrote " + ", ".join(result["files"].values()), quiet)


@command()
@user_errors
def evaluate(
    fasta: Annotated[list[Path], typer.Argument(help="Labelled FASTA genomes (files or folders).", metavar="FASTA")],
    labels: Annotated[Path, typer.Option(help="CSV with a `file` or `name` column and the label column.")],
    label: Annotated[str, typer.Option(help="The label column to separate, e.g. species.", metavar="LABEL")],
    model: Annotated[
        list[str],
        typer.Option("--model", "-m", help="Model to evaluate (repeat for several; kmer:K too).", metavar="MODEL"),
    ],
    layers: Annotated[str, typer.Option(help="all, or a list such as 0,4,8,-1.", metavar="LAYERS")] = "all",
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
    plot: Annotated[
        Path | None, typer.Option(help="Plot of accuracy, gap and silhouette by layer (.png, .svg or .pdf).")
    ] = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    quiet: Quiet = False,
) -> None:
    """Score models and layers by how they separate a label.

    For every (model, layer): nearest-neighbour accuracy, mean cosine within and between
    label groups, their gap, and the silhouette.

    \b
    Examples:
      genome-index evaluate labelled/ --labels labels.csv --label species -m nt-tiny -m kmer:6
      genome-index evaluate labelled/ --labels labels.csv --label species -m ./ckpt --layers 0,8,-1 --plot l.png
    """
    from genome_index.analysis.evaluate import evaluate as run_evaluate
    from genome_index.cli.output import render_dicts
    from genome_index.progress import Shown

    check_format(fmt)
    if plot is not None:
        from genome_index.analysis.plots import check_plot_path

        check_plot_path(plot)  # before the hours of embedding, not after
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
        from genome_index.analysis.plots import plot_ani, plot_layers

        plot_layers(plot, rows)
        log(f"wrote {plot}", quiet)
        if ani:
            scatter = plot.with_name(f"{plot.stem}-ani{plot.suffix}")
            plot_ani(scatter, pairs, rows)
            log(f"wrote {scatter}", quiet)


@command()
@user_errors
def check(
    index: IndexDir = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Only DuckDB's consistency queries: no block reads, no FAISS files.")
    ] = False,
) -> None:
    """Verify a store's consistency (exit 1 on a problem).

    Every genome complete, every base covered by its windows, every vector of the store's
    width, sketches present, stored sequences matching each genome's SHA-256, every block
    of the DuckDB file readable, and the FAISS files holding exactly DuckDB's ids. --quick
    runs only the DuckDB queries (fine while a build runs).

    \b
    Examples:
      genome-index check
      genome-index check --quick -i big-store
    """
    from genome_index.api import GenomeIndex

    store = GenomeIndex.open(index_dir(index))
    problems = store.check(quick)
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        from genome_index.store import FAISS_FILES

        faiss_only = all(problem.startswith(tuple(FAISS_FILES.values())) for problem in problems)
        remedy = (
            "`genome-index reindex` rebuilds the FAISS files from metadata.duckdb"
            if faiss_only
            else "metadata.duckdb itself is affected, which `reindex` cannot repair: restore the store from a copy, "
            "or build it again from its FASTA files"
        )
        raise GenomeIndexError(f"{store.directory}: {len(problems)} problem(s); {remedy}")
    typer.echo(f"{store.directory}: consistent")


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
