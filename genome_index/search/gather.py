"""`gather`: which stored genomes a sample (reads or contigs) holds, and how much of each.

Two passes over the sample, streamed (memory does not grow with its size):

1. *cover* — the sample's FracMinHash sketch (the stored genomes' kind) is explained greedily, as
   sourmash gather does: at each step the stored genome holding the most of the sample's
   still-unexplained hashes is taken and its hashes are explained, until no genome holds the
   threshold (0.1 % of the sample's hashes, or `threshold_bp` / scaled). Genomes a sketch
   cannot tell apart (a near tie) all go on to the next pass, where the bases decide;
2. *verify* — the sample is mapped with minimap2 to the gathered genomes only (one index of
   them all, so a read goes to the genome it fits best: short-read preset for reads, assembly
   preset for contigs, nanopore preset for long reads). A read (or each primary alignment of a
   contig) that fits several genomes equally well (the same aligned bases less edits) is shared
   among them by expectation-maximisation in proportion to their depth, the way RNA-seq
   quantifiers share multi-mapping reads; each genome then has reads and bases assigned,
   abundance (its share of the mapped bases), depth (bases assigned / its length), breadth (its
   bases covered by a read that fits it as well as anywhere) and identity (matching bases over
   alignment columns, minimap2's figures).
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import GZIP_MAGIC, Record, iter_records
from genome_index.progress import SILENT, Progress
from genome_index.search import sketch
from genome_index.search.align import LONG_PRESET, SHORT_PRESET, SHORT_QUERY_BP, Target
from genome_index.search.hits import DIGITS, GatherRow, rounded, typed_labels
from genome_index.search.sketch import SketchIndex
from genome_index.settings import GatherOptions

log = logging.getLogger("genome_index")
THRESHOLD_SHARE = 0.001  # default stop: no genome holds this share of the sample's hashes
MAX_GATHERED = 200  # genomes verified at most (a sample of more is a store-sized question)
NEAR_TIE = 0.95  # genomes within this share of the most unexplained hashes are a near tie
MAX_RIVALS = 4  # genomes of a near tie mapped beside the one taken (the sketch cannot tell them apart)
MIN_EXCLUSIVE = 3  # reads that fit a genome of a near tie better than another are evidence above this
SKETCH_BATCH_BP = 2_000_000  # reads joined by N into one sourmash call (a call a read costs 5x)
MAP_BATCH = 4_000  # reads a mapping task takes
LONG_READ_PRESET = "map-ont"  # FASTQ of reads of 1 kb and up: nanopore or PacBio CLR
EM_ROUNDS = 500  # rounds of sharing ambiguous reads at most ...
EM_TOLERANCE = 1e-9  # ... stopping when no genome's depth moves by more than this share
LENGTH_SAMPLE = 10_000  # records whose median length picks the minimap2 preset


@dataclass(frozen=True)
class Source:
    """One input of a sample: a file (plain or gzip FASTA/FASTQ), or its bytes in memory."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def records(self) -> Iterator[Record]:
        if self.path is not None:
            return iter_records(self.path, fastq=True)
        assert self.data is not None
        return iter_records(self.name, io.BytesIO(self.data), fastq=True)

    def is_fastq(self) -> bool:
        """Whether the input's first text is a FASTQ '@' line."""
        if self.data is not None:
            return self.data.lstrip()[:1] == b"@"
        assert self.path is not None
        with open(self.path, "rb") as handle:
            head = handle.read(2)
        with gzip.open(self.path, "rb") if head == GZIP_MAGIC else open(self.path, "rb") as handle:
            return handle.read(4096).lstrip()[:1] == b"@"


