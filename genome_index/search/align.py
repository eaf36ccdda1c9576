"""Verified hits: align a query to candidate genomes with minimap2 (mappy) and say where and how well.

An embedding finds candidates; a base-level alignment says where the query sits in each and
at what identity, and tells apart genomes a sketch or a cosine cannot (a few SNPs between two
strains). Each candidate genome gets a minimap2 index, built once and kept by `Aligners`
(a resident searcher keeps them between queries, up to its capacity). Once it keeps as many
as it may (a one-shot query keeps none), a fragment is aligned to a genome whose index is not
kept through an index of the stretches its windows matched (`regions`: each matched stored
window widened by the query's length on both sides) made for that query alone: about 2 ms for
a 10 kb fragment, where the 3 Mbp genome's index takes 0.1 s to build and 9 MB to keep. Both
give the same alignments (tests compare them); longer queries, and genomes the query matched
nowhere, get the whole index.

Identity is matching bases over aligned columns (mismatches and gap columns included), as
BLAST counts it, except that an indel of LONG_GAP_BP or more splits an alignment in two: the
sides count, the gap does not, as two BLAST hits would (minimap2's assembly presets join
alignments across gaps of kilobases, which would otherwise dominate a whole-genome identity).
Over a whole genome this is an ANI by alignment; `query_coverage` is the aligned fraction.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genome_index.io.fasta import Record

SHORT_QUERY_BP = 1_000  # below: minimap2's short-read preset; above: its assembly preset
SHORT_PRESET, LONG_PRESET = "sr", "asm10"  # asm10: up to ~10 % divergence, strains of one species
LONG_GAP_BP = 50  # an indel this long splits an alignment (see the module's docstring)
MIN_LISTED_BP = 100  # alignments of fewer aligned query bases are not reported
CACHED_GENOMES = 64  # minimap2 indexes kept by an Aligners (about 9 MB each for 3 Mbp, asm10: bench_align.py)
REGION_FLANK_BP = 1_000  # a region reaches this far past the query's length on each side of a matched window
REGION_SHARE = 0.25  # regions covering more of a genome than this: its whole index is built (and kept) instead
Target = list[tuple[str, bytes]]  # a genome's records: (name, sequence)
Piece = tuple[str, int, bytes]  # a stretch of a record: (record name, where it starts in the record, its bases)


def preset_for(length: int) -> str:
    """The minimap2 preset for a query of `length` bp."""
    return SHORT_PRESET if length < SHORT_QUERY_BP else LONG_PRESET


@dataclass(frozen=True)
class Alignment:
    """One local alignment of the query to a genome. Coordinates are 0-based, end exclusive."""

    query_record: str
    query_start: int
    query_end: int
    target_record: str
    target_start: int
    target_end: int
    strand: str  # '+' or '-'
    matches: int
    columns: int  # aligned columns, long gaps left out
    mapq: int
    query_blocks: tuple[tuple[int, int], ...]  # query intervals aligned (split at long insertions)

    @property
    def identity(self) -> float:
        return self.matches / self.columns if self.columns else 0.0

    @property
    def aligned_bp(self) -> int:
        return sum(end - start for start, end in self.query_blocks)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: 1-based inclusive coordinates, as BLAST and samtools print them."""
        return {
            "query_record": self.query_record, "query_start": self.query_start + 1, "query_end": self.query_end,
            "target_record": self.target_record, "target_start": self.target_start + 1,
            "target_end": self.target_end, "strand": self.strand, "identity": round(self.identity, 6),
            "aligned_bp": self.aligned_bp, "mapq": self.mapq,
        }  # fmt: skip


