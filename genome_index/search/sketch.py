"""FracMinHash sketches (sourmash) for re-ranking hits by k-mer containment, with an ANI estimate.

Each stored genome keeps the hashes of its canonical 21-mers below 1/1000 of the hash range
(sourmash's scaled=1000; `build --sketch-scaled` sets another density); a query's sketch,
compared with them, gives containment (the share of the query's k-mers found in the genome)
and sourmash's ANI estimate from it (C^(1/k)) with a 95 % confidence interval. That estimate
assumes the whole query has a counterpart in the genome: a low containment may mean a distant
genome or one that holds part of the query (a plasmid), so below ANI_FLOOR no ANI is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sourmash

from genome_index.io.fasta import Record
from genome_index.store.schema import SKETCH_KSIZE


def new_minhash(scaled: int) -> sourmash.MinHash:
    return sourmash.MinHash(n=0, ksize=SKETCH_KSIZE, scaled=scaled)


def sketch_records(records: Sequence[Record], scaled: int) -> np.ndarray:
    """Sorted uint64 hashes of the records' canonical k-mers (k-mers with N are skipped)."""
    minhash = new_minhash(scaled)
    for record in records:
        minhash.add_sequence(record.sequence.decode("ascii"), force=True)
    return np.array(sorted(minhash.hashes), dtype=np.uint64)


def from_hashes(hashes: Sequence[int] | np.ndarray, scaled: int) -> sourmash.MinHash:
    minhash = new_minhash(scaled)
    minhash.add_many([int(h) for h in hashes])
    return minhash


ANI_FLOOR = 0.95  # the species boundary; containment 0.34 at k = 21


@dataclass(frozen=True)
class SketchEstimate:
    """What the sketches say of a query and a genome: the containment, over how many query
    hashes, and the ANI it implies with its 95 % interval (None below ANI_FLOOR)."""

    containment: float
    query_hashes: int
    ani: float | None
    ani_low: float | None
    ani_high: float | None


def estimate(query: sourmash.MinHash, genome: sourmash.MinHash) -> SketchEstimate | None:
    """The containment of the query in the genome and the ANI it implies; None when the query
    has no hashes (shorter than about `scaled` bases)."""
    if len(query) == 0:
        return None
    contained = float(query.contained_by(genome))
    if contained ** (1 / SKETCH_KSIZE) < ANI_FLOOR:
        return SketchEstimate(contained, len(query), None, None, None)
    result = query.containment_ani(genome, containment=contained, estimate_ci=True)
    low = None if result.dist_high is None else 1 - result.dist_high
    high = None if result.dist_low is None else 1 - result.dist_low
    return SketchEstimate(contained, len(query), 1 - result.dist, low, high)


class SketchIndex:
    """Which stored genomes share sketch hashes with a query: every stored hash, sorted, beside
    its genome (sourmash keeps such a reverse index for `gather`; this one is two arrays a
    searcher holds, looked up with one `searchsorted`)."""

    def __init__(self, sketches: dict[int, Sequence[int]]) -> None:
        hashes = [np.asarray(h, dtype=np.uint64) for h in sketches.values()]
        genomes = [np.full(len(h), gid, dtype=np.int64) for gid, h in zip(sketches, hashes, strict=True)]
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        order = np.argsort(all_hashes, kind="stable")
        self.hashes = all_hashes[order]
        self.genomes = np.concatenate(genomes)[order] if genomes else np.empty(0, dtype=np.int64)

    def pairs(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (position in the query, genome id) where a genome's sketch holds that query hash
        (the query's hashes sorted and distinct)."""
        lo = np.searchsorted(self.hashes, query, side="left")
        sizes = np.searchsorted(self.hashes, query, side="right") - lo
        starts = np.repeat(lo - np.cumsum(sizes) + sizes, sizes)  # each match's place: its run's start + its rank
        matches = starts + np.arange(sizes.sum())
        return np.repeat(np.arange(len(query)), sizes), self.genomes[matches]

    def shared(self, query: np.ndarray) -> dict[int, int]:
        """Genome id -> how many of the query's hashes (sorted, distinct) its sketch holds."""
        _, genome_ids = self.pairs(query)
        genomes, counts = np.unique(genome_ids, return_counts=True)
        return dict(zip(genomes.tolist(), counts.tolist(), strict=True))