@dataclass(frozen=True)
class Sample:
    """The inputs of one sample (two files of a read pair, several lanes, or one assembly)."""

    sources: tuple[Source, ...]

    @classmethod
    def of(cls, given: str | Path | bytes | Sequence[str | Path]) -> Sample:
        """A sample from a path, several paths, or FASTA/FASTQ bytes in memory."""
        if isinstance(given, bytes):
            if given[:2] == GZIP_MAGIC:
                raise GenomeIndexError("sample: gzip data; send FASTA or FASTQ text")
            if given.strip() and not given.lstrip().startswith((b">", b"@")):
                given = b">sample\n" + given  # a bare sequence: one contig
            return cls((Source("sample", data=given),))
        paths = [given] if isinstance(given, str | Path) else list(given)
        if not paths:
            raise GenomeIndexError("a sample needs at least one FASTA or FASTQ file")
        for path in paths:
            if Path(path).is_dir():
                raise GenomeIndexError(f"{path}: a folder; give the sample's FASTA or FASTQ files")
            if not Path(path).is_file():
                raise GenomeIndexError(f"{path}: no such file")
        return cls(tuple(Source(str(p), path=Path(p)) for p in paths))

    @property
    def name(self) -> str:
        return self.sources[0].name if len(self.sources) == 1 else f"{self.sources[0].name} (+{len(self.sources) - 1})"

    def records(self) -> Iterator[Record]:
        for source in self.sources:
            yield from source.records()


@dataclass
class SampleSketch:
    """What the first pass learns of a sample: its sketch hashes (sorted), reads and bases, and
    the median length of its first records (which picks the minimap2 preset)."""

    hashes: np.ndarray
    records: int
    bases: int
    median_length: int
    fastq: bool


def sketch_sample(sample: Sample, scaled: int, progress: Progress = SILENT) -> SampleSketch:
    """The sample's FracMinHash sketch, in one streamed pass (reads joined by N: no k-mer spans two)."""
    minhash = sketch.new_minhash(scaled)
    batch: list[str] = []
    batch_bp = records = bases = 0
    lengths: list[int] = []
    with progress.step("sketching the sample", None, "bp", reads=0) as step:
        for record in sample.records():
            batch.append(record.sequence.decode("ascii"))
            batch_bp += len(record.sequence)
            records += 1
            if len(lengths) < LENGTH_SAMPLE:
                lengths.append(len(record.sequence))
            if batch_bp >= SKETCH_BATCH_BP:
                minhash.add_sequence("N".join(batch), force=True)
                step.advance(batch_bp, reads=len(batch))
                bases += batch_bp
                batch, batch_bp = [], 0
        minhash.add_sequence("N".join(batch), force=True)
        step.advance(batch_bp, reads=len(batch))
        bases += batch_bp
    if not records:
        raise GenomeIndexError(f"{sample.name}: an empty sample (no reads or contigs)")
    hashes = np.array(sorted(minhash.hashes), dtype=np.uint64)
    return SampleSketch(hashes, records, bases, int(np.median(lengths)), sample.sources[0].is_fastq())


@dataclass(frozen=True)
class Gathered:
    """A genome the cover took at step `rank`: the sample hashes it explained that no genome taken
    before had (`unique`), all the sample hashes it holds (`shared`), and its own. A rival is a
    genome the sketch could not tell from the one taken at its step (a near tie): it shares the
    step's rank, is not reported on the sketch alone, and is kept only if the mapping gives it reads."""

    rank: int
    genome_id: int
    unique: int
    shared: int
    genome_hashes: int
    rival: bool = False