@dataclass
class GenomeAlignment:
    """Every alignment of one query to one genome, and what they add up to."""

    query_length: int
    alignments: list[Alignment] = field(default_factory=list)  # best (most matches) first

    @property
    def identity(self) -> float | None:
        columns = sum(a.columns for a in self.alignments)
        return sum(a.matches for a in self.alignments) / columns if columns else None

    @property
    def aligned_bp(self) -> int:
        """Query bases inside an alignment (each counted once where alignments overlap)."""
        return covered([(a.query_record, s, e) for a in self.alignments for s, e in a.query_blocks])

    @property
    def target_bp(self) -> int:
        """Genome bases inside an alignment (each counted once where alignments overlap)."""
        return covered([(a.target_record, a.target_start, a.target_end) for a in self.alignments])

    @property
    def query_coverage(self) -> float:
        return self.aligned_bp / self.query_length if self.query_length else 0.0

    @property
    def match(self) -> float:
        """identity x query_coverage: how much of the query this genome explains, and how well."""
        return (self.identity or 0.0) * self.query_coverage

    @property
    def explained_bp(self) -> int:
        """Query bases this genome explains, less the edits it takes: aligned query bases minus
        mismatches and short-gap columns. Hits are ranked by it: between two genomes that both
        hold the query, the one that differs from it at fewer positions has more, whatever the
        alignments' lengths (a ratio such as identity can favour a shorter alignment)."""
        return self.aligned_bp - sum(a.columns - a.matches for a in self.alignments)

    @property
    def best(self) -> Alignment | None:
        return self.alignments[0] if self.alignments else None


def covered(intervals: list[tuple[str, int, int]]) -> int:
    """Bases inside any of the (record, start, end) intervals, each counted once."""
    total, record, reach = 0, None, 0
    for name, start, end in sorted(intervals):
        if name != record:
            record, reach = name, 0
        total += max(0, end - max(start, reach))
        reach = max(reach, end)
    return total


def regions(
    windows: Sequence[tuple[int, int, int]], query_length: int, record_lengths: Sequence[int]
) -> list[tuple[int, int, int]] | None:
    """The stretches (record, start, end) of a genome that hold every alignment of a query whose
    windows matched the stored `windows` (record number, start, end) of the genome: an alignment
    that holds a matched window reaches at most the query's length past it, so each window is
    widened by that and REGION_FLANK_BP on both sides (room for insertions), clipped to its
    record, and overlapping ones merged. None when they cover more than REGION_SHARE of the
    genome: then the whole genome is aligned to (its index is worth building and keeping)."""
    reach = query_length + REGION_FLANK_BP
    widened = sorted(
        (record, max(0, start - reach), min(record_lengths[record], end + reach)) for record, start, end in windows
    )
    merged: list[tuple[int, int, int]] = []
    for record, start, end in widened:
        if merged and merged[-1][0] == record and start <= merged[-1][2]:
            merged[-1] = (record, merged[-1][1], max(merged[-1][2], end))
        else:
            merged.append((record, start, end))
    if not merged or sum(end - start for _, start, end in merged) > REGION_SHARE * sum(record_lengths):
        return None
    return merged


def _alignment(hit: Any, query_record: str, target_names: Sequence[str], offsets: Sequence[int]) -> Alignment:
    """An Alignment from a mappy hit, its long gaps left out of the columns and query blocks;
    the target's coordinates are on its record (`offsets`: where each indexed sequence starts in it)."""
    columns, blocks = 0, []
    position = block_start = hit.q_st
    for length, op in hit.cigar:
        if op in (0, 7, 8):  # M, =, X: query and target advance together
            columns += length
            position += length
        elif op == 1:  # insertion: query bases without target
            if length >= LONG_GAP_BP:
                blocks.append((block_start, position))
                block_start = position + length
            else:
                columns += length
            position += length
        elif op == 2 and length < LONG_GAP_BP:  # deletion: target bases without query
            columns += length
    blocks.append((block_start, position))
    if hit.strand < 0:  # mappy gives query coordinates on the query's own strand; the cigar runs reversed
        total = hit.q_st + hit.q_en
        blocks = [(total - end, total - start) for start, end in blocks]
    number = int(hit.ctg) if len(target_names) > 1 else 0  # records are indexed by number; a bare sequence: N/A
    return Alignment(
        query_record, hit.q_st, hit.q_en, target_names[number], offsets[number] + hit.r_st, offsets[number] + hit.r_en,
        "+" if hit.strand > 0 else "-", hit.mlen, columns, hit.mapq,
        tuple((s, e) for s, e in blocks if e > s),
    )  # fmt: skip


