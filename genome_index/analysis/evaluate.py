"""`evaluate`: which model and which layer separate a label best, without building a store.

Each genome is embedded once per model; every requested layer is pooled in that same forward
pass. Per (model, layer) the genome vectors (mean of normalised chunk vectors, normalised) are
scored against the label with `compare.label_scores`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genome_index.analysis.ani import ani_correlation, ani_matrix
from genome_index.analysis.compare import cosine_matrix, label_scores
from genome_index.embedding.backends import describe
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.encoder import resolve_layer
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, find_fasta_files, read_genome
from genome_index.io.labels import label_keys, read_labels
from genome_index.progress import SILENT, Progress
from genome_index.search.hits import RESERVED
from genome_index.settings import ModelOptions, RunOptions
from genome_index.store.vectors import genome_vector


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all' -> every hidden state 0..n_layers; '0,4,-1' -> those (negative from the end)."""
    if spec.strip() == "all":
        return list(range(n_layers + 1))
    try:
        wanted = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise GenomeIndexError(f"--layers {spec!r}: give 'all' or numbers such as 0,4,8") from None
    if not wanted:
        raise GenomeIndexError("--layers is empty")
    return sorted({resolve_layer(layer, n_layers) for layer in wanted})


def genome_labels(genomes: Sequence[Genome], labels_csv: Path, label: str) -> list[str]:
    """The `label` column of the labels CSV for each genome, matched by file name, path or name."""
    rows = read_labels(labels_csv, RESERVED)
    values = []
    for genome in genomes:
        row = next((rows[k] for k in label_keys(genome) if k in rows), None)
        if row is None:
            raise GenomeIndexError(f"{labels_csv}: no row for genome {genome.name} ({genome.path.name})")
        if label not in row:
            raise GenomeIndexError(f"{labels_csv}: no column {label!r} (columns: {sorted(row)})")
        values.append(row[label])
    return values


def evaluate(
    paths: Sequence[str | Path],
    labels_csv: str | Path,
    label: str,
    models: Sequence[str],
    layers: str = "all",
    windows: ModelOptions | None = None,
    run: RunOptions | None = None,
    progress: Progress = SILENT,
    ani: bool = False,
    pairs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, layer): nn_accuracy, within, between, gap, silhouette of `label`.
    `windows` gives every model the same window and code options (its model and layer are ignored).

    With `ani`, whole-genome ANI of every pair (skani) is computed once, and each row gains the
    Spearman correlation of cosine with ANI over the pairs skani reports (>= 80 %) and their
    count; `pairs`, if given, receives each (model, layer)'s (cosines, ANIs) for a scatter plot.
    """
    files = find_fasta_files(list(paths))
    if len(files) < 3:
        raise GenomeIndexError("evaluate needs at least 3 genomes")
    labels = genome_labels([Genome(p) for p in files], Path(labels_csv), label)
    if len(set(labels)) < 2:
        raise GenomeIndexError(f"every genome has the same {label!r}: nothing to separate")
    with progress.step("reading the genomes", len(files), "genomes") as step:  # a bad file fails before any model loads
        bases = 0
        for path in files:
            bases += read_genome(path).length
            step.advance(1)
    identity = ani_matrix(len(files), lambda i: read_genome(files[i]), progress) if ani else None
    rows = []
    for model in models:
        template = dataclasses.replace(windows or ModelOptions(), model=model)
        n_layers = describe(template).num_layers
        wanted = parse_layers(layers, n_layers) if n_layers else [0]  # one hidden state: the layers are moot
        embedder = Embedder(dataclasses.replace(template, model=model, layer=max(wanted)), run)
        vectors: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted}
        with progress.step(f"embedding with {model}", bases, genomes=len(files)) as step:
            for path in files:
                genome = read_genome(path)
                per_layer = embedder.embed_chunks_at(embedder.chunk(genome), wanted, step)
                for layer, chunk_vectors in per_layer.items():
                    vectors[layer].append(genome_vector(chunk_vectors))
                step.advance(genomes=1)
        for layer in wanted:
            similarity = cosine_matrix(np.stack(vectors[layer]))
            scores = label_scores(similarity, labels)
            row = {
                "model": model, "layer": layer, "genomes": len(files),
                "nn_accuracy": scores.nn_accuracy, "within": scores.within, "between": scores.between,
                "gap": scores.gap, "silhouette": scores.silhouette,
            }  # fmt: skip
            if identity is not None:
                rho, count = ani_correlation(similarity, identity)
                row.update(ani_spearman=rho, ani_pairs=count)
                if pairs is not None:
                    upper = np.triu_indices(len(files), k=1)
                    pairs[(model, layer)] = (similarity[upper], identity[upper])
            rows.append(row)
    return rows