def greedy_cover(
    sample: np.ndarray, index: SketchIndex, sizes: dict[int, int], min_hashes: int, most: int = MAX_GATHERED
) -> list[Gathered]:
    """The genomes that explain the sample's hashes, greedily: at each step the genome holding
    the most unexplained ones, where several come within NEAR_TIE of that the one whose own
    sketch the sample holds most of (an excerpt or plasmid found whole beats a genome that holds
    the same region and nothing else of the sample), then the lower id; up to MAX_RIVALS others
    of the near tie come after it as its rivals. Stops when no genome holds `min_hashes`
    unexplained hashes (at least 1), or after `most` steps."""
    positions, genome_ids = index.pairs(sample)
    if not len(positions):
        return []
    genomes, slot = np.unique(genome_ids, return_inverse=True)
    shared = np.bincount(slot, minlength=len(genomes))
    contained = shared / np.maximum([sizes[int(g)] for g in genomes], 1)
    unexplained = np.ones(len(sample), dtype=bool)
    taken: list[Gathered] = []
    seen: set[int] = set()
    for rank in range(1, most + 1):
        counts = np.bincount(slot[unexplained[positions]], minlength=len(genomes))
        top = int(counts.max())
        if top < min_hashes:
            break
        near = np.flatnonzero(counts >= NEAR_TIE * top)
        near = near[np.lexsort((genomes[near], -counts[near], -contained[near]))]
        for place, best in enumerate(near[: 1 + MAX_RIVALS].tolist()):
            gid = int(genomes[best])
            if place == 0 or gid not in seen:
                taken.append(Gathered(rank, gid, int(counts[best]), int(shared[best]), sizes[gid], rival=place > 0))
                seen.add(gid)
        unexplained[positions[slot == near[0]]] = False
    else:
        log.warning("gather stopped after %d genomes; the rest of the sample is not explained", most)
    winners = {g.genome_id for g in taken if not g.rival}
    return [g for g in taken if not g.rival or g.genome_id not in winners]  # a rival taken later is a winner there


@dataclass
class Verified:
    """What mapping says of one gathered genome (bases and reads shared by expectation-maximisation)."""

    reads: float = 0.0
    bases: float = 0.0
    matches: int = 0
    columns: int = 0
    covered: int = 0
    length: int = 0

    @property
    def depth(self) -> float:
        return self.bases / self.length if self.length else 0.0

    @property
    def breadth(self) -> float:
        return self.covered / self.length if self.length else 0.0

    @property
    def identity(self) -> float | None:
        return self.matches / self.columns if self.columns else None


def preset_for_sample(found: SampleSketch) -> str:
    """minimap2's preset for the sample: short reads, long reads (FASTQ), or contigs."""
    if found.median_length < SHORT_QUERY_BP:
        return SHORT_PRESET
    return LONG_READ_PRESET if found.fastq else LONG_PRESET


@dataclass
class _Tally:
    """One mapping task's findings: equivalence classes of reads (the genomes a read fits
    equally best -> reads, bases), the reference intervals they cover, and per-genome
    matches and columns."""

    classes: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    matches: dict[int, int] = field(default_factory=dict)
    columns: dict[int, int] = field(default_factory=dict)
    unmapped: int = 0


class _Reference:
    """One minimap2 index of every gathered genome, and where each of its records lies in one
    coordinate space of them all (for the coverage bitmap)."""

    def __init__(self, targets: list[Target], preset: str, threads: int) -> None:
        import mappy

        self.genome_of: list[int] = []
        self.offset: list[int] = []
        self.lengths = [sum(len(s) for _, s in target) for target in targets]
        total = 0
        with tempfile.TemporaryDirectory(prefix="genome-index-gather-") as tmp:
            path = Path(tmp) / "gathered.fa"
            with open(path, "wb") as handle:
                for slot, target in enumerate(targets):
                    for _, sequence in target:
                        handle.write(b">%d\n%s\n" % (len(self.genome_of), sequence))
                        self.genome_of.append(slot)
                        self.offset.append(total)
                        total += len(sequence)
            self.aligner = mappy.Aligner(
                str(path), preset=preset, best_n=max(5, min(len(targets), 50)), n_threads=threads
            )
        if not self.aligner:
            raise RuntimeError(f"minimap2 could not index {len(targets)} gathered genome(s)")
        self.total = total
        self._buffers = threading.local()

    def tally(self, sequences: list[bytes]) -> _Tally:
        """Map a batch of reads (a worker thread's task; minimap2 runs without the GIL)."""
        import mappy

        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = mappy.ThreadBuffer()
        found = _Tally()
        for sequence in sequences:
            hits = list(self.aligner.map(sequence, buf=buffer))
            if not hits:
                found.unmapped += 1
                continue
            for primary in hits:
                if primary.is_primary:
                    self._unit(primary, hits, found)
        return found

    def _unit(self, primary: Any, hits: list[Any], found: _Tally) -> None:
        """One primary alignment and the genomes that fit its query span as well (secondaries
        over at least half of it with as many aligned bases less edits)."""
        best: dict[int, Any] = {}
        top = _fit(primary)
        for hit in hits:
            overlap = min(hit.q_en, primary.q_en) - max(hit.q_st, primary.q_st)
            if hit is not primary and (hit.is_primary or overlap * 2 < primary.q_en - primary.q_st):
                continue
            fit = _fit(hit)
            if fit > top:
                top, best = fit, {}
            if fit == top:
                best.setdefault(self.genome_of[int(hit.ctg)], hit)
        genomes = tuple(sorted(best))
        counts = found.classes.setdefault(genomes, [0, 0])
        counts[0] += 1
        counts[1] += primary.q_en - primary.q_st
        for slot, hit in best.items():
            found.starts.append(self.offset[int(hit.ctg)] + hit.r_st)
            found.ends.append(self.offset[int(hit.ctg)] + hit.r_en)
            found.matches[slot] = found.matches.get(slot, 0) + hit.mlen
            found.columns[slot] = found.columns.get(slot, 0) + hit.blen


