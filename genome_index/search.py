"""Query: embed a sequence on both strands, search FAISS, rank genomes.

Strand never matters: every query is embedded as given and as its reverse complement (each
chunked from its own start), and a genome's score is the better of the two. A query and its
reverse complement therefore produce the same two vector sets and the same ranking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from genome_index.embed import Embedder
from genome_index.fasta import Genome, Record, reverse_complement
from genome_index.store import genome_vector, normalise
from genome_index.tokenize import Chunk

MODES = ("genome", "chunks")
CHUNK_HITS = 50  # neighbours looked at per query chunk in chunks mode


@dataclass
class Query:
    """One query: a name and its records (the whole file, or one record with --per-record)."""

    name: str
    records: list[Record]


def queries_of(genome: Genome, per_record: bool) -> list[Query]:
    if per_record:
        return [Query(r.id, [r]) for r in genome.records]
    return [Query(genome.name, genome.records)]


def strand_chunks(embedder: Embedder, query: Query) -> list[list[Chunk]]:
    """The query's chunks on the given strand and on the reverse strand."""
    reverse = [Record(r.id, r.description, reverse_complement(r.sequence)) for r in query.records]
    return [embedder.chunk(Genome(Path(query.name), records)) for records in (query.records, reverse)]


def rank_genome_mode(index: faiss.Index, strands: list[np.ndarray], k: int) -> dict[int, tuple[float, int]]:
    """Genome id -> (best cosine of the query's mean vector over both strands, support 0)."""
    vectors = np.stack([genome_vector(v) for v in strands])
    scores, ids = index.search(normalise(vectors), min(k, index.ntotal))
    best: dict[int, tuple[float, int]] = {}
    for row_scores, row_ids in zip(scores, ids, strict=True):
        for score, gid in zip(row_scores, row_ids, strict=True):
            if gid >= 0 and score > best.get(int(gid), (-np.inf, 0))[0]:
                best[int(gid)] = (float(score), 0)
    return best


def rank_chunk_mode(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    strands: list[np.ndarray],
    genome_of_chunks: Callable[[np.ndarray], dict[int, int]],
) -> dict[int, tuple[float, int]]:
    """Genome id -> (mean over query chunks of their best similarity to the genome, support).

    Support counts the query chunks whose single best hit lies in that genome. A genome not
    among a chunk's nearest neighbours contributes 0 for that chunk. Each strand is scored
    on its own and the better strand kept.
    """
    best: dict[int, tuple[float, int]] = {}
    for vectors in strands:
        scores, ids = search(normalise(vectors), CHUNK_HITS)
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