class Aligners:
    """minimap2 indexes of stored genomes by (genome id, preset), built on first use and kept
    (the CACHED_GENOMES most recently used), and the threads that align with them (started
    once: starting two threads per query cost a 10 kb query about 3 of its 20 ms of
    alignment). Safe to share between threads."""

    def __init__(self, capacity: int = CACHED_GENOMES, threads: int | None = None) -> None:
        self.capacity = capacity
        self.threads = threads or os.cpu_count() or 1
        self._indexes: OrderedDict[tuple[int, str], tuple[Any, list[str]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The aligning threads, started on first use and kept while this object lives."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="genome-index-align")
            return self._pool

    def close(self) -> None:
        """Let the aligning threads go (a later alignment starts them again)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def get(self, genome_id: int, preset: str, target: Callable[[], Target]) -> tuple[Any, list[str]]:
        """The index of one genome (and its record names), built from `target()` if not kept."""
        key = (genome_id, preset)
        with self._lock:
            if key in self._indexes:
                self._indexes.move_to_end(key)
                return self._indexes[key]
        built = self.build(target(), preset)
        with self._lock:
            self._indexes[key] = built
            while len(self._indexes) > self.capacity:
                self._indexes.popitem(last=False)
        return built

    def build(self, records: Target, preset: str) -> tuple[Any, list[str]]:
        """A minimap2 index of `records` (and their names), not kept. mappy indexes one bare
        sequence or FASTA files, so several records go through one (a temporary file: 1 ms more)."""
        import mappy

        if len(records) == 1 and records[0][1]:
            aligner = mappy.Aligner(seq=records[0][1].decode("ascii"), preset=preset)
            if not aligner:
                raise RuntimeError("minimap2 could not index a genome of 1 record")
            return aligner, [records[0][0]]
        with tempfile.TemporaryDirectory(prefix="genome-index-align-") as tmp:
            path = Path(tmp) / "target.fa"
            with open(path, "wb") as handle:
                for number, (_, sequence) in enumerate(records):
                    handle.write(b">%d\n%s\n" % (number, sequence))
            aligner = mappy.Aligner(str(path), preset=preset, n_threads=self.threads)
        if not aligner:
            raise RuntimeError(f"minimap2 could not index a genome of {len(records)} record(s)")
        return aligner, [name for name, _ in records]

    def holds(self, genome_id: int, preset: str) -> bool:
        """Whether the index of this genome for this preset is kept."""
        with self._lock:
            return (genome_id, preset) in self._indexes

    def has_room(self) -> bool:
        """Whether one more index would be kept without dropping another."""
        with self._lock:
            return len(self._indexes) < self.capacity

    def genomes(self) -> set[int]:
        """The genomes whose indexes are kept."""
        with self._lock:
            return {genome_id for genome_id, _ in self._indexes}

    def __len__(self) -> int:
        return len(self._indexes)


def align(
    query: Sequence[Record],
    targets: dict[int, Callable[[], Target]],
    aligners: Aligners,
    pieces: dict[int, Callable[[], list[Piece] | None]] | None = None,
) -> dict[int, GenomeAlignment]:
    """Alignments of the query's records to each target genome (id -> its records, read when
    its index is not kept yet), or to the stretches of it `pieces` gives (where it gives any:
    `regions`) where the genome's whole index is not kept and the aligners keep no more, the
    genomes in parallel threads (minimap2 releases the GIL while it maps)."""
    length = sum(len(r.sequence) for r in query)
    preset = preset_for(max((len(r.sequence) for r in query), default=0))

    def one(genome_id: int) -> GenomeAlignment:
        whole = aligners.holds(genome_id, preset) or aligners.has_room()
        cut = pieces[genome_id]() if pieces is not None and genome_id in pieces and not whole else None
        if cut is None:
            aligner, names = aligners.get(genome_id, preset, targets[genome_id])
            offsets = [0] * len(names)
        else:
            aligner, names = aligners.build([(name, bases) for name, _, bases in cut], preset)
            offsets = [start for _, start, _ in cut]
        found = GenomeAlignment(length)
        for record in query:
            for hit in aligner.map(record.sequence):
                if hit.is_primary:
                    alignment = _alignment(hit, record.id, names, offsets)
                    if alignment.aligned_bp >= min(MIN_LISTED_BP, len(record.sequence) // 2):
                        found.alignments.append(alignment)
        found.alignments.sort(key=lambda a: (-a.matches, a.target_record, a.target_start))
        return found

    if len(targets) == 1:  # no thread to hand over to
        return {genome_id: one(genome_id) for genome_id in targets}
    return dict(zip(targets, aligners.pool.map(one, targets), strict=True))
