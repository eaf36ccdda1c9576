"""The figures at the sizes users hit (4, 12, 50 and 300 genomes with long NCBI names): every
text inside the figure, names shown while legible, values in small heatmaps, a colour scale
without offset notation, a dendrogram and label strips, map labels inside the plot, layer
plots on integer ticks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from genome_index.analysis.compare import cosine_matrix, pca_coords, write_comparison
from genome_index.analysis.plots import display_names, heatmap_figure, layers_figure, map_figure
from genome_index.errors import GenomeIndexError

SPECIES = ["S. aureus", "S. epidermidis", "E. coli", "K. pneumoniae", "synthetic GC-rich"]


def genomes(n: int, spread: float = 0.6) -> tuple[list[str], np.ndarray, list[str]]:
    """n long NCBI-style names, vectors clustered by species, and the species ('' for a few)."""
    rng = np.random.default_rng(n)
    groups = [SPECIES[i % len(SPECIES)] if i % 7 else "" for i in range(n)]
    centres = {g: rng.normal(size=32) for g in set(groups)}
    vectors = np.array([centres[g] + rng.normal(scale=spread, size=32) for g in groups])
    names = [f"GCA_{900_000_000 + 7919 * i:09d}.1_ASM{100_000 + i}v1_strain_{i}_genomic" for i in range(n)]
    return names, vectors, groups


def texts_inside(fig) -> None:
    """Everything drawn (titles, names, ticks, legends) lies within the figure: nothing is cut
    off at an edge."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn = fig.get_tightbbox(canvas.get_renderer())  # inches
    width, height = fig.get_size_inches()
    assert drawn.x0 >= -0.02 and drawn.y0 >= -0.02, drawn
    assert drawn.x1 <= width + 0.02 and drawn.y1 <= height + 0.02, (drawn, width, height)


@pytest.mark.parametrize("n", [4, 12, 50, 300])
@pytest.mark.slow
def test_heatmap_at_the_sizes_users_hit(n: int) -> None:
    names, vectors, groups = genomes(n)
    fig = heatmap_figure(names, cosine_matrix(vectors), f"Cosine similarity ({n} genomes)", groups, "species")
    texts_inside(fig)
    heat = max(fig.axes, key=lambda ax: len(ax.images) and ax.images[0].get_array().size)
    shown = [t.get_text() for t in heat.get_yticklabels()]
    assert (len(shown) == n) == (n <= 50)  # 300 names would be 3 pt: left to similarity.tsv
    assert all(len(name) <= 28 and "genomic" not in name for name in shown)
    cell_values = [t for t in heat.texts if t.get_text()[:1] in "-01"]
    assert len(cell_values) == (n * n if n <= 20 else 0)
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "species"
    assert {t.get_text() for t in legend.get_texts()} == {*(g for g in set(groups) if g), "(none)"}
    tree = [ax for ax in fig.axes if ax.collections and not ax.images]
    assert tree, "no dendrogram"


def test_colour_scale_of_near_identical_vectors_has_readable_ticks() -> None:
    names, vectors, groups = genomes(4)
    similarity = 1 - 1e-5 * (1 - cosine_matrix(vectors))  # nt-tiny's range: 0.99998 .. 1
    fig = heatmap_figure(names, similarity, "nt-tiny", groups, "species")
    FigureCanvasAgg(fig).draw()
    bar = next(ax for ax in fig.axes if ax.get_ylabel() == "cosine similarity")
    ticks = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)
    assert all(t.startswith("0.9999") for t in ticks)
    assert bar.yaxis.get_offset_text().get_text() == ""


def test_heatmap_cells_never_show_a_near_one_as_the_diagonals_one() -> None:
    """kmer:6 printed 0.999995 as 1.00000, the diagonal's value."""
    names = ["a", "b", "c"]
    similarity = np.array([[1.0, 0.999995, 0.99990], [0.999995, 1.0, 0.99992], [0.99990, 0.99992, 1.0]])
    heat = next(ax for ax in heatmap_figure(names, similarity, "kmer:6").axes if ax.images)
    cells = [t.get_text() for t in heat.texts]
    assert cells.count("1.00000") == 3 and len(set(cells)) == 4  # the diagonal alone reads 1; every value its own


@pytest.mark.parametrize("n", [4, 12, 40])
@pytest.mark.slow
def test_map_labels_stay_inside_the_plot(n: int) -> None:
    names, vectors, groups = genomes(n)
    coords, axes = pca_coords(vectors)
    fig = map_figure(coords, names, groups, "PCA", axes, "species")
    texts_inside(fig)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    for text in ax.texts:
        extent = text.get_window_extent(renderer)
        assert ax.bbox.x0 - 1 <= extent.x0 and extent.x1 <= ax.bbox.x1 + 1, text.get_text()


def test_layers_plot_shows_accuracy_gap_and_silhouette_on_integer_ticks() -> None:
    rows = [
        {"model": model, "layer": layer, "nn_accuracy": 1.0, "gap": 0.01 * layer, "silhouette": 0.1}
        for model, layers in (("nt-tiny", range(5)), ("kmer:6", [0]))
        for layer in layers
    ]
    fig = layers_figure(rows)
    texts_inside(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "nearest-neighbour accuracy",
        "within - between cosine",
        "silhouette",
    ]
    ticks = fig.axes[-1].get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    markers = {line.get_marker() for line in fig.axes[0].lines}
    assert len(markers) == 2  # one marker per model: a line under another still shows


@pytest.mark.parametrize(
    ("names", "shown"),
    [
        (["GCA_1.1_A_genomic", "GCF_2.1_B_genomic"], ["GCA_1.1_A", "GCF_2.1_B"]),
        (["a" * 40, "b" * 40], ["a" * 13 + "…" + "a" * 14, "b" * 13 + "…" + "b" * 14]),
        (
            ["x" * 20 + "1" + "y" * 20, "x" * 20 + "2" + "y" * 20],
            ["x" * 20 + "1" + "y" * 20, "x" * 20 + "2" + "y" * 20],
        ),
        (["ecoli", "saureus"], ["ecoli", "saureus"]),
    ],
    ids=["shared suffix dropped", "long names cut in the middle", "a cut that would merge names", "short names"],
)
def test_display_names(names: list[str], shown: list[str]) -> None:
    assert display_names(names) == shown


@pytest.mark.parametrize("plot_format", ["png", "svg", "pdf"])
@pytest.mark.slow
def test_compare_writes_each_plot_format(tmp_path: Path, plot_format: str) -> None:
    names, vectors, groups = genomes(6)
    files = write_comparison(tmp_path, names, vectors, groups, "species", "kmer:6", plot_format=plot_format)["files"]
    for kind in ("heatmap", "pca"):
        path = Path(files[kind])
        assert path.suffix == f".{plot_format}" and path.stat().st_size > 1000


def test_an_unknown_plot_format_is_refused(tmp_path: Path) -> None:
    names, vectors, groups = genomes(4)
    with pytest.raises(GenomeIndexError, match="png, svg, pdf"):
        write_comparison(tmp_path, names, vectors, groups, "species", "kmer:6", plot_format="jpg")
