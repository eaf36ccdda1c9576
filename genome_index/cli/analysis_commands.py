"""Commands that compare genomes and models: compare, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genome_index.cli.app import command, log, user_errors
from genome_index.cli.options import (
    BatchTokens,
    Chunking,
    ChunkTokens,
    Device,
    Dtype,
    Format,
    IndexDir,
    ModelPackage,
    Pooling,
    Quiet,
    TrustRemoteCode,
    check_format,
    index_dir,
    model_options,
)
from genome_index.settings import RunOptions


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
