"""Candidates: the stored genomes worth looking at, from the FAISS indexes, scored by the embedding.

`Retriever` searches the genome index (genome mode: the query's mean vector against every
genome vector) or the chunk index (chunks mode: each query window's nearest stored windows,
`rank_chunk_mode`), on one read session of the store. A chunks-mode query whose sketch holds
SKETCH_NAMED_FROM hashes or more is compared only with the windows of the genomes whose sketches
share one of them (fragments of 10 kb and up, where the source shares some of them with near
certainty), topped up with the genomes nearest by genome vector (`named_rows`), unless those
are most of the store; the rest, and every query asked `exhaustive`, are compared with every
stored window. Optional centring subtracts the store's
mean vector (kept by every write) before the cosine; it is reported beside the plain cosine,
never instead of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

from genome_index.search.align import GenomeAlignment
from genome_index.search.resident import ResidentReader
from genome_index.search.sketch import SketchEstimate
from genome_index.settings import StoreSettings
from genome_index.store.indexes import flat_search, flat_vectors, search
from genome_index.store.reads import StoreReader
from genome_index.store.vectors import genome_vector, normalise, pair_scores, rescore

if TYPE_CHECKING:
    from genome_index.search.resident import Resident

log = logging.getLogger("genome_index")
CHUNK_HITS = 50  # neighbours looked at per query chunk in chunks mode
SKETCH_NAMED_FROM = 8  # query sketch hashes from which only the genomes sharing one are searched (10 kb at scaled 1000)
NAMED_SHARE = 0.5  # ... unless those genomes hold more than this share of the stored windows
CENTRING_BLOCK = 65_536  # genome vectors centred at a time: the memory of a query stays bounded
TIE = 1e-6  # scores this close are one best match (identical windows of twin genomes score alike)


@dataclass
class Candidate:
    """One stored genome scored against a query: its cosine, how the sketches and the alignment see it."""

    genome_id: int
    score: float  # plain cosine (genome mode), or the mean over query windows of their best plain cosine
    centred_score: float | None = None  # the same after subtracting the store's mean vector (when centred)
    support: int | None = None  # query windows whose best match lies in this genome, ties shared (chunks mode)
    sketch: SketchEstimate | None = None
    alignment: GenomeAlignment | None = None


class Retriever:
    """Scores stored genomes against embedded query views, on one read session of the store."""

    def __init__(self, reader: StoreReader | ResidentReader, settings: StoreSettings, center: bool) -> None:
        self.reader, self.settings, self.center = reader, settings, center
        if center and reader.genome_count() < 2:  # the mean of one genome is that genome: nothing would be left
            log.warning("the store holds one genome: centring needs two or more, so this query is not centred")
            self.center = False
        self.dim = settings.dim
        self._means: tuple[np.ndarray, np.ndarray] | None = None

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean of all normalised chunk vectors and mean of the genome vectors (for centring)."""
        if self._means is None:
            self._means = self.reader.vector_means(self.dim)
        return self._means

    def genome_mode(self, index: faiss.Index, view_vectors: list[np.ndarray]) -> dict[int, Candidate]:
        """Genome id -> its best cosine (and centred cosine) over views of the query's mean vector."""
        queries = normalise(np.stack([genome_vector(v) for v in view_vectors]))
        scores, ids = search(index, queries, index.ntotal)
        hits: dict[int, Candidate] = {}
        for row_scores, row_ids in zip(scores, ids, strict=True):
            for score, gid in zip(row_scores, row_ids, strict=True):
                if gid >= 0 and (int(gid) not in hits or score > hits[int(gid)].score):
                    hits[int(gid)] = Candidate(int(gid), float(score))
        if self.center:
            for gid, centred in centred_scores(index, queries, self.means()[1]).items():
                hits[gid].centred_score = centred
        return hits

    def chunk_search(
        self, index: faiss.Index, runs: list[tuple[int, int]] | None = None
    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, ...]]:
        """Nearest stored chunks of normalised query chunks (in the row ranges `runs` of a flat
        index, where given): (ranking scores, ids, plain cosines); when centred, the neighbours
        and ranking scores are the centred ones."""

        def fetch(ids: np.ndarray) -> np.ndarray:
            return self.reader.chunk_vectors(ids, self.dim)

        centring = self.reader.centring(index) if self.center and isinstance(self.reader, ResidentReader) else None

        def run(queries: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
            if not self.center:
                scores, ids = search(index, queries, k, fetch, runs)
                return scores, ids, scores
            if centring is not None:  # a flat index in memory: centred in the matrix product itself
                ids = faiss.vector_to_array(index.id_map)
                return flat_search(
                    faiss.downcast_index(index.index), ids, queries, min(k, index.ntotal), runs, centring
                )
            _, candidates = search(index, queries, 2 * k, fetch, runs)
            mean = self.means()[0]
            scores, ids = rescore(
                normalise(queries - mean), candidates, lambda ids: normalise(normalise(fetch(ids)) - mean), k
            )
            return scores, ids, pair_scores(queries, ids, lambda ids: normalise(fetch(ids)))

        return run

    def genome_of(self, chunk_ids: np.ndarray) -> dict[int, int]:
        """chunk id -> genome id for the chunks a search returned."""
        return self.reader.genomes_of_chunks(np.unique(chunk_ids[chunk_ids >= 0]).tolist())

    def neighbours(
        self, index: faiss.Index, queries: list[np.ndarray], within: list[list[tuple[int, int]] | None]
    ) -> tuple[list[tuple[np.ndarray, ...]], dict[int, int]]:
        """The CHUNK_HITS nearest stored chunks of each window of each query, and the genome of
        every chunk found. A query with row ranges in `within` is searched over them alone (None:
        every row); queries with the same ranges together, in one pass over them (a --per-record
        call's fragments of one species name the same genomes: 151 fragments, 8 passes).
        Windows alike in every value (a query and its reverse complement give the same K-mer
        profiles) are searched once."""
        found: list[tuple[np.ndarray, ...] | None] = [None] * len(queries)
        grouped: dict[tuple[tuple[int, int], ...] | None, list[int]] = {}
        for i, runs in enumerate(within):
            grouped.setdefault(None if runs is None else tuple(runs), []).append(i)
        for key, members in grouped.items():
            runs = None if key is None else list(key)
            vectors = np.concatenate([queries[i] for i in members])
            distinct, inverse = distinct_rows(normalise(vectors))
            result = tuple(part[inverse] for part in self.chunk_search(index, runs)(distinct, CHUNK_HITS))
            offset = 0
            for i in members:
                found[i] = tuple(part[offset : offset + len(queries[i])] for part in result)
                offset += len(queries[i])
        done = [part for part in found if part is not None]
        return done, self.genome_of(np.concatenate([part[1].reshape(-1) for part in done]))


def distinct_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of `vectors` in first-seen order, and for each row its distinct row's
    number (by bytes: `np.unique(axis=0)` takes milliseconds on a few wide rows)."""
    first: dict[bytes, int] = {}
    inverse = np.array([first.setdefault(row.tobytes(), len(first)) for row in vectors], dtype=np.int64)
    keep = np.empty(len(first), dtype=np.int64)
    keep[inverse[::-1]] = np.arange(len(vectors))[::-1]
    return vectors[keep], inverse


def named_rows(
    resident: Resident, query_hashes: np.ndarray, want: int, by_vector: Callable[[], dict[int, Candidate]]
) -> list[tuple[int, int]] | None:
    """Row ranges of the flat chunk index a chunks-mode query is compared with, or None for
    every row. The query's sketch names the genomes sharing one of its hashes when it holds
    SKETCH_NAMED_FROM hashes or more (the source of a 10 kb fragment at 1 % divergence shares
    about 8 of its ~10: missing it takes every one changed, about 0.19^8 = 2e-6); fewer than
    `want` (the hits asked for) named are topped up with the genomes whose vectors are nearest
    the query's (`by_vector`, the exact genome index), so the query still gets its -k hits. None
    when the sketch names nothing or the genomes hold more than NAMED_SHARE of the windows; then
    `by_vector` is not asked where even the smallest genomes of the top-up would take the rows
    past that share (a store of a few genomes: 9 % of a server's busy time under load)."""
    if len(query_hashes) < SKETCH_NAMED_FROM or resident.sketch_index is None or resident.genome_rows is None:
        return None
    shared = resident.sketch_index.shared(query_hashes)
    if not shared:
        return None
    named = sorted(shared, key=lambda gid: (-shared[gid], gid))
    limit = NAMED_SHARE * resident.indexes["chunks"].ntotal
    if len(named) < want:
        if windows_of(resident, named) + resident.fewest_windows(want - len(named), shared) > limit:
            return None
        nearest = sorted(by_vector().values(), key=lambda c: (-embedding_key(c), c.genome_id))
        named += [c.genome_id for c in nearest if c.genome_id not in shared][: want - len(named)]
    if windows_of(resident, named) > limit:
        return None
    return resident.rows_of(named)


def windows_of(resident: Resident, genome_ids: list[int]) -> int:
    """Rows of the flat chunk index the genomes hold."""
    return sum(resident.genome_windows.get(gid, 0) for gid in genome_ids)


def centred_scores(index: faiss.Index, queries: np.ndarray, mean: np.ndarray) -> dict[int, float]:
    """Each genome's best cosine to the query views once the store's mean genome vector `mean`
    is subtracted from both: cos(q - m, g - m). The genome vectors are those of the exact genome
    index already in memory (read in place, a block at a time), never read from the store."""
    inner = faiss.downcast_index(index.index)
    ids = faiss.vector_to_array(index.id_map)
    if hasattr(inner, "get_xb"):  # a flat index in this process's memory: its vectors as they lie
        stored = flat_vectors(inner)
    else:  # on a GPU: copied back
        stored = index.reconstruct_n(0, index.ntotal)
    centred = normalise(queries - mean)
    best = np.empty(len(ids), dtype=np.float32)
    for lo in range(0, len(ids), CENTRING_BLOCK):
        block = normalise(stored[lo : lo + CENTRING_BLOCK] - mean)
        best[lo : lo + len(block)] = (centred @ block.T).max(axis=0)
    return {int(gid): float(score) for gid, score in zip(ids, best, strict=True)}


def rank_chunk_mode(
    found: tuple[np.ndarray, ...], sizes: list[int], genome_of: dict[int, int], centred: bool
) -> dict[int, Candidate]:
    """Genome id -> Candidate: the mean over query chunks of their best similarity to the genome
    (plain, and centred when `centred`), and the support.

    `found` holds the nearest stored chunks of the query's windows (ranking scores, ids, plain
    cosines; `Retriever.neighbours`), view after view, `sizes` the windows of each view.
    Support counts the query chunks whose best hit lies in that genome; a chunk whose best
    hit is equally good in several genomes (identical sequence) counts for each. A genome not
    among a chunk's nearest neighbours contributes 0 for that chunk. Each view is scored on
    its own and the view with the best ranking score kept.
    """
    best: dict[int, Candidate] = {}
    offset = 0
    for size in sizes:
        ranking, ids, plain = (part[offset : offset + size] for part in found)
        offset += size
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
            hit = Candidate(gid, plain_total / size, rank_total / size if centred else None, support.get(gid, 0))
            if gid not in best or embedding_key(hit) > embedding_key(best[gid]):
                best[gid] = hit
    return best


def matched_windows(found: tuple[np.ndarray, ...], genome_of: dict[int, int]) -> dict[int, list[int]]:
    """Genome id -> the stored windows the query matched in it: for each query window (of every
    view) its best-ranked neighbour in each genome found (`Retriever.neighbours`), where minimap2
    then looks for the query (`align.regions`)."""
    ranking, ids = found[0].reshape(-1), found[1].reshape(-1)
    rows = np.repeat(np.arange(found[1].shape[0]), found[1].shape[1])
    keep = ids >= 0
    ranking, ids, rows = ranking[keep], ids[keep], rows[keep]
    genomes = np.array([genome_of[int(cid)] for cid in ids.tolist()], dtype=np.int64)
    order = np.lexsort((-ranking, genomes, rows))  # within each (window, genome): the best first
    first = np.ones(len(order), dtype=bool)
    first[1:] = (rows[order][1:] != rows[order][:-1]) | (genomes[order][1:] != genomes[order][:-1])
    matched: dict[int, set[int]] = {}
    for gid, cid in zip(genomes[order][first].tolist(), ids[order][first].tolist(), strict=True):
        matched.setdefault(gid, set()).add(cid)
    return {gid: sorted(cids) for gid, cids in matched.items()}


def embedding_key(hit: Candidate) -> float:
    """The embedding's own order: the centred score where the query was centred, else the score."""
    return hit.centred_score if hit.centred_score is not None else hit.score
