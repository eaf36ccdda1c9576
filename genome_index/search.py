"""Query: embed a sequence in every view (both strands, all k-mer frames), search, rank genomes.

Strand never matters: every query is embedded as given and as its reverse complement (each cut
the store's way: at sequence anchors, or in fixed windows from its own start), and a genome
keeps its best score over the views; a query and its reverse complement therefore produce the
same views and the same ranking. For k-mer tokenised models (NT: non-overlapping 6-mers) a
fragment starting at another offset is tokenised into entirely different tokens, so `frames`
also embeds the query from offsets 1..k-1 (in an anchored store only its head, the one window
that does not start at a stored window's start). Optional centring subtracts the store's mean
vector before cosine similarity, and the re-rank orders the best candidates by k-mer
containment (FracMinHash sketches), giving every hit a containment and an ANI estimate like
Mash or skani.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import faiss
import numpy as np

from genome_index import sketch
from genome_index.anchors import cut_points
from genome_index.embed import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.fasta import Genome, Record, reverse_complement
from genome_index.output import HIT_COLUMNS, typed
from genome_index.progress import SILENT, Progress
from genome_index.settings import QueryOptions, StoreSettings
from genome_index.store import Store, reads
from genome_index.store.indexes import search, to_gpu
from genome_index.store.vectors import genome_vector, normalise, rescore
from genome_index.tokenize import Chunk, KmerTokenizer, Tokens, anchored_chunks, chunk_tokens, piece_chunks

log = logging.getLogger("genome_index")
AUTO_GENOME_MODE_FROM_BP = 1_000_000  # auto mode: whole-genome-sized queries use genome mode
CHUNK_HITS = 50  # neighbours looked at per query chunk in chunks mode
RERANK_CANDIDATES = 20  # genomes re-ordered by containment


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


def embed_unique(embedder: Embedder, chunks: list[Chunk], progress: Progress = SILENT) -> np.ndarray:
    """Vectors of `chunks` in order, each distinct model input embedded once (views share windows)."""
    keys = [hashlib.blake2b(c.input_ids.tobytes(), digest_size=16).digest() for c in chunks]  # not the ids again
    first: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = [chunks[i] for i in first.values()]
    with progress.step("embedding the query", sum(c.end - c.start for c in unique), windows=len(unique)) as step:
        vectors = embedder.embed_chunks(unique, step)
    row = {key: j for j, key in enumerate(first)}
    return vectors[np.array([row[key] for key in keys], dtype=np.int64)]


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

    def genome_mode(self, index: faiss.Index, view_vectors: list[np.ndarray]) -> dict[int, tuple[float, int]]:
        """Genome id -> (best cosine over views of the query's mean vector, 0)."""
        queries = np.stack([genome_vector(v) for v in view_vectors])
        best: dict[int, tuple[float, int]] = {}
        if self.center:
            ids, stored = reads.vectors(self.con, "genomes", self.dim)
            mean = self.means()[1]
            scores = normalise(queries - mean) @ normalise(stored - mean).T
            ids_matrix = np.broadcast_to(ids, scores.shape)
        else:
            scores, ids_matrix = index.search(normalise(queries), index.ntotal)
        for row_scores, row_ids in zip(scores, ids_matrix, strict=True):
            for score, gid in zip(row_scores, row_ids, strict=True):
                if gid >= 0 and score > best.get(int(gid), (-np.inf, 0))[0]:
                    best[int(gid)] = (float(score), 0)
        return best

    def chunk_search(self, index: faiss.Index) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        """Nearest stored chunks of normalised query chunks, centred when asked."""

        def fetch(ids: np.ndarray) -> np.ndarray:
            return reads.chunk_vectors(self.con, ids, self.dim)

        def run(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            if not self.center:
                return search(index, queries, k, fetch)
            _, candidates = search(index, queries, 2 * k, fetch)
            mean = self.means()[0]
            return rescore(
                normalise(queries - mean), candidates, lambda ids: normalise(normalise(fetch(ids)) - mean), k
            )

        return run

    def genome_of(self, chunk_ids: np.ndarray) -> dict[int, int]:
        """chunk id -> genome id for the chunks a search returned."""
        return reads.genomes_of_chunks(self.con, sorted({int(i) for i in chunk_ids.ravel() if i >= 0}))

    def sketches(self, genome_ids: list[int]) -> dict[int, Any]:
        scaled = self.settings.sketch_scaled
        return {
            gid: sketch.from_hashes(hashes, scaled) for gid, hashes in reads.sketch_hashes(self.con, genome_ids).items()
        }


def rank_chunk_mode(
    search_chunks: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    view_vectors: list[np.ndarray],
    genome_of_chunks: Callable[[np.ndarray], dict[int, int]],
) -> dict[int, tuple[float, int]]:
    """Genome id -> (mean over query chunks of their best similarity to the genome, support).

    Support counts the query chunks whose single best hit lies in that genome. A genome not
    among a chunk's nearest neighbours contributes 0 for that chunk. Each view is scored on
    its own and the best view kept.
    """
    best: dict[int, tuple[float, int]] = {}
    for vectors in view_vectors:
        scores, ids = search_chunks(normalise(vectors), CHUNK_HITS)
        genome_of = genome_of_chunks(ids)
        totals: dict[int, float] = {}
        support: dict[int, int] = {}
        for row_scores, row_ids in zip(scores, ids, strict=True):
            seen: dict[int, float] = {}
            for score, cid in zip(row_scores, row_ids, strict=True):
                if cid >= 0:
                    gid = genome_of[int(cid)]
                    seen[gid] = max(seen.get(gid, -np.inf), float(score))
            if row_ids[0] >= 0:
                top = genome_of[int(row_ids[0])]
                support[top] = support.get(top, 0) + 1
            for gid, score in seen.items():
                totals[gid] = totals.get(gid, 0.0) + score
        for gid, total in totals.items():
            score = total / len(vectors)
            if score > best.get(gid, (-np.inf, 0))[0]:
                best[gid] = (score, support.get(gid, 0))
    return best


def order_hits(
    ranked: dict[int, tuple[float, int]],
    query_sketch: Any,
    sketches: Callable[[list[int]], dict[int, Any]],
    k: int,
    rerank: bool,
) -> list[tuple[int, float, int, float | None, float | None]]:
    """Top-k (genome id, score, support, containment, ani): by embedding score, then, with
    `rerank`, the best RERANK_CANDIDATES re-ordered by containment of the query's k-mers."""
    by_score = sorted(ranked.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
    head = by_score[: max(k, RERANK_CANDIDATES) if rerank else k]
    genome_sketches = sketches([gid for gid, _ in head])
    hits = []
    for gid, (score, support) in head:
        contained, ani = (None, None)
        if gid in genome_sketches:
            contained, ani = sketch.containment(query_sketch, genome_sketches[gid])
        hits.append((gid, score, support, contained, ani))
    if rerank:
        hits.sort(key=lambda hit: -1.0 if hit[3] is None else hit[3], reverse=True)  # stable: score breaks ties
    return hits[:k]


def run_query(
    store: Store,
    genome: Genome,
    options: QueryOptions,
    embedder: Embedder,
    settings: StoreSettings,
    progress: Progress = SILENT,
) -> tuple[list[dict[str, Any]], float]:
    """Hit rows of every query in `genome` (one, or one per record), and the seconds spent
    embedding them; the rest of the time is the search. `progress` hears of the windows
    embedded and searched."""
    if options.window_overlap and settings.chunking != "fixed":
        raise GenomeIndexError(
            "--window-overlap applies to stores with fixed windows; this store's windows are anchored "
            "to the sequence, so a query's windows already line up with the stored ones"
        )
    started = time.perf_counter()
    queries = queries_of(genome, options.per_record)
    plans = [resolve_mode(options, q) for q in queries]
    view_chunks = [views(embedder, q, overlap, frames) for q, (_, overlap, frames) in zip(queries, plans, strict=True)]
    vectors = embed_unique(
        embedder, [c for chunk_lists in view_chunks for chunks in chunk_lists for c in chunks], progress
    )
    query_sketches = [
        sketch.from_hashes(sketch.sketch_records(q.records, settings.sketch_scaled), settings.sketch_scaled)
        for q in queries
    ]
    embedded = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    with store.connect() as con:
        ranker = Ranker(con, settings, options.center)
        indexes = {}
        for kind in {"genomes" if mode == "genome" else "chunks" for mode, _, _ in plans}:
            indexes[kind], rebuilt = store.load_faiss(con, kind, settings)
            if rebuilt:
                store.save_repair(kind, indexes[kind])
            if indexes[kind].ntotal == 0:
                raise GenomeIndexError(f"{store.directory}: the store holds no genomes yet")
            indexes[kind] = to_gpu(indexes[kind])  # searches run on the GPU with a faiss GPU build
        details = reads.genome_details(con)
        offset = 0
        searching = progress.step("searching", len(vectors), "windows", queries=len(queries))
        for query, (mode, _, _), chunk_lists, query_sketch in zip(
            queries, plans, view_chunks, query_sketches, strict=True
        ):
            view_vectors = []
            for chunks in chunk_lists:
                view_vectors.append(vectors[offset : offset + len(chunks)])
                offset += len(chunks)
            if mode == "genome":
                ranked = ranker.genome_mode(indexes["genomes"], view_vectors)
            else:
                ranked = rank_chunk_mode(ranker.chunk_search(indexes["chunks"]), view_vectors, ranker.genome_of)
            searching.advance(sum(len(v) for v in view_vectors), queries=1)
            hits = order_hits(ranked, query_sketch, ranker.sketches, options.k, options.rerank)
            for rank, (gid, score, support, contained, ani) in enumerate(hits, start=1):
                values = (
                    query.name, rank, gid, details[gid]["name"], details[gid]["file"], round(score, 6), mode,
                    support if mode == "chunks" else None, None if contained is None else round(contained, 4),
                    None if ani is None else round(ani, 4),
                )  # fmt: skip
                row: dict[str, Any] = dict(zip(HIT_COLUMNS, values, strict=True))
                row.update({key: typed(value) for key, value in details[gid]["labels"].items()})
                rows.append(row)
        searching.close()
    return rows, embedded
