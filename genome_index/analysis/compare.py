"""Genome-by-genome comparison: similarity matrix, 2-D coordinates, label summary, and the
files `compare` writes (the figures are drawn by `plots`).

Also the metrics `evaluate` reports per (model, layer): leave-one-out nearest-neighbour
accuracy of a label, mean within- and between-label similarity, and silhouette.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from genome_index.analysis.ani import ani_matrix, write_ani
from genome_index.analysis.plots import PLOT_FORMATS, plot_heatmap, plot_map
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, read_genome
from genome_index.progress import SILENT, Progress
from genome_index.store import Store
from genome_index.store.vectors import normalise


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows; exactly symmetric with ones on the diagonal."""
    unit = normalise(vectors).astype(np.float64)
    similarity = np.clip(unit @ unit.T, -1.0, 1.0)
    similarity = (similarity + similarity.T) / 2
    np.fill_diagonal(similarity, 1.0)
    return similarity


@dataclass
class LabelScores:
    """How well vectors separate a label: the figures of one `evaluate` row."""

    nn_accuracy: float
    within: float
    between: float
    silhouette: float

    @property
    def gap(self) -> float:
        return self.within - self.between


def label_scores(similarity: np.ndarray, labels: Sequence[str]) -> LabelScores:
    """Leave-one-out nearest-neighbour accuracy, mean within/between similarity, silhouette."""
    labels_array = np.asarray(labels)
    same = labels_array[:, None] == labels_array[None, :]
    off_diagonal = ~np.eye(len(labels_array), dtype=bool)
    others = np.where(off_diagonal, similarity, -np.inf)
    nearest = others.argmax(axis=1)
    accuracy = float(np.mean(labels_array[nearest] == labels_array)) if len(labels_array) > 1 else float("nan")
    within = similarity[same & off_diagonal]
    between = similarity[~same]
    n_labels = len(set(labels))
    silhouette = float("nan")
    if 2 <= n_labels <= len(labels_array) - 1:
        distance = np.clip(1.0 - similarity, 0.0, 2.0)
        silhouette = float(silhouette_score(distance, labels_array, metric="precomputed"))
    return LabelScores(
        nn_accuracy=accuracy,
        within=float(within.mean()) if within.size else float("nan"),
        between=float(between.mean()) if between.size else float("nan"),
        silhouette=silhouette,
    )


def group_summary(similarity: np.ndarray, groups: Sequence[str]) -> list[dict]:
    """Per label value and overall: genomes, mean similarity within the group and to the rest
    (None where there is no pair: a group of one has no within, a single group no between).
    Genomes without the label form a group of their own, `(no label)`; without a label at all
    there is only the overall row. Values are not rounded: whoever shows them chooses decimals."""
    groups_array = np.asarray(groups)
    off_diagonal = ~np.eye(len(groups_array), dtype=bool)
    rows = []
    values = sorted(set(groups))
    for group in values if values != [""] else []:
        inside = groups_array == group
        within = similarity[np.ix_(inside, inside)][off_diagonal[np.ix_(inside, inside)]]
        between = similarity[np.ix_(inside, ~inside)]
        rows.append({
            "label": group or "(no label)", "genomes": int(inside.sum()),
            "within": float(within.mean()) if within.size else None,
            "between": float(between.mean()) if between.size else None,
        })  # fmt: skip
    same = groups_array[:, None] == groups_array[None, :]
    within = similarity[same & off_diagonal]
    between = similarity[~same]
    rows.append({
        "label": "(all)", "genomes": len(groups),
        "within": float(within.mean()) if within.size else None,
        "between": float(between.mean()) if between.size else None,
    })  # fmt: skip
    return rows