def _fit(hit: Any) -> int:
    """How well an alignment explains the query: aligned query bases less edits."""
    return hit.q_en - hit.q_st - hit.NM


def share_ambiguous(classes: dict[tuple[int, ...], list[int]], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Reads and bases of each genome: a class of reads that fit several genomes equally is
    shared in proportion to their depths, found by expectation-maximisation (reads that fit
    one genome anchor it)."""
    size = np.asarray(lengths, dtype=float)
    depth = np.ones(len(lengths))
    reads = bases = np.zeros(len(lengths))
    for _ in range(EM_ROUNDS):
        reads, bases = np.zeros(len(lengths)), np.zeros(len(lengths))
        for genomes, (count, bp) in classes.items():
            slots = list(genomes)
            weights = depth[slots]
            share = weights / weights.sum() if weights.sum() > 0 else np.full(len(slots), 1 / len(slots))
            reads[slots] += count * share
            bases[slots] += bp * share
        moved = bases / size
        if np.abs(moved - depth).max() <= EM_TOLERANCE * max(moved.max(), 1e-12):
            break
        depth = moved
    return reads, bases


@dataclass
class Mapped:
    """The sample mapped to the gathered genomes: each genome's figures (reads and bases not yet
    shared), the classes of reads by the genomes they fit best, and the reads that fit none."""

    verified: list[Verified]
    classes: dict[tuple[int, ...], list[int]]
    unmapped: int

    def exclusive(self, genome: int, other: int) -> int:
        """Reads that fit `genome` better than `other`: in a class with the one and not the other."""
        return sum(count for genomes, (count, _) in self.classes.items() if genome in genomes and other not in genomes)

    def outfitted(self, group: list[int]) -> set[int]:
        """The genomes of a near tie (the sketch could not tell them apart) that the reads do not
        tell apart from another of the group better than sequencing errors would: a genome whose
        reads that fit it better than another's are fewer than the other's and no more than
        MIN_EXCLUSIVE plus twice the reads errors would turn its way (a read over a base where
        they differ meets the other's letter by error at a third of the error rate)."""
        columns = sum(self.verified[g].columns for g in group)
        error = 1 - sum(self.verified[g].matches for g in group) / columns if columns else 0.0
        out = set()
        for genome in group:
            for other in group:
                mine, theirs = self.exclusive(genome, other), self.exclusive(other, genome)
                if other != genome and other not in out and theirs > mine:
                    if mine <= MIN_EXCLUSIVE + 2 * error / 3 * (mine + theirs):
                        out.add(genome)
                        break
        return out

    def share(self, min_bases: float, min_share: float, groups: list[list[int]]) -> set[int]:
        """Give every genome its reads and bases (`share_ambiguous`), first leaving out the
        genomes of a near tie the reads give no more than errors would (`outfitted`), then the
        genomes given fewer than `min_bases` or `min_share` of the mapped bases (their reads go
        to the others, or nowhere) until none is; the genomes kept."""
        kept = set(range(len(self.verified)))
        for group in groups:
            kept -= self.outfitted(group)
        lengths = [one.length for one in self.verified]
        while True:
            classes: dict[tuple[int, ...], list[int]] = {}
            for genomes, (count, bp) in self.classes.items():
                left = tuple(g for g in genomes if g in kept)
                if left:
                    counts = classes.setdefault(left, [0, 0])
                    counts[0] += count
                    counts[1] += bp
            reads, bases = share_ambiguous(classes, lengths)
            floor = max(min_bases, min_share * bases.sum())
            weak = {slot for slot in kept if bases[slot] < floor}
            if not weak or weak == kept:
                break
            kept -= weak
        for slot, one in enumerate(self.verified):
            one.reads, one.bases = float(reads[slot]), float(bases[slot])
        return kept


def map_sample(
    sample: Sample,
    targets: list[Target],
    preset: str,
    threads: int,
    progress: Progress = SILENT,
    records: int | None = None,
) -> Mapped:
    """Map every read of the sample to the targets (the gathered genomes' records) in worker
    threads. Reads stream through a bounded queue of tasks, so memory stays bounded by the
    genomes' length (a bitmap of the bases covered), not the sample's. `records`, known from
    the first pass, is the progress bar's total."""
    reference = _Reference(targets, preset, threads)
    bitmap = np.zeros(reference.total, dtype=bool)
    mapped = Mapped([Verified(length=length) for length in reference.lengths], {}, 0)

    def merge(done: Future) -> None:
        found: _Tally = done.result()
        mapped.unmapped += found.unmapped
        for genomes, (count, bp) in found.classes.items():
            counts = mapped.classes.setdefault(genomes, [0, 0])
            counts[0] += count
            counts[1] += bp
        for slot, value in found.matches.items():
            mapped.verified[slot].matches += value
            mapped.verified[slot].columns += found.columns[slot]
        _mark(bitmap, np.asarray(found.starts, dtype=np.int64), np.asarray(found.ends, dtype=np.int64))

    with (
        progress.step("mapping the sample", records, "reads") as step,
        ThreadPoolExecutor(max_workers=threads) as pool,
    ):
        pending: list[tuple[Future, int]] = []
        for batch in _batches(sample.records(), MAP_BATCH):
            pending.append((pool.submit(reference.tally, batch), len(batch)))
            while len(pending) > 2 * threads:  # bounded: a few batches in flight
                done, size = pending.pop(0)
                merge(done)
                step.advance(size)
        for done, size in pending:
            merge(done)
            step.advance(size)
    bounds = np.cumsum([0, *reference.lengths]).tolist()
    for slot, one in enumerate(mapped.verified):  # counted a genome at a time: a sum over the bitmap is 8 bytes a base
        one.covered = int(np.count_nonzero(bitmap[bounds[slot] : bounds[slot + 1]]))
    return mapped


def _batches(records: Iterator[Record], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for record in records:
        batch.append(record.sequence)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _mark(bitmap: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Set the bitmap over every [start, end) interval (merged first: deep coverage overlaps)."""
    if not len(starts):
        return
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] > ends[:-1]
    run_starts = starts[new]
    run_ends = ends[np.append(np.flatnonzero(new)[1:] - 1, len(starts) - 1)]
    for start, end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        bitmap[start:end] = True


@dataclass
class GatherResult:
    """A sample's genomes (in the order the cover took them) and what the sample was."""

    sample: str
    records: int
    bases: int
    hashes: int
    preset: str | None
    mapped: int | None  # reads (or contigs) that align to a gathered genome
    unmapped: int | None  # reads (or contigs) that align to none
    rows: list[GatherRow]

    def summary(self) -> dict[str, Any]:
        return {
            "sample": self.sample, "records": self.records, "bases": self.bases, "hashes": self.hashes,
            "preset": self.preset, "mapped": self.mapped, "unmapped": self.unmapped, "genomes": len(self.rows),
        }  # fmt: skip


def gather(
    sample: Sample,
    index: SketchIndex,
    sizes: dict[int, int],
    details: dict[int, dict[str, Any]],
    target: Callable[[int], Target | None],
    scaled: int,
    options: GatherOptions,
    threads: int,
    progress: Progress = SILENT,
) -> GatherResult:
    """Gather `sample` against the stored sketches (`index`, `sizes`: each genome's hash count);
    `target(genome_id)` gives a genome's records to map to (None: no stored sequence)."""
    found = sketch_sample(sample, scaled, progress)
    if not len(found.hashes):
        raise GenomeIndexError(
            f"{sample.name}: the sample's sketch is empty: its {found.records:,} reads or contigs "
            f"({found.bases:,} bp) hold no {sketch.SKETCH_KSIZE}-mer of the 1 in {scaled:,} a sketch keeps "
            "(reads shorter than k, or too few bases)"
        )
    if options.threshold_bp is not None:
        min_hashes = math.ceil(options.threshold_bp / scaled)
    else:
        min_hashes = max(1, math.ceil(THRESHOLD_SHARE * len(found.hashes)))
    with progress.step("gathering", None, "genomes"):
        taken = greedy_cover(found.hashes, index, sizes, min_hashes)
    preset = mapped = unmapped = None
    verified: list[Verified | None] = [None] * len(taken)
    aligned: list[int] = []
    if options.verify and taken:
        targets = {i: target(g.genome_id) for i, g in enumerate(taken)}
        aligned = [i for i, t in targets.items() if t]
        if len(aligned) < len(taken):
            log.warning(
                "%d genome(s) found have no stored sequence, so the reads are not mapped to them (run "
                "`genome-index backfill-sequences INPUTS` with their FASTA files)", len(taken) - len(aligned),
            )  # fmt: skip
        if aligned:
            preset = preset_for_sample(found)
            result = map_sample(sample, [targets[i] for i in aligned], preset, threads, progress, found.records)
            min_share = THRESHOLD_SHARE if options.threshold_bp is None else 0.0
            groups: dict[int, list[int]] = {}  # the mapped genomes of each step: a near tie when more than one
            for slot, i in enumerate(aligned):
                groups.setdefault(taken[i].rank, []).append(slot)
            kept = result.share(options.threshold_bp or 0, min_share, list(groups.values()))
            mapped = found.records - result.unmapped
            unmapped = result.unmapped
            for slot, i in enumerate(aligned):
                verified[i] = result.verified[slot] if slot in kept else None
            if len(kept) < len(aligned):
                log.info(
                    "%d gathered genome(s) dropped: the reads give them less than the threshold",
                    len(aligned) - len(kept),
                )
    unverified = set(range(len(taken))) - set(aligned)  # not mapped at all: reported on the sketch, rivals aside
    reported = [
        (g, v)
        for i, (g, v) in enumerate(zip(taken, verified, strict=True))
        if v is not None or (i in unverified and not g.rival)
    ]
    reported.sort(key=lambda pair: (pair[0].rank, -(pair[1].bases if pair[1] else 0.0)))
    total_mapped = sum(v.bases for _, v in reported if v is not None)
    rows = [_row(sample.name, g, v, total_mapped, len(found.hashes), scaled, details[g.genome_id]) for g, v in reported]
    return GatherResult(sample.name, found.records, found.bases, len(found.hashes), preset, mapped, unmapped, rows)


def _row(
    sample: str, g: Gathered, v: Verified | None, total: float, hashes: int, scaled: int, details: dict
) -> GatherRow:
    return GatherRow(
        sample=sample, rank=g.rank, genome_id=g.genome_id, name=details["name"], file=details["file"],
        unique_bp=g.unique * scaled, shared_bp=g.shared * scaled, f_sample=round(g.unique / hashes, DIGITS),
        f_genome=round(g.shared / g.genome_hashes, DIGITS) if g.genome_hashes else 0.0,
        reads=round(v.reads, 2) if v else None, mapped_bp=round(v.bases) if v else None,
        abundance=rounded(v.bases / total if v and total else (0.0 if v else None)),
        depth=rounded(v.depth) if v else None, breadth=rounded(v.breadth) if v else None,
        identity=rounded(v.identity) if v else None,
        labels=typed_labels(details),
    )  # fmt: skip
