"""Genome-by-genome comparison: similarity matrix, clustered heatmap, 2-D maps, label summary.

Plots are drawn on `matplotlib.figure.Figure` objects and saved to files: no pyplot, no
backend chosen for the process, so importing this never changes a notebook's plotting.

Also the metrics `evaluate` reports per (model, layer): leave-one-out nearest-neighbour
accuracy of a label, mean within- and between-label similarity, and silhouette.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from genome_index.ani import write_ani
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
    """Per label value and overall: genomes, mean similarity within the group and to the rest."""
    groups_array = np.asarray(groups)
    off_diagonal = ~np.eye(len(groups_array), dtype=bool)
    rows = []
    for group in sorted(set(groups)):
        inside = groups_array == group
        within = similarity[np.ix_(inside, inside)][off_diagonal[np.ix_(inside, inside)]]
        between = similarity[np.ix_(inside, ~inside)]
        rows.append({
            "label": group or "(none)", "genomes": int(inside.sum()),
            "within": round(float(within.mean()), 4) if within.size else None,
            "between": round(float(between.mean()), 4) if between.size else None,
        })  # fmt: skip
    scores = label_scores(similarity, groups) if len(set(groups)) > 1 else None
    rows.append({
        "label": "(all)", "genomes": len(groups),
        "within": round(scores.within, 4) if scores else round(float(similarity[off_diagonal].mean()), 4),
        "between": round(scores.between, 4) if scores else None,
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


def _font_size(n: int) -> float:
    return max(4.0, min(10.0, 200.0 / max(n, 1)))


def plot_heatmap(path: Path, names: Sequence[str], similarity: np.ndarray, title: str) -> None:
    """Cosine similarity heatmap, rows and columns in average-linkage cluster order."""
    n = len(names)
    order = np.arange(n)
    if n > 2:
        order = leaves_list(linkage(squareform(1.0 - similarity, checks=False), method="average"))
    size = min(4 + 0.25 * n, 24)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(similarity[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
    ticks = [names[i] for i in order]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=_font_size(n))
    ax.set_yticks(range(n), ticks, fontsize=_font_size(n))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="cosine similarity", shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_map(
    path: Path,
    coords: np.ndarray,
    names: Sequence[str],
    labels: Sequence[str],
    title: str,
    axes: tuple[str, str],
) -> None:
    """2-D scatter of genomes coloured by label, with a legend (and names when they fit)."""
    fig = Figure(figsize=(8, 6.5))
    ax = fig.subplots()
    groups = sorted(set(labels))
    colours = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    for i, group in enumerate(groups):
        rows = [j for j, label in enumerate(labels) if label == group]
        ax.scatter(coords[rows, 0], coords[rows, 1], s=40, color=colours(i % colours.N), label=group or "(none)")
    if len(names) <= 40:
        for (x, y), name in zip(coords, names, strict=True):
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(title="label", fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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


def plot_accuracy_by_layer(path: Path, rows: Sequence[dict]) -> None:
    """Nearest-neighbour accuracy against layer, one line per model."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for model in dict.fromkeys(r["model"] for r in rows):
        points = sorted((r["layer"], r["nn_accuracy"]) for r in rows if r["model"] == model)
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=model)
    ax.set_xlabel("layer (hidden state)")
    ax.set_ylabel("leave-one-out nearest-neighbour accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Which layer separates the label best?")
    ax.legend(title="model")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_comparison(
    out: Path,
    names: list[str],
    vectors: np.ndarray,
    groups: list[str],
    label: str | None,
    model: str,
    ani: np.ndarray | None = None,
) -> dict[str, Any]:
    """Matrix (TSV), heatmap, PCA (and UMAP) maps and the label summary of genome vectors in
    `out`, and with `ani` (skani's matrix) ani.tsv: the files written and the summary rows."""
    groups = groups if label else [""] * len(names)
    out.mkdir(parents=True, exist_ok=True)
    similarity = cosine_matrix(vectors)
    files = {"matrix": out / "similarity.tsv", "heatmap": out / "heatmap.png", "pca": out / "pca.png"}
    write_matrix(files["matrix"], names, similarity)
    plot_heatmap(files["heatmap"], names, similarity, f"Cosine similarity of genome vectors ({model})")
    coords, axes = pca_coords(vectors)
    what = f"coloured by {label}" if label else "all genomes"
    plot_map(files["pca"], coords, names, groups, f"PCA of genome vectors ({model}), {what}", axes)
    umap = umap_coords(vectors)
    if umap is not None:
        files["umap"] = out / "umap.png"
        plot_map(files["umap"], umap, names, groups, f"UMAP ({model}), {what}", ("UMAP 1", "UMAP 2"))
    if ani is not None:
        files["ani"] = out / "ani.tsv"
        write_ani(files["ani"], names, ani)
    summary = group_summary(similarity, groups)
    files["summary"] = out / "summary.tsv"
    write_summary(files["summary"], summary)
    return {"files": {k: str(v) for k, v in files.items()}, "summary": summary}


def plot_ani(path: Path, pairs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], rows: Sequence[dict]) -> None:
    """Embedding cosine against skani ANI for every genome pair, at each model's layer whose
    cosine tracks ANI best (highest Spearman)."""
    fig = Figure(figsize=(7, 5.5))
    ax = fig.subplots()
    for model in dict.fromkeys(r["model"] for r in rows):
        scored = [r for r in rows if r["model"] == model and np.isfinite(r.get("ani_spearman", np.nan))]
        if not scored:
            continue
        best = max(scored, key=lambda r: r["ani_spearman"])
        cosines, anis = pairs[(model, best["layer"])]
        seen = ~np.isnan(anis)
        label = f"{model}, layer {best['layer']} (Spearman {best['ani_spearman']:.2f}, {best['ani_pairs']} pairs)"
        ax.scatter(100 * anis[seen], cosines[seen], s=18, alpha=0.8, label=label)
    ax.set_xlabel("whole-genome ANI by skani (%)")
    ax.set_ylabel("cosine similarity of genome vectors")
    ax.set_title("Does embedding similarity track relatedness?")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
