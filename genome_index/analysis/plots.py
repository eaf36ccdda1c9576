"""The figures: clustered heatmap, 2-D maps, layer scores, cosine against ANI.

Drawn on `matplotlib.figure.Figure` objects with constrained layout and saved as PNG, SVG or
PDF: no pyplot, no backend chosen for the process, so importing this never changes a
notebook's plotting. Sizes follow the number of genomes (checked by eye at 4, 12, 50 and 300
genomes with long names): names are shortened, shown while they stay legible, and values
are written in the cells of small heatmaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, MaxNLocator
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from genome_index.errors import GenomeIndexError
from genome_index.numbers import decimals_to_tell_apart

PLOT_FORMATS = ("png", "svg", "pdf")
NAME_CHARS = 28  # longer names are shortened in the middle
VALUES_UP_TO = 20  # heatmaps of at most this many genomes show the value in each cell
MIN_FONT = 4.0  # names smaller than this are not drawn (the TSV has them)


def check_plot_path(path: Path) -> None:
    """Refuse a plot file name whose type matplotlib is not asked to write here."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise GenomeIndexError(f"{path}: a plot is written as {', '.join('.' + f for f in PLOT_FORMATS)}")


def save(fig: Figure, path: Path) -> None:
    check_plot_path(path)
    fig.savefig(path, dpi=150)


def display_names(names: Sequence[str]) -> list[str]:
    """Names as plots show them: a suffix every name shares (`_genomic`) dropped, then cut to
    NAME_CHARS in the middle, keeping both ends (NCBI accessions differ at the start, strain
    names often at the end); a cut that would make two names equal is not made."""
    names = list(names)
    if len(names) > 1:
        shared = _common_suffix(names)
        cut = max((shared.find(sep) for sep in "_.-" if sep in shared), default=-1)
        if cut >= 0 and all(len(n) > len(shared) - cut for n in names):
            names = [n[: len(n) - (len(shared) - cut)] for n in names]
    short = [_middle(n) for n in names]
    return short if len(set(short)) == len(set(names)) else names


def _common_suffix(names: Sequence[str]) -> str:
    reversed_names = [n[::-1] for n in names]
    prefix = reversed_names[0]
    for name in reversed_names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[::-1]


def _middle(name: str) -> str:
    if len(name) <= NAME_CHARS:
        return name
    head = (NAME_CHARS - 1) // 2
    return f"{name[:head]}…{name[len(name) - (NAME_CHARS - 1 - head) :]}"


def label_colours(groups: Sequence[str]) -> dict[str, tuple]:
    """One colour per label value (grey for genomes without one), from a qualitative map."""
    values = sorted(set(groups) - {""})
    cmap = matplotlib.colormaps["tab10" if len(values) <= 10 else "tab20"]
    colours = {value: cmap(i % cmap.N) for i, value in enumerate(values)}
    colours[""] = (0.8, 0.8, 0.8, 1.0)
    return colours


def _tick_decimals(ticks: np.ndarray) -> int:
    """The fewest decimals that write every tick exactly enough to tell it from its neighbours."""
    step = float(np.min(np.diff(ticks))) if len(ticks) > 1 else 1.0
    for decimals in range(0, 13):
        if np.all(np.abs(np.round(ticks, decimals) - ticks) < 0.01 * step):
            return decimals
    return 12


def plot_heatmap(path: Path, *args: Any, **kwargs: Any) -> None:
    """`heatmap_figure` saved to `path`."""
    save(heatmap_figure(*args, **kwargs), path)


