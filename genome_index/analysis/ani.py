"""Whole-genome ANI with skani (pyskani, the field's fast ANI tool): which embedding layer
tracks relatedness. skani reports pairs from about 80 % ANI up; below that a pair has none."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from genome_index.io.fasta import Genome
from genome_index.progress import SILENT, Progress

ANI_FLOOR = 0.80  # skani's range: pairs below it are not reported and not correlated


def ani_matrix(count: int, load: Callable[[int], Genome], progress: Progress = SILENT) -> np.ndarray:
    """Pairwise ANI of `count` genomes (`load(i)` reads genome i; each is read twice, never all
    held at once) as a fraction: the mean of both directions where skani reports both, NaN
    where it reports neither (below its range), 1 on the diagonal."""
    import pyskani

    database = pyskani.Database()
    directed = np.full((count, count), np.nan)
    with progress.step("ANI with skani (sketch, then query)", 2 * count, "genome passes") as step:
        for i in range(count):
            database.sketch(str(i), *(record.sequence for record in load(i).records))
            step.advance(1)
        for i in range(count):
            for hit in database.query(str(i), *(record.sequence for record in load(i).records)):
                directed[i, int(hit.reference_name)] = hit.identity
            step.advance(1)
    both = np.stack([directed, directed.T])
    seen = (~np.isnan(both)).sum(axis=0)
    ani = np.where(seen > 0, np.nansum(both, axis=0) / np.maximum(seen, 1), np.nan)
    np.fill_diagonal(ani, 1.0)
    return ani


def ani_correlation(similarity: np.ndarray, ani: np.ndarray) -> tuple[float, int]:
    """Spearman correlation of embedding cosine with ANI over the genome pairs skani reports
    (ANI >= 80 %), and how many pairs; NaN with fewer than three pairs."""
    from scipy.stats import spearmanr

    upper = np.triu_indices(len(ani), k=1)
    keep = ~np.isnan(ani[upper]) & (ani[upper] >= ANI_FLOOR)
    pairs = int(keep.sum())
    if pairs < 3:
        return float("nan"), pairs
    rho = spearmanr(similarity[upper][keep], ani[upper][keep]).statistic
    return float(rho), pairs


def write_ani(path: Path, names: Sequence[str], ani: np.ndarray) -> None:
    """TSV with genome names as header row and first column; empty where skani saw no pair."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["genome", *names])
        for name, row in zip(names, ani, strict=True):
            writer.writerow([name, *("" if np.isnan(v) else f"{v:.6f}" for v in row)])
