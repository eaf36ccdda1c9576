"""Commands that search a store: query, gather, extract, serve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from genome_index.cli.app import command, user_errors
from genome_index.cli.options import (
    BatchTokens,
    Columns,
    Device,
    Dtype,
    Format,
    IndexDir,
    ModelPackage,
    Quiet,
    TrustRemoteCode,
    check_format,
    index_dir,
    opt,
    stdin_as_file,
)
from genome_index.errors import GenomeIndexError
from genome_index.settings import GatherOptions, QueryOptions, RunOptions


@command()
@user_errors
def query(
    fasta: Annotated[
        Path,
        typer.Argument(
            help="Query FASTA or FASTQ (plain or gzip): a genome, contig, fragment or reads; - reads stdin.",
            metavar="FASTA",
        ),
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
    exhaustive: Annotated[bool, opt("exhaustive", "--exhaustive")] = QueryOptions.exhaustive,
    species_ani: Annotated[float, opt("species_ani", "--species-ani")] = QueryOptions.species_ani,
    species_fraction: Annotated[float, opt("species_fraction", "--species-fraction")] = QueryOptions.species_fraction,
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
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="After the hits, say on stderr where the query's time went, stage by stage (embed, "
            "candidates, rerank, verify), and how many genomes each passed on.",
        ),
    ] = False,
) -> None:
    """Find the stored genomes nearest to a sequence.

    The query is embedded with the store's own model, layer and windows; the best candidates
    are then aligned with minimap2 (queries up to 6 Mbp, or --align) and ranked by the query
    bases each explains less the edits it takes (explained_bp). Rows carry the cosine score,
    the sketch figures, the alignment (identity, aligned_bp, query_coverage, where in the
    genome), the rank key (ranked_by; equal keys share a rank and are flagged tied), then the
    genome's labels; the table shows the few that fit a terminal, --format json adds every
    alignment. In chunks mode, support is the number of query windows whose best match lies
    in the genome (identical genomes share a window's match, so twins have equal support).
    --explain says on stderr where the time went, stage by stage.

    \b
    Examples:
      genome-index query contig.fa -k 5
      genome-index query assembly.fna.gz --format json --no-align
      genome-index query plasmids.fa --per-record --columns query,rank,name,score
      cat reads.fa | genome-index query -
      genome-index query contig.fa --explain
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
    options = QueryOptions(
        k, mode, per_record, window_overlap, frames, center, rerank, align, align_top, exhaustive, species_ani,
        species_fraction,
    )  # fmt: skip
    timings: dict[str, float] = {}
    with stdin_as_file([fasta]) as (path,):
        hits = store.query(
            path, options, RunOptions(device, dtype, batch_tokens), model=model, progress=Shown(quiet),
            trust_remote_code=trust_remote_code, model_package=model_package, timings=timings,
        )  # fmt: skip
    rows = [hit.row(alignments=fmt == "json") for hit in hits]
    aligned = any(hit.identity is not None for hit in hits)
    brief = (["query"] if per_record else []) + list(HIT_TABLE_COLUMNS if aligned else HIT_TABLE_UNALIGNED)
    if fmt == "table":  # a tied rank reads `2=`, as in a results table
        rows = [{**row, "rank": f"{row['rank']}=" if row["tied"] else row["rank"]} for row in rows]
    chosen = choose(column_names(rows, known), rows, fmt, columns, brief, labels)
    typer.echo(render_dicts(rows, fmt, chosen), nl=False)
    if explain:
        typer.echo(explanation(timings), err=True)


def explanation(timings: dict[str, float]) -> str:
    """One line per stage: its milliseconds and the genomes it passed on (`GenomeIndex.query`'s timings)."""
    lines = []
    for stage in ("embed", "candidates", "rerank", "verify"):
        passed = timings.get(f"{stage}_genomes")
        onward = f", {int(passed)} genome(s) passed on" if passed is not None else ""
        lines.append(f"{stage:<10} {timings.get(f'{stage}_s', 0.0) * 1000:9.1f} ms{onward}")
    return "\n".join(lines)


@command()
@user_errors
def gather(
    samples: Annotated[
        list[Path],
        typer.Argument(
            help="FASTA or FASTQ files of ONE sample (plain or gzip): reads (a pair's two files, several lanes) "
            "or contigs; - reads stdin.",
            metavar="SAMPLE",
        ),
    ],
    index: IndexDir = None,
    threshold_bp: Annotated[int | None, opt("threshold_bp", "--threshold-bp", metavar="BP")] = None,
    verify: Annotated[bool, opt("verify", "--verify/--no-verify")] = GatherOptions.verify,
    fmt: Format = "table",
    columns: Columns = None,
    quiet: Quiet = False,
) -> None:
    """Find which stored genomes a sample holds, and how much of each.

    The sample's k-mer sketch is explained greedily by the stored genomes' sketches, as
    sourmash gather does: the genome holding the most of what is still unexplained first,
    until none holds --threshold-bp more (default: 0.1 % of the sample's sketch). The sample
    is then mapped with minimap2 to the genomes found (short-read preset for reads, assembly
    preset for contigs); a read that fits several equally is shared in proportion to their
    depths. Rows, in the order they were found: unique_bp and shared_bp (sample bases this
    genome explained first, and holds at all), f_sample and f_genome (those as shares of the
    sample's and of the genome's sketch), then the mapping's reads, mapped_bp, abundance (share
    of the mapped bases), depth, breadth and identity; then the genome's labels. No model is
    loaded. A summary of the sample goes to stderr.

    \b
    Examples:
      genome-index gather sample_R1.fastq.gz sample_R2.fastq.gz
      genome-index gather metagenome_contigs.fa --format tsv > found.tsv
      genome-index gather reads.fq --threshold-bp 50000 --no-verify
      zcat reads.fq.gz | genome-index gather -
    """
    from genome_index.api import GenomeIndex
    from genome_index.cli.app import log
    from genome_index.cli.output import GATHER_TABLE_COLUMNS, choose, column_names, render_dicts
    from genome_index.progress import Shown
    from genome_index.search.hits import GATHER_COLUMNS, label_column

    check_format(fmt)
    store = GenomeIndex.open(index_dir(index))
    labels = [label_column(key) for key in store.label_names()]
    known = [*GATHER_COLUMNS, *labels]
    choose(known, [], fmt, columns)  # an unknown --columns fails before the sample is read
    with stdin_as_file(samples) as paths:
        found = store.gather(paths, GatherOptions(threshold_bp, verify), progress=Shown(quiet))
    rows = [row.row() for row in found.rows]
    brief = [c for c in GATHER_TABLE_COLUMNS if verify or c not in GATHER_MAPPED]
    chosen = choose(column_names(rows, known), rows, fmt, columns, brief, labels)
    if rows or fmt != "table":
        typer.echo(render_dicts(rows, fmt, chosen), nl=False)
    log(gather_summary(found.summary()), quiet)


GATHER_MAPPED = ("reads", "mapped_bp", "abundance", "depth", "breadth", "identity")


def gather_summary(summary: dict) -> str:
    """One line on the sample: its reads, bases and sketch, the genomes found and the reads mapped."""
    line = (
        f"{summary['sample']}: {summary['records']:,} reads or contigs, {summary['bases'] / 1e6:.2f} Mbp, "
        f"{summary['hashes']:,} sketch hashes; {summary['genomes']} stored genome(s) found"
    )
    if summary["mapped"] is not None:
        share = summary["mapped"] / summary["records"] if summary["records"] else 0.0
        line += f"; {summary['mapped']:,} ({share:.1%}) map to them (minimap2 -x {summary['preset']})"
    if not summary["genomes"]:
        line += ": none holds the threshold's share of the sample"
    return line


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
    warm: Annotated[
        bool,
        typer.Option(
            "--warm",
            help="Before listening, read every stored window and sequence and build minimap2 indexes of up to 64 "
            "genomes, so that the first queries are as quick as later ones (about 30 s for 1,000 genomes).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            help="Processes answering requests on the one port, each with its own searcher and copy of the store's "
            "indexes in memory: a CPU-bound query (kmer:K) takes a core's Python, so throughput grows with them up "
            "to one per core. Not with --ray.",
        ),
    ] = 1,
    trust_remote_code: TrustRemoteCode = None,
    model_package: ModelPackage = None,
    device: Device = RunOptions.device,
    dtype: Dtype = RunOptions.dtype,
    batch_tokens: BatchTokens = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|ADDRESS",
            help="Search an ivf-pq store's segments on Ray actors: auto (the cluster at $RAY_ADDRESS or one "
            "`ray start`ed here, else a new local Ray) or a cluster's address; every machine must see the store "
            "at this path. Needs the [ray] extra.",
        ),
    ] = None,
    ray_shards: Annotated[
        int | None,
        typer.Option(
            "--ray-shards", metavar="N", help="Search actors on Ray.", show_default="one per GPU, else one per machine"
        ),
    ] = None,
) -> None:
    """Serve the store over HTTP, with a web page.

    The model loads once; POST /query answers as `query --format json` does, concurrent
    queries are embedded together; POST /gather answers as `gather --format json` does. Also
    GET /genomes, /genomes/ID, /info, /health, POST /sql, OpenAPI docs at /docs and a web page
    at /. Listens on 127.0.0.1; another host needs --token-file (or --insecure).

    \b
    Examples:
      genome-index serve -i my-index
      curl -s --data-binary @contig.fa 'localhost:8000/query?k=5'
      curl -s --data-binary @reads.fq 'localhost:8000/gather'
      genome-index serve --host 0.0.0.0 --token-file token.txt --compare compare-out
      genome-index serve -i big-index --ray auto
      genome-index serve -i my-index --warm
      genome-index serve -i my-index --workers 4
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown
    from genome_index.server.app import serve as run_server
    from genome_index.server.auth import check_host, read_token
    from genome_index.server.limits import Limits

    if ray_shards is not None and ray is None:
        raise GenomeIndexError("--ray-shards applies with --ray")
    token = read_token(token_file)
    check_host(host, token, insecure)  # before the store opens
    limits = Limits(
        max_query_bytes=max_query_bytes, query_bytes=query_bytes, sql_timeout=sql_timeout,
        sql_memory=sql_memory_limit, sql=max_sql, queue_wait=queue_wait,
    )  # fmt: skip
    run_server(
        GenomeIndex.open(index_dir(index)), host, port, limits, token, insecure, compare_dir,
        RunOptions(device, dtype, batch_tokens), ray=ray, ray_shards=ray_shards, trust_remote_code=trust_remote_code,
        model_package=model_package, warm=warm, progress=Shown(), workers=workers,
    )  # fmt: skip