def heatmap_figure(
    names: Sequence[str],
    similarity: np.ndarray,
    title: str,
    groups: Sequence[str] | None = None,
    label: str | None = None,
) -> Figure:
    """Cosine heatmap in average-linkage order with its dendrogram, a colour strip and legend
    for `label`, a colour scale spanning the off-diagonal values, and values in the cells of
    small matrices."""
    n = len(names)
    order, tree = cluster_order(similarity)
    ordered = similarity[np.ix_(order, order)]
    off = similarity[~np.eye(n, dtype=bool)]
    low, high = (float(off.min()), float(off.max())) if off.size else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 1e-6, high + 1e-6
    layout = HeatmapLayout(n, display_names(names), strip=groups is not None and label is not None)
    fig, tree_ax, heat_ax, bar_ax = layout.figure()
    image = heat_ax.imshow(ordered, cmap="viridis", vmin=low, vmax=high, interpolation="nearest", aspect="auto")
    layout.name_axes(heat_ax, order)
    if n <= VALUES_UP_TO:
        write_values(heat_ax, ordered, [*off, 1.0], layout.cell_pt, (low + high) / 2)
    colour_bar = fig.colorbar(image, cax=bar_ax)
    colour_bar.set_label("cosine similarity")
    locator = MaxNLocator(5)
    colour_bar.locator = locator
    colour_bar.formatter = FormatStrFormatter(f"%.{_tick_decimals(locator.tick_values(low, high))}f")
    colour_bar.update_ticks()
    if tree is not None:
        dendrogram(tree, orientation="left", ax=tree_ax, no_labels=True, color_threshold=0, above_threshold_color="0.3")
        tree_ax.set_ylim(10 * n, 0)  # leaf i sits at 10 i + 5: the heatmap's row i, top down
    tree_ax.axis("off")
    if groups is not None and label is not None:
        layout.label_strips(fig, groups, order, label)
    fig.suptitle(title)
    return fig


