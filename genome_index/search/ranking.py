"""Query: embed a sequence in every view (both strands, all k-mer frames), search, rank genomes.

Strand never matters: every query is embedded as given and as its reverse complement (each cut
the store's way: at sequence anchors, or in fixed windows from its own start), and a genome
keeps its best score over the views; a query and its reverse complement therefore produce the
same views and the same ranking. For k-mer tokenised models (NT: non-overlapping 6-mers) a
fragment starting at another offset is tokenised into entirely different tokens, so `frames`
also embeds the query from offsets 1..k-1 (in an anchored store only its head, the one window
that does not start at a stored window's start). Optional centring subtracts the store's mean
vector before cosine similarity (reported beside the plain cosine, never instead of it); the
re-rank orders the best candidates by k-mer containment (FracMinHash sketches, with an ANI
estimate and its interval); the alignment (`align`) places the query in the best of them and
orders them by identity x coverage. Ranks follow one key, named in each row's `ranked_by`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import faiss
import numpy as np

from genome_index.embedding.anchors import cut_points
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.tokenize import Chunk, KmerTokenizer, Tokens, anchored_chunks, chunk_tokens, piece_chunks
from genome_index.io.fasta import Genome, Record, reverse_complement
from genome_index.io.labels import typed
from genome_index.io.sequences import unpack
from genome_index.progress import SILENT, Progress, Step
from genome_index.search import sketch
from genome_index.search.align import GenomeAlignment, Target
from genome_index.search.hits import Hit
from genome_index.search.sketch import SketchEstimate
from genome_index.settings import QueryOptions, StoreSettings
from genome_index.store import reads
from genome_index.store.indexes import search
from genome_index.store.vectors import genome_vector, normalise, pair_scores, rescore

log = logging.getLogger("genome_index")
AUTO_GENOME_MODE_FROM_BP = 1_000_000  # auto mode: whole-genome-sized queries use genome mode
CHUNK_HITS = 50  # neighbours looked at per query chunk in chunks mode
TIE = 1e-6  # scores this close are one best match (identical windows of twin genomes score alike)
RERANK_CANDIDATES = 20  # genomes re-ordered by containment
ALIGN_UP_TO_BP = 6_000_000  # queries up to this long are aligned by default (a large bacterial genome)
DIGITS = 6  # figures are shown, and compared for ties, to this many decimals
NO_SEQUENCES = (
    "some candidate genomes have no stored sequence (the store was built before sequences were kept), so "
    "hits are not aligned; run `genome-index backfill-sequences INPUTS` with their FASTA files, or rebuild"
)


@dataclass
class Query:
    """One query: a name and its records (the whole file, or one record with --per-record)."""

    name: str
    records: list[Record]

    @property
    def length(self) -> int:
        return sum(len(r.sequence) for r in self.records)


def queries_of(genome: Genome, per_record: bool) -> list[Query]:
    if per_record:
        return [Query(r.id, [r]) for r in genome.records]
    return [Query(genome.name, genome.records)]


def resolve_mode(options: QueryOptions, query: Query) -> tuple[str, float, bool]:
    """(mode, window overlap, frames) for this query, filling in the measured defaults."""
    mode = options.mode
    if mode == "auto":
        mode = "genome" if query.length >= AUTO_GENOME_MODE_FROM_BP else "chunks"
    fragment = mode == "chunks"
    overlap = options.window_overlap or 0.0  # 0.5 measured no better than 0 (README, retrieval)
    frames = options.frames if options.frames is not None else fragment
    return mode, overlap, frames


def views(embedder: Embedder, query: Query, overlap: float, frames: bool) -> list[list[Chunk]]:
    """Chunk lists of every view of the query: both strands, and each k-mer frame if asked."""
    if embedder.chunker.chunking == "anchored":
        return anchored_views(embedder, query, frames)
    return fixed_views(embedder, query, overlap, frames)


def anchored_views(embedder: Embedder, query: Query, frames: bool) -> list[list[Chunk]]:
    """Views of a query cut at the store's sequence anchors, as given and reverse-complemented.

    Every window after a record's first cut starts where the stored genome's window starts, so
    it is tokenised in the same frame; only the head (the first base up to the first cut) sits at
    an arbitrary offset inside a stored window, so `frames` re-tokenises just the head from
    offsets 1..k-1, each giving a view that shares all its other windows with the first.
    """
    tokenizer, size = embedder.tokenizer, embedder.chunker.chunk_tokens
    k = tokenizer.k if frames and isinstance(tokenizer, KmerTokenizer) else 1
    out = []
    for sequences in ([r.sequence for r in query.records], [reverse_complement(r.sequence) for r in query.records]):
        cuts = [cut_points(s, embedder.chunker.anchor_radius) for s in sequences]
        per_record = [
            anchored_chunks(s, tokenizer, i, size, cuts=c) for i, (s, c) in enumerate(zip(sequences, cuts, strict=True))
        ]
        out.append([c for chunks in per_record for c in chunks])
        head_ends = [int(c[0]) if len(c) else len(s) for s, c in zip(sequences, cuts, strict=True)]
        for offset in range(1, k):
            view: list[Chunk] = []
            for index, (sequence, chunks, head_end) in enumerate(zip(sequences, per_record, head_ends, strict=True)):
                if head_end > offset:
                    view.extend(piece_chunks(sequence, offset, head_end, tokenizer, index, size))
                view.extend(c for c in chunks if c.start >= head_end)
            if view:  # records no longer than the offset have nothing left to embed
                out.append(view)
    return out


def fixed_views(embedder: Embedder, query: Query, overlap: float, frames: bool) -> list[list[Chunk]]:
    """Views of a query in fixed windows: both strands, each k-mer frame if asked, each tiling.

    Overlapping windows come as several tilings of the query, each its own view: the first
    starts at the first token (so a stored sequence queried as itself meets its own windows
    exactly), the others are shifted by a fraction of a window (overlap 0.5: two tilings half a
    window apart).
    """
    tokenizer, size = embedder.tokenizer, embedder.chunker.chunk_tokens
    room = size - len(tokenizer.prefix) - len(tokenizer.suffix)
    tilings = max(1, round(1 / (1 - overlap)))
    shifts = sorted({j * room // tilings for j in range(tilings)})
    k = tokenizer.k if frames and isinstance(tokenizer, KmerTokenizer) else 1
    reverse = [reverse_complement(r.sequence) for r in query.records]
    out = []
    for sequences in ([r.sequence for r in query.records], reverse):
        for offset in range(k):
            tokenized = [(i, tokenizer.tokenize(s[offset:])) for i, s in enumerate(sequences) if len(s) > offset]
            for shift in shifts:
                chunks: list[Chunk] = []
                for index, tokens in tokenized:
                    if shift and shift >= len(tokens):
                        continue
                    part = Tokens(tokens.ids[shift:], tokens.starts[shift:] + offset, tokens.ends[shift:] + offset)
                    chunks.extend(chunk_tokens(part, tokenizer, index, size))
                if chunks:
                    out.append(chunks)
    return out


EmbedChunks = Callable[[list[Chunk], Step], np.ndarray]


def embed_unique(
    embedder: Embedder, chunks: list[Chunk], progress: Progress = SILENT, embed: EmbedChunks | None = None
) -> np.ndarray:
    """Vectors of `chunks` in order, each distinct model input embedded once (views share windows);
    `embed` replaces the embedder's own call (a micro-batcher joining concurrent queries)."""
    keys = [hashlib.blake2b(c.input_ids.tobytes(), digest_size=16).digest() for c in chunks]  # not the ids again
    first: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = [chunks[i] for i in first.values()]
    with progress.step("embedding the query", sum(c.end - c.start for c in unique), windows=len(unique)) as step:
        vectors = (embed or embedder.embed_chunks)(unique, step)
    row = {key: j for j, key in enumerate(first)}
    return vectors[np.array([row[key] for key in keys], dtype=np.int64)]


