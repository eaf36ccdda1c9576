"""FracMinHash sketches (sourmash's) for re-ranking hits by k-mer containment, with an ANI estimate.

Each stored genome keeps the hashes of its canonical 21-mers below 1/1000 of the hash range
(sourmash's scaled=1000; `build --sketch-scaled` sets another density); a query's sketch,
compared with them, gives containment (the share of the query's k-mers found in the genome)
and sourmash's ANI estimate from it (C^(1/k)) with a 95 % confidence interval. That estimate
assumes the whole query has a counterpart in the genome: a low containment may mean a distant
genome or one that holds part of the query (a plasmid), so below ANI_FLOOR no ANI is given.

Genomes (build) and samples (gather) are sketched by sourmash's Rust code. A query up to
NUMPY_SKETCH_BP is sketched here in numpy, and its containment and ANI interval computed here
too, to sourmash's formulas: importing sourmash loads scipy, 0.9 s of a one-shot query that
should take one, and its interval costs about 1 ms a genome. Both give the same hashes and
figures (tests/test_retrieval.py compares them with sourmash's own).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genome_index.io.fasta import Record
from genome_index.store.schema import SKETCH_KSIZE

if TYPE_CHECKING:
    import sourmash

NUMPY_SKETCH_BP = 200_000  # queries up to this are sketched in numpy (about 60 ms at this length); longer by sourmash
SEED = 42  # sourmash's MurmurHash3 seed
_U64 = np.uint64
_C1, _C2 = _U64(0x87C37B91114253D5), _U64(0x4CF5AD432745937F)
_COMPLEMENT = np.arange(256, dtype=np.uint8)
_COMPLEMENT[np.frombuffer(b"ACGT", np.uint8)] = np.frombuffer(b"TGCA", np.uint8)
_ACGT = np.zeros(256, dtype=bool)
_ACGT[np.frombuffer(b"ACGT", np.uint8)] = True


def new_minhash(scaled: int) -> sourmash.MinHash:
    import sourmash  # here: it imports scipy (about 0.9 s), which a query of a few kb does not need

    return sourmash.MinHash(n=0, ksize=SKETCH_KSIZE, scaled=scaled)


def sketch_records(records: Sequence[Record], scaled: int) -> np.ndarray:
    """Sorted uint64 hashes of the records' canonical k-mers (k-mers with N are skipped)."""
    if sum(len(r.sequence) for r in records) <= NUMPY_SKETCH_BP:
        parts = [fracminhash(r.sequence, SKETCH_KSIZE, scaled) for r in records]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=_U64)
    minhash = new_minhash(scaled)
    for record in records:
        minhash.add_sequence(record.sequence.decode("ascii"), force=True)
    return np.array(sorted(minhash.hashes), dtype=_U64)


def max_hash(scaled: int) -> int:
    """The largest hash a sketch at `scaled` keeps (sourmash's: the hash range over scaled, in float64)."""
    return min(int(float(2**64) / scaled), 2**64 - 1)


def fracminhash(sequence: bytes, ksize: int, scaled: int) -> np.ndarray:
    """Sorted distinct hashes of `sequence`'s canonical k-mers kept at `scaled`, as sourmash's
    `add_sequence(force=True)` makes them: upper case, k-mers with other letters than ACGT
    skipped, each k-mer or its reverse complement (whichever sorts first) hashed as text by
    MurmurHash3 x64 128 (its first 64 bits, seed 42)."""
    bases = np.frombuffer(sequence.upper(), dtype=np.uint8)
    count = len(bases) - ksize + 1
    if count <= 0:
        return np.empty(0, dtype=_U64)
    not_acgt = np.concatenate([[0], np.cumsum(~_ACGT[bases], dtype=np.int64)])
    starts = np.flatnonzero(not_acgt[ksize:] == not_acgt[:count])
    forward = _words(bases, starts, ksize)
    reverse = _words(_COMPLEMENT[bases[::-1]], len(bases) - ksize - starts, ksize)
    first = np.ones(len(starts), dtype=bool)  # forward <= reverse as text: compare big-endian words, last first
    for ahead, behind in zip(reversed(forward), reversed(reverse), strict=True):
        ahead, behind = ahead.byteswap(), behind.byteswap()
        first = (ahead < behind) | ((ahead == behind) & first)
    hashes = _murmur3([np.where(first, f, r) for f, r in zip(forward, reverse, strict=True)], ksize)
    return np.unique(hashes[hashes <= _U64(max_hash(scaled))])


