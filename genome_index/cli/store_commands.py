"""Commands that read or look after a store: sql, info, check, remove, migrate, reindex."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from genome_index.cli.app import command, log, user_errors
from genome_index.cli.options import (
    Format,
    IndexDir,
    Quiet,
    check_format,
    index_dir,
)
from genome_index.errors import GenomeIndexError


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
    sequences, settings (docs/store.md lists their columns); subsequence(record_id, start,
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
        from genome_index.store import FAISS_FILES, SEGMENTS_DIR
        from genome_index.store.reads import VECTOR_SUMS

        files = (*FAISS_FILES.values(), SEGMENTS_DIR)
        derived = all(problem.startswith(files) or VECTOR_SUMS in problem for problem in problems)
        remedy = (
            "`genome-index reindex` rebuilds the FAISS files and the vector sums from the stored vectors"
            if derived
            else "metadata.duckdb itself is affected, which `reindex` cannot repair: restore the store from a copy, "
            "or build it again from its FASTA files"
        )
        raise GenomeIndexError(f"{store.directory}: {len(problems)} problem(s); {remedy}")
    typer.echo(f"{store.directory}: consistent")


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
def migrate(index: IndexDir = None, quiet: Quiet = False) -> None:
    """Move a store's chunk vectors out of metadata.duckdb into files beside it.

    Stores made by this version keep their chunk vectors in Parquet files under `vectors/`
    (one a commit group), seen in SQL as the view `chunk_vectors`; stores made before keep
    them in a table, and keep working. This moves them out in one transaction (killed half
    way, the store is as it was) and shrinks the database file. Nothing to do: says so.

    \b
    Examples:
      genome-index migrate -i old-store
    """
    from genome_index.api import GenomeIndex

    moved = GenomeIndex.open(index_dir(index)).migrate()
    if not moved["vectors"]:
        log("nothing to move: the chunk vectors are in files beside metadata.duckdb already", quiet)
        return
    log(
        f"moved {moved['vectors']:,} chunk vectors into {moved['files']} file(s) under vectors/; metadata.duckdb "
        f"{moved['bytes_before'] / 1e6:,.1f} MB -> {moved['bytes_after'] / 1e6:,.1f} MB",
        quiet,
    )


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
    """Rebuild the FAISS files from the stored vectors.

    Repairs FAISS files that are missing, damaged or behind (after a full disk), or changes
    the chunk index type. A trained `ivf-pq` store is trained afresh on a sample of its
    vectors (after it has grown well past its first training) and its segments compacted.

    \b
    Examples:
      genome-index reindex
      genome-index reindex --index-type hnsw
    """
    from genome_index.api import GenomeIndex
    from genome_index.progress import Shown

    sizes = GenomeIndex.open(index_dir(index)).reindex(index_type, Shown(quiet))
    log(f"rebuilt FAISS indexes: {sizes['chunks']} chunk vectors, {sizes['genomes']} genome vectors", quiet)