@dataclass
class Candidate:
    """One stored genome scored against a query: its cosine, how the sketches and the alignment see it."""

    genome_id: int
    score: float  # plain cosine (genome mode), or the mean over query windows of their best plain cosine
    centred_score: float | None = None  # the same after subtracting the store's mean vector (when centred)
    support: int | None = None  # query windows whose best match lies in this genome, ties shared (chunks mode)
    sketch: SketchEstimate | None = None
    alignment: GenomeAlignment | None = None


class Ranker:
    """Scores stored genomes against embedded query views, on one open store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: StoreSettings, center: bool) -> None:
        self.con, self.settings, self.center = con, settings, center
        if center and reads.genome_count(con) < 2:  # the mean of one genome is that genome: nothing would be left
            log.warning("the store holds one genome: centring needs two or more, so this query is not centred")
            self.center = False
        self.dim = settings.dim
        self._means: tuple[np.ndarray, np.ndarray] | None = None

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean of all normalised chunk vectors and mean of the genome vectors (for centring)."""
        if self._means is None:
            self._means = reads.vector_means(self.con, self.dim)
        return self._means

    def genome_mode(self, index: faiss.Index, view_vectors: list[np.ndarray]) -> dict[int, Candidate]:
        """Genome id -> its best cosine (and centred cosine) over views of the query's mean vector."""
        queries = np.stack([genome_vector(v) for v in view_vectors])
        scores, ids = index.search(normalise(queries), index.ntotal)
        hits: dict[int, Candidate] = {}
        for row_scores, row_ids in zip(scores, ids, strict=True):
            for score, gid in zip(row_scores, row_ids, strict=True):
                if gid >= 0 and (int(gid) not in hits or score > hits[int(gid)].score):
                    hits[int(gid)] = Candidate(int(gid), float(score))
        if self.center:
            stored_ids, stored = reads.vectors(self.con, "genomes", self.dim)
            mean = self.means()[1]
            centred = (normalise(queries - mean) @ normalise(stored - mean).T).max(axis=0)
            for gid, score in zip(stored_ids, centred, strict=True):
                hits[int(gid)].centred_score = float(score)
        return hits

    def chunk_search(self, index: faiss.Index) -> Callable[[np.ndarray, int], tuple[np.ndarray, ...]]:
        """Nearest stored chunks of normalised query chunks: (ranking scores, ids, plain cosines);
        when centred, the neighbours and ranking scores are the centred ones."""

        def fetch(ids: np.ndarray) -> np.ndarray:
            return reads.chunk_vectors(self.con, ids, self.dim)

        def run(queries: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
            if not self.center:
                scores, ids = search(index, queries, k, fetch)
                return scores, ids, scores
            _, candidates = search(index, queries, 2 * k, fetch)
            mean = self.means()[0]
            scores, ids = rescore(
                normalise(queries - mean), candidates, lambda ids: normalise(normalise(fetch(ids)) - mean), k
            )
            return scores, ids, pair_scores(queries, ids, lambda ids: normalise(fetch(ids)))

        return run

    def genome_of(self, chunk_ids: np.ndarray) -> dict[int, int]:
        """chunk id -> genome id for the chunks a search returned."""
        return reads.genomes_of_chunks(self.con, sorted({int(i) for i in chunk_ids.ravel() if i >= 0}))

    def sketches(self, genome_ids: list[int]) -> dict[int, Any]:
        scaled = self.settings.sketch_scaled
        return {
            gid: sketch.from_hashes(hashes, scaled) for gid, hashes in reads.sketch_hashes(self.con, genome_ids).items()
        }

    def targets(self, genome_ids: list[int]) -> dict[int, Callable[[], Target]] | None:
        """Each genome's records as alignment targets (read when first needed); None when some
        of them have no stored sequence (a store built before sequences were kept)."""
        if not all(reads.has_sequence(self.con, gid) for gid in genome_ids):
            return None

        def records(gid: int) -> Target:
            with self.con.cursor() as cursor:  # called from an aligning thread: its own handle
                names = [name for name, _, _ in reads.records_of(cursor, gid)]
                packed = reads.packed_sequences(cursor, gid) or []
            return [(name, unpack(stored)) for name, stored in zip(names, packed, strict=True)]

        return {gid: functools.partial(records, gid) for gid in genome_ids}


def rank_chunk_mode(
    search_chunks: Callable[[np.ndarray, int], tuple[np.ndarray, ...]],
    view_vectors: list[np.ndarray],
    genome_of_chunks: Callable[[np.ndarray], dict[int, int]],
    centred: bool,
) -> dict[int, Candidate]:
    """Genome id -> Candidate: the mean over query chunks of their best similarity to the genome
    (plain, and centred when `centred`), and the support.

    Support counts the query chunks whose best hit lies in that genome; a chunk whose best
    hit is equally good in several genomes (identical sequence) counts for each. A genome not
    among a chunk's nearest neighbours contributes 0 for that chunk. Each view is scored on
    its own and the view with the best ranking score kept.
    """
    best: dict[int, Candidate] = {}
    for vectors in view_vectors:
        ranking, ids, plain = search_chunks(normalise(vectors), CHUNK_HITS)
        genome_of = genome_of_chunks(ids)
        totals: dict[int, list[float]] = {}
        support: dict[int, int] = {}
        for row_ranking, row_ids, row_plain in zip(ranking, ids, plain, strict=True):
            seen: dict[int, list[float]] = {}
            for rank_score, cid, plain_score in zip(row_ranking, row_ids, row_plain, strict=True):
                if cid >= 0:
                    pair = seen.setdefault(genome_of[int(cid)], [-np.inf, -np.inf])
                    pair[0], pair[1] = max(pair[0], float(rank_score)), max(pair[1], float(plain_score))
            if seen:  # every genome holding the window's best match (identical genomes share it)
                top = max(pair[0] for pair in seen.values())
                for gid, (rank_score, _) in seen.items():
                    if rank_score >= top - TIE:
                        support[gid] = support.get(gid, 0) + 1
            for gid, (rank_score, plain_score) in seen.items():
                total = totals.setdefault(gid, [0.0, 0.0])
                total[0] += rank_score
                total[1] += plain_score
        for gid, (rank_total, plain_total) in totals.items():
            hit = Candidate(
                gid, plain_total / len(vectors), rank_total / len(vectors) if centred else None, support.get(gid, 0)
            )
            if gid not in best or embedding_key(hit) > embedding_key(best[gid]):
                best[gid] = hit
    return best


def embedding_key(hit: Candidate) -> float:
    """The embedding's own order: the centred score where the query was centred, else the score."""
    return hit.centred_score if hit.centred_score is not None else hit.score


@dataclass(frozen=True)
class Plan:
    """How one query's hits are chosen and ordered."""

    k: int
    rerank: bool
    align: bool
    align_top: int

    @property
    def candidates(self) -> int:
        """Genomes taken from the embedding's order for the later steps."""
        return max(self.k, RERANK_CANDIDATES if self.rerank else 0, self.align_top if self.align else 0)


def sort_key(hit: Candidate, ranked_by: tuple[str, ...]) -> tuple[float, ...]:
    """The values the hits are ranked by (descending), rounded as they are shown."""
    values = {
        "match": lambda: hit.alignment.match if hit.alignment else 0.0,
        "containment": lambda: hit.sketch.containment if hit.sketch else -1.0,
        "centred_score": lambda: hit.centred_score,
        "score": lambda: hit.score,
    }
    return tuple(round(values[name](), DIGITS) for name in ranked_by)


def order_hits(
    ranked: dict[int, Candidate],
    plan: Plan,
    sketches: Callable[[list[int]], dict[int, SketchEstimate | None]],
    alignments: Callable[[list[int]], dict[int, GenomeAlignment] | None],
) -> tuple[list[tuple[int, bool, Candidate]], tuple[str, ...]]:
    """The top `plan.k` hits as (rank, tied, hit), and the names of the sort key they follow.

    The embedding orders every genome; its best `plan.candidates` get their sketch figures,
    with `rerank` are re-ordered by containment (the embedding's order breaking ties: it sees
    every base of the query, the sketch one k-mer in `scaled`), and with `align` the best
    `align_top` are aligned and ordered by identity x coverage alone: the alignment sees
    every base, so where it cannot tell genomes apart nothing in the query can (the
    embedding's windows reach into flanking sequence the query does not have). Hits equal on
    the whole key share a rank and are flagged tied, listed in the embedding's order.
    """
    embedding = "centred_score" if any(h.centred_score is not None for h in ranked.values()) else "score"
    head = sorted(ranked.values(), key=lambda h: (-embedding_key(h), h.genome_id))[: plan.candidates]
    figures = sketches([h.genome_id for h in head])
    for hit in head:
        hit.sketch = figures.get(hit.genome_id)
    ranked_by: tuple[str, ...] = (embedding,)
    if plan.rerank:
        ranked_by = ("containment", embedding)
        head.sort(key=lambda h: tuple(-v for v in sort_key(h, ranked_by)))
    if plan.align:
        aligned = head[: max(plan.k, plan.align_top)]
        found = alignments([h.genome_id for h in aligned])
        if found is not None:
            for hit in aligned:
                hit.alignment = found[hit.genome_id]
            head, ranked_by = aligned, ("match",)
    head.sort(key=lambda h: (tuple(-v for v in sort_key(h, ranked_by)), -embedding_key(h), h.genome_id))
    keys = [sort_key(h, ranked_by) for h in head]
    out = []
    for i, hit in enumerate(head[: plan.k]):
        rank = next(j for j in range(i + 1) if keys[j] == keys[i]) + 1
        tied = (i > 0 and keys[i - 1] == keys[i]) or (i + 1 < len(keys) and keys[i + 1] == keys[i])
        out.append((rank, tied, hit))
    return out, ranked_by


def make_hit(
    query: str, rank: int, tied: bool, found: Candidate, mode: str, ranked_by: tuple[str, ...], details: dict[str, Any]
) -> Hit:
    """The Hit of a ranked candidate, figures rounded to DIGITS, labels typed (numbers as numbers)."""
    figures, aligned = found.sketch, found.alignment
    best = aligned.best if aligned else None
    return Hit(
        query=query,
        rank=rank,
        tied=tied,
        genome_id=found.genome_id,
        name=details["name"],
        file=details["file"],
        score=round(found.score, DIGITS),
        centred_score=rounded(found.centred_score),
        mode=mode,
        support=found.support if mode == "chunks" else None,
        containment=rounded(figures.containment if figures else None),
        query_hashes=figures.query_hashes if figures else None,
        ani_estimate=rounded(figures.ani if figures else None),
        ani_low=rounded(figures.ani_low if figures else None),
        ani_high=rounded(figures.ani_high if figures else None),
        identity=rounded(aligned.identity if aligned else None),
        aligned_bp=aligned.aligned_bp if aligned else None,
        query_coverage=rounded(aligned.query_coverage if aligned else None),
        match=rounded(aligned.match if aligned else None),
        target_record=best.target_record if best else None,
        target_start=best.target_start + 1 if best else None,
        target_end=best.target_end if best else None,
        strand=best.strand if best else None,
        ranked_by=", ".join(ranked_by),
        labels={key: None if value is None else typed(value) for key, value in details["labels"].items()},
        alignments=[a.as_dict() for a in aligned.alignments] if aligned else None,
    )


def rounded(value: float | None) -> float | None:
    """A figure as shown: DIGITS decimals (None stays None)."""
    return None if value is None else round(value, DIGITS)


def wants_alignment(options: QueryOptions, query: Query) -> bool:
    """--align as asked, or by default for queries up to ALIGN_UP_TO_BP."""
    return options.align if options.align is not None else query.length <= ALIGN_UP_TO_BP
