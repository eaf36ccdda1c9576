"""Commands that embed genomes and fill stores: embed, build, merge, backfill-sequences."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from genome_index.cli.app import command, log, user_errors
from genome_index.cli.options import (
    BatchTokens,
    Chunking,
    ChunkTokens,
    Compile,
    Device,
    Dtype,
    IndexDir,
    Layer,
    Model,
    ModelPackage,
    Overlap,
    Pooling,
    Quiet,
    Ray,
    RayActors,
    TrustRemoteCode,
    index_dir,
    model_options,
    opt,
    parse_shard,
    stdin_as_file,
)
from genome_index.errors import GenomeIndexError
from genome_index.settings import RunOptions, StoreOptions


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
    ivf_lists: Annotated[int | None, opt("ivf_lists")] = None,
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
            StoreOptions(index_type, vector_dtype, sketch_scaled, ivf_lists),
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