def _words(bases: np.ndarray, starts: np.ndarray, ksize: int) -> list[np.ndarray]:
    """The k-mers at `starts` as little-endian 64-bit words (the last one zero-padded), one
    array per word: every byte offset of the sequence read as a word, in one strided view."""
    padded = np.concatenate([bases, np.zeros(8, dtype=np.uint8)])
    at = np.ndarray(shape=(len(bases) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    words = []
    for offset in range(0, ksize, 8):
        word = at[starts + offset]
        if ksize - offset < 8:
            word &= _U64((1 << (8 * (ksize - offset))) - 1)
        words.append(word)
    return words


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U64(r)) | (x >> _U64(64 - r))


def _fmix(k: np.ndarray) -> np.ndarray:
    k ^= k >> _U64(33)
    k *= _U64(0xFF51AFD7ED558CCD)
    k ^= k >> _U64(33)
    k *= _U64(0xC4CEB9FE1A85EC53)
    k ^= k >> _U64(33)
    return k


def _murmur3(words: list[np.ndarray], length: int) -> np.ndarray:
    """The first 64 bits of MurmurHash3 x64 128 (seed SEED) of keys of `length` bytes, given as
    little-endian words (`_words`), vectorised over the keys."""
    h1 = np.full(len(words[0]), SEED, dtype=_U64)
    h2 = h1.copy()
    blocks, tail = divmod(length, 16)
    with np.errstate(over="ignore"):
        for block in range(blocks):
            h1 ^= _rotl(words[2 * block] * _C1, 31) * _C2
            h1 = (_rotl(h1, 27) + h2) * _U64(5) + _U64(0x52DCE729)
            h2 ^= _rotl(words[2 * block + 1] * _C2, 33) * _C1
            h2 = (_rotl(h2, 31) + h1) * _U64(5) + _U64(0x38495AB5)
        if tail > 8:
            h2 ^= _rotl(words[2 * blocks + 1] * _C2, 33) * _C1
        if tail > 0:
            h1 ^= _rotl(words[2 * blocks] * _C1, 31) * _C2
        h1 ^= _U64(length)
        h2 ^= _U64(length)
        h1 += h2
        h2 += h1
        h1, h2 = _fmix(h1), _fmix(h2)
        h1 += h2
    return h1


ANI_FLOOR = 0.95  # the species boundary; containment 0.34 at k = 21
CONFIDENCE = 0.95
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval


@dataclass(frozen=True)
class SketchEstimate:
    """What the sketches say of a query and a genome: the containment, over how many query
    hashes, and the ANI it implies with its 95 % interval (None below ANI_FLOOR)."""

    containment: float
    query_hashes: int
    ani: float | None
    ani_low: float | None
    ani_high: float | None


def estimate(query: np.ndarray, genome: np.ndarray, scaled: int) -> SketchEstimate | None:
    """The containment of the query's hashes in the genome's (both sorted, distinct) and the
    ANI it implies; None when the query has no hashes (shorter than about `scaled` bases)."""
    if len(query) == 0:
        return None
    places = np.minimum(np.searchsorted(genome, query), max(len(genome) - 1, 0))
    shared = int(np.count_nonzero(genome[places] == query)) if len(genome) else 0
    contained = shared / len(query)
    if contained ** (1 / SKETCH_KSIZE) < ANI_FLOOR:
        return SketchEstimate(contained, len(query), None, None, None)
    ani, low, high = containment_ani(contained, len(query) * scaled, scaled)
    return SketchEstimate(contained, len(query), ani, low, high)


def containment_ani(
    containment: float, kmers: int, scaled: int, ksize: int = SKETCH_KSIZE
) -> tuple[float, float | None, float | None]:
    """ANI from the containment of a sketch standing for `kmers` distinct k-mers, with its 95 %
    interval, as sourmash's `containment_ani(estimate_ci=True)` gives them (Hera et al. 2023,
    doi:10.1101/2022.01.11.475870): the mutation rate p with (1-p)^k = C, and the two rates at
    which C lies z standard deviations from the expected containment; an end that cannot be
    solved for is None."""
    if containment >= 1:
        return 1.0, 1.0, 1.0
    if containment <= 0:
        return 0.0, 0.0, 0.0
    ani = containment ** (1 / ksize)
    fraction = 1 / scaled
    bias = 1 - (1 - fraction) ** kmers
    sampling = (1 - fraction) / (fraction * kmers**3 * bias**2)

    def variance(rate: float) -> float:
        """Variance of the containment estimate at mutation rate `rate`."""
        mutated = 1 - (1 - rate) ** ksize  # share of k-mers a mutation touches
        spread = (
            kmers * (1 - mutated) * (mutated * (2 * ksize + 2 / rate - 1) - 2 * ksize)
            + ksize * (ksize - 1) * (1 - mutated) ** 2
            + 2 * (1 - mutated) / rate**2 * ((1 + (ksize - 1) * (1 - mutated)) * rate - mutated)
        )
        if spread < 0:
            return math.nan
        expected = kmers * mutated
        return sampling * (kmers * expected - (spread + expected**2)) + spread / kmers**2

    def bound(sign: int) -> float | None:
        def gap(rate: float) -> float:
            spread = variance(rate)
            return (1 - rate) ** ksize + sign * Z_95 * math.sqrt(spread) - containment if spread >= 0 else math.nan

        return _root(gap, 1e-7, 1 - 1e-7)

    high_rate, low_rate = bound(+1), bound(-1)
    return (
        ani,
        None if high_rate is None or low_rate is None else 1 - high_rate,
        None if high_rate is None or low_rate is None else 1 - low_rate,
    )


def _root(function: Callable[[float], float], low: float, high: float, tolerance: float = 1e-13) -> float | None:
    """A root of `function` between `low` and `high` by bisection (its values there must differ
    in sign), or None; bisection needs no scipy and meets brentq's answer to 1e-12."""
    f_low, f_high = function(low), function(high)
    if not (f_low * f_high <= 0):  # same signs, or a nan
        return None
    while high - low > tolerance:
        middle = (low + high) / 2
        f_middle = function(middle)
        if math.isnan(f_middle):
            return None
        if (f_middle <= 0) == (f_low <= 0):
            low, f_low = middle, f_middle
        else:
            high = middle
    return (low + high) / 2


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