def cluster_order(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows in average-linkage order, and the linkage tree (None for two genomes or fewer)."""
    if len(similarity) <= 2:
        return np.arange(len(similarity)), None
    tree = linkage(squareform(1.0 - similarity, checks=False), method="average")
    return np.asarray(dendrogram(tree, no_plot=True)["leaves"]), tree


class HeatmapLayout:
    """Sizes of a heatmap of `n` genomes: the matrix at most 12 inches, names while legible."""

    def __init__(self, n: int, shown: list[str], strip: bool) -> None:
        self.n, self.shown, self.strip = n, shown, strip
        self.side = min(max(0.3 * n, 3.5), 12.0)  # inches for the matrix itself
        self.cell_pt = self.side * 72 / n
        self.font = min(max(0.7 * self.cell_pt, 0.0), 10.0)
        self.show_names = self.font >= MIN_FONT
        self.name_in = (max(len(s) for s in shown) * self.font * 0.6 / 72) if self.show_names else 0.2
        self.widths = [1.0, 0.22, self.side, 0.25] if strip else [1.0, self.side, 0.25]
        self.row = 1 if strip else 0

    def figure(self) -> tuple[Figure, Any, Any, Any]:
        """The figure and its axes: dendrogram, heatmap, colour bar (a label strip row on top)."""
        extra = 0.22 if self.strip else 0
        fig = Figure(
            figsize=(sum(self.widths) + self.name_in + 1.4, self.side + self.name_in + 1.2 + extra),
            layout="constrained",
        )
        heights = [0.22, self.side] if self.strip else None
        self.grid = fig.add_gridspec(2 if self.strip else 1, len(self.widths), width_ratios=self.widths,
                                     height_ratios=heights)  # fmt: skip
        row = self.row
        tree_ax, heat_ax = fig.add_subplot(self.grid[row, 0]), fig.add_subplot(self.grid[row, 2 if self.strip else 1])
        return fig, tree_ax, heat_ax, fig.add_subplot(self.grid[row, -1])

    def name_axes(self, heat_ax: Any, order: np.ndarray) -> None:
        """Genome names on both axes where they are legible, else a line saying where they are."""
        if not self.show_names:
            heat_ax.set_xticks([])
            heat_ax.set_yticks([])
            heat_ax.set_xlabel(f"{self.n} genomes in cluster order (names in similarity.tsv)")
            return
        ticks = [self.shown[i] for i in order]
        heat_ax.set_xticks(range(self.n), ticks, rotation=90, fontsize=self.font)
        heat_ax.set_yticks(range(self.n), ticks, fontsize=self.font)
        heat_ax.yaxis.tick_right()

    def label_strips(self, fig: Figure, groups: Sequence[str], order: np.ndarray, label: str) -> None:
        """A colour strip of `label` beside and above the matrix, and its legend."""
        colours = label_colours(groups)
        side_strip, top_strip = fig.add_subplot(self.grid[self.row, 1]), fig.add_subplot(self.grid[0, 2])
        rgba = np.array([colours[groups[i]] for i in order])
        side_strip.imshow(rgba[:, None, :], aspect="auto", interpolation="nearest")
        top_strip.imshow(rgba[None, :, :], aspect="auto", interpolation="nearest")
        for ax in (side_strip, top_strip):
            ax.set_xticks([])
            ax.set_yticks([])
        side_strip.set_xlabel(label, rotation=90, fontsize=8)
        ordered_groups = sorted(set(groups), key=lambda g: (g == "", g))
        handles = [Patch(color=colours[g], label=g or "(none)") for g in ordered_groups]
        fig.legend(handles=handles, title=label, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)


def write_values(heat_ax: Any, ordered: np.ndarray, values: list[float], cell_pt: float, middle: float) -> None:
    """Each cell's value, with the decimals that tell the values apart (0.999995 is not the diagonal's 1)."""
    decimals = decimals_to_tell_apart(values, least=2, most=8)
    font = min(max(cell_pt / (0.7 * (decimals + 2)), 3.0), 9.0)
    for i, j in np.ndindex(ordered.shape):
        value = ordered[i, j]
        heat_ax.text(j, i, f"{value:.{decimals}f}", ha="center", va="center", fontsize=font,
                     color="black" if value > middle else "white")  # fmt: skip


def plot_map(path: Path, *args: Any, **kwargs: Any) -> None:
    """`map_figure` saved to `path`."""
    save(map_figure(*args, **kwargs), path)


def map_figure(
    coords: np.ndarray,
    names: Sequence[str],
    groups: Sequence[str],
    title: str,
    axes: tuple[str, str],
    label: str | None = None,
) -> Figure:
    """2-D scatter of genomes coloured by label, the legend beside the plot, and names (up to
    40 genomes) placed off each other and inside the plot."""
    fig = Figure(figsize=(8.5, 6.5), layout="constrained")
    ax = fig.subplots()
    colours = label_colours(groups)
    for group in sorted(set(groups), key=lambda g: (g == "", g)):
        rows = [j for j, g in enumerate(groups) if g == group]
        ax.scatter(coords[rows, 0], coords[rows, 1], s=42, color=colours[group], edgecolor="white", linewidth=0.5,
                   label=group or "(none)")  # fmt: skip
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    if label:
        ax.legend(title=label, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.25)
    ax.margins(0.15)
    if len(names) <= 40:
        from adjustText import adjust_text  # moves labels off each other and off the points
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig).draw()  # lay the figure out first, then hold it: the labels are fitted to it
        fig.set_layout_engine("none")
        texts = [ax.text(x, y, name, fontsize=7) for (x, y), name in zip(coords, display_names(names), strict=True)]
        adjust_text(
            texts, x=coords[:, 0], y=coords[:, 1], ax=ax, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5}
        )
    return fig


LAYER_SCORES = (
    ("nn_accuracy", "nearest-neighbour accuracy"),
    ("gap", "within - between cosine"),
    ("silhouette", "silhouette"),
)
MARKERS = "osD^vP*X"


def plot_layers(path: Path, rows: Sequence[dict]) -> None:
    """`layers_figure` saved to `path`."""
    save(layers_figure(rows), path)


def layers_figure(rows: Sequence[dict]) -> Figure:
    """Accuracy, within-between gap and silhouette against layer, one line per model, on
    integer layer ticks; each model its own marker, so overlapping lines stay visible."""
    fig = Figure(figsize=(8, 8), layout="constrained")
    axes = fig.subplots(len(LAYER_SCORES), 1, sharex=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    for ax, (key, name) in zip(axes, LAYER_SCORES, strict=True):
        for i, model in enumerate(models):
            points = sorted((r["layer"], r[key]) for r in rows if r["model"] == model)
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], markersize=7 - i % 3, markerfacecolor="none",
                    linewidth=1.5, alpha=0.9, label=model)  # fmt: skip
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if key == "nn_accuracy":
            ax.set_ylim(-0.03, 1.03)
    axes[-1].set_xlabel("layer (hidden state)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(title="model", fontsize=8, loc="lower right")
    fig.suptitle("Which layer separates the label best?")
    return fig


def plot_ani(path: Path, pairs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], rows: Sequence[dict]) -> None:
    """Embedding cosine against skani ANI for every genome pair, at each model's layer whose
    cosine tracks ANI best (highest Spearman)."""
    fig = Figure(figsize=(7, 5.5), layout="constrained")
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
    save(fig, path)