def write_summary(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_matrix(path: Path, names: Sequence[str], similarity: np.ndarray) -> None:
    """TSV with genome names as header row and first column."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["genome", *names])
        for name, row in zip(names, similarity, strict=True):
            writer.writerow([name, *(f"{v:.6f}" for v in row)])


def pca_coords(vectors: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """First two principal components of the normalised vectors, with axis labels."""
    unit = normalise(vectors)
    components = min(2, len(unit), unit.shape[1])
    pca = PCA(n_components=components).fit(unit)
    coords = pca.transform(unit)
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    ratio = [*pca.explained_variance_ratio_, 0.0]
    return coords, (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)")


def umap_coords(vectors: np.ndarray) -> np.ndarray | None:
    """UMAP of the vectors (cosine) when umap-learn is installed and there are enough genomes."""
    try:
        import umap
    except ImportError:
        return None
    if len(vectors) < 4:
        return None
    reducer = umap.UMAP(n_neighbors=min(15, len(vectors) - 1), metric="cosine", random_state=0)
    return reducer.fit_transform(normalise(vectors))


def write_comparison(
    out: Path,
    names: list[str],
    vectors: np.ndarray,
    groups: list[str],
    label: str | None,
    model: str,
    ani: np.ndarray | None = None,
    shown_names: list[str] | None = None,
    plot_format: str = "png",
) -> dict[str, Any]:
    """Matrix (TSV), heatmap, PCA (and UMAP) maps and the label summary of genome vectors in
    `out`, and with `ani` (skani's matrix) ani.tsv: the files written and the summary rows.
    The TSVs name genomes by `names`; the plots by `shown_names` where given."""
    if plot_format not in PLOT_FORMATS:
        raise GenomeIndexError(f"unknown plot format {plot_format!r}: use {', '.join(PLOT_FORMATS)}")
    groups = groups if label else [""] * len(names)
    shown = shown_names or names
    out.mkdir(parents=True, exist_ok=True)
    similarity = cosine_matrix(vectors)
    files = {
        "matrix": out / "similarity.tsv", "heatmap": out / f"heatmap.{plot_format}", "pca": out / f"pca.{plot_format}"
    }  # fmt: skip
    write_matrix(files["matrix"], names, similarity)
    about = f"{model}, {len(names)} genomes"
    plot_heatmap(files["heatmap"], shown, similarity, f"Cosine similarity of genome vectors ({about})", groups, label)
    coords, axes = pca_coords(vectors)
    what = f", coloured by {label}" if label else ""
    plot_map(files["pca"], coords, shown, groups, f"PCA of genome vectors ({about}){what}", axes, label)
    umap = umap_coords(vectors)
    if umap is not None:
        files["umap"] = out / f"umap.{plot_format}"
        plot_map(files["umap"], umap, shown, groups, f"UMAP ({about}){what}", ("UMAP 1", "UMAP 2"), label)
    if ani is not None:
        files["ani"] = out / "ani.tsv"
        write_ani(files["ani"], names, ani)
    summary = group_summary(similarity, groups)
    files["summary"] = out / "summary.tsv"
    write_summary(files["summary"], summary)
    return {"files": {k: str(v) for k, v in files.items()}, "summary": summary}


def compare_store(
    store: Store,
    out: str | Path,
    label: str | None = None,
    ani: bool = False,
    progress: Progress = SILENT,
    *,
    name_column: str | None = None,
    plot_format: str = "png",
) -> dict[str, Any]:
    """`write_comparison` of a store's genome vectors (see `GenomeIndex.compare`); with `ani`,
    skani's matrix too, from the genome files, each of which must still hold what was stored."""
    with store.reading() as reader:
        settings = reader.settings()
        names, vectors, groups = reader.named_genome_vectors(settings.dim, label)
        keys = reader.label_keys()
        files = reader.genome_files()
        shown = reader.label_values(name_column) if name_column else {}
    if len(names) < 2:
        raise GenomeIndexError(f"{store.directory}: compare needs at least 2 genomes")
    for option, key in (("--label", label), ("--name-column", name_column)):
        if key is not None and key not in keys:
            raise GenomeIndexError(f"{option}: no label {key!r} in this store (labels: {', '.join(keys) or 'none'})")
    identity = None
    if ani:
        identity = ani_matrix(len(names), lambda i: stored_file(names[i], *files[names[i]]), progress)
    return write_comparison(
        Path(out), names, vectors, groups, label, settings.model, identity,
        shown_names=[shown.get(name) or name for name in names], plot_format=plot_format,
    )  # fmt: skip


def stored_file(name: str, file: str, sha256: str) -> Genome:
    """A stored genome read again from its file, which must still hold the same sequence."""
    if not Path(file).is_file():
        raise GenomeIndexError(f"genome {name}: its file {file} is gone (ANI reads the genome files)")
    genome = read_genome(file)
    if genome.sha256 != sha256:
        raise GenomeIndexError(f"genome {name}: {file} no longer holds the sequence that was stored")
    return genome
