"""Re-ranking: a second, costlier look at the candidates the embedding ranked highest.

Each re-ranker fills in its figures on the candidates it is given and says whether it could:
`SketchReranker` (k-mer containment of FracMinHash sketches, with an ANI estimate and its
interval) and `AlignmentReranker` (minimap2 places the query in each genome: identity x
coverage). `order_hits` decides who sees which, and which key the ranks follow (named in each
row's `ranked_by`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from genome_index.io.sequences import unpack
from genome_index.progress import Progress
from genome_index.search import sketch
from genome_index.search.align import Aligners, Piece, Target, align, regions
from genome_index.search.candidates import Candidate, embedding_key
from genome_index.search.hits import DIGITS
from genome_index.search.views import Query

if TYPE_CHECKING:
    from genome_index.search.resident import ResidentReader

log = logging.getLogger("genome_index")
RERANK_CANDIDATES = 20  # genomes re-ordered by containment
NO_SEQUENCES = (
    "some candidate genomes have no stored sequence (the store was built before sequences were kept), so "
    "hits are not aligned; run `genome-index backfill-sequences INPUTS` with their FASTA files, or rebuild"
)


class Reranker(Protocol):
    """Fills in its figures on `candidates`; False when it could not (nothing is then ordered by them)."""

    def __call__(self, candidates: list[Candidate]) -> bool: ...


class SketchReranker:
    """Containment of the query's FracMinHash sketch (its sorted hashes) in each candidate's stored one."""

    def __init__(self, reader: ResidentReader, scaled: int, query_hashes: np.ndarray) -> None:
        self.reader, self.scaled, self.query_hashes = reader, scaled, query_hashes

    def __call__(self, candidates: list[Candidate]) -> bool:
        stored = self.reader.sketches([c.genome_id for c in candidates])
        for candidate in candidates:
            found = stored.get(candidate.genome_id)
            candidate.sketch = None if found is None else sketch.estimate(self.query_hashes, found, self.scaled)
        return True


class AlignmentReranker:
    """minimap2 alignments of the query to each candidate's stored sequence (read when first
    needed, from an aligning thread's own cursor): to the stretches around the windows the query
    matched in it, where `matched` names them (`align.regions`), else to the whole genome; False
    for a store without sequences."""

    def __init__(
        self,
        reader: ResidentReader,
        query: Query,
        aligners: Aligners,
        progress: Progress,
        warn: Callable[[], None],
        matched: dict[int, list[int]] | None = None,
    ) -> None:
        self.reader, self.query, self.aligners, self.progress, self.warn = reader, query, aligners, progress, warn
        self.matched = matched or {}

    def __call__(self, candidates: list[Candidate]) -> bool:
        genome_ids = [c.genome_id for c in candidates]
        if not all(self.reader.has_sequence(gid) for gid in genome_ids):
            self.warn()
            return False
        targets = {gid: functools.partial(stored_target, self.reader, gid) for gid in genome_ids}
        pieces = {
            gid: functools.partial(stored_pieces, self.reader, gid, self.matched[gid], self.query.length)
            for gid in genome_ids
            if gid in self.matched
        }
        with self.progress.step("aligning", len(genome_ids), "genomes") as step:
            found = align(self.query.records, targets, self.aligners, pieces)
            step.advance(len(genome_ids))
        for candidate in candidates:
            candidate.alignment = found[candidate.genome_id]
        return True


def stored_target(reader: ResidentReader, genome_id: int) -> Target:
    """A stored genome's records as minimap2 indexes them (called from an aligning thread)."""
    return [(name, unpack(stored)) for name, stored in reader.packed_genome(genome_id)]


def stored_pieces(
    reader: ResidentReader, genome_id: int, chunk_ids: list[int], query_length: int
) -> list[Piece] | None:
    """The stretches of a stored genome around the windows `chunk_ids` a query matched in it
    (`align.regions`), or None where they are most of the genome (called from an aligning thread)."""
    records = reader.packed_genome(genome_id)
    stretches = regions(reader.windows_of(chunk_ids), query_length, [stored.length for _, stored in records])
    if stretches is None:
        return None
    return [(records[record][0], start, unpack(records[record][1], start, end)) for record, start, end in stretches]


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
        "explained_bp": lambda: hit.alignment.explained_bp if hit.alignment else -(2**62),
        "containment": lambda: hit.sketch.containment if hit.sketch else -1.0,
        "centred_score": lambda: hit.centred_score,
        "score": lambda: hit.score,
    }
    return tuple(round(values[name](), DIGITS) for name in ranked_by)


def order_hits(
    ranked: dict[int, Candidate], plan: Plan, sketches: Reranker, alignments: Reranker
) -> tuple[list[tuple[int, bool, Candidate]], tuple[str, ...]]:
    """The top `plan.k` hits as (rank, tied, hit), and the names of the sort key they follow.

    The embedding orders every genome; its best `plan.candidates` get their sketch figures,
    with `rerank` are re-ordered by containment (the embedding's order breaking ties: it sees
    every base of the query, the sketch one k-mer in `scaled`), and with `align` the best
    `align_top` are aligned and ordered by the query bases each explains less the edits it
    takes (`explained_bp`) alone: the alignment sees every base, so the genome that differs
    from the query at fewer positions wins, and where it cannot tell genomes apart nothing in
    the query can (the embedding's windows reach into flanking sequence the query does not
    have). Hits equal on the whole key share a rank and are flagged tied, listed in the
    embedding's order.
    """
    embedding = "centred_score" if any(h.centred_score is not None for h in ranked.values()) else "score"
    head = sorted(ranked.values(), key=lambda h: (-embedding_key(h), h.genome_id))[: plan.candidates]
    sketches(head)
    ranked_by: tuple[str, ...] = (embedding,)
    if plan.rerank:
        ranked_by = ("containment", embedding)
        head.sort(key=lambda h: tuple(-v for v in sort_key(h, ranked_by)))
    if plan.align:
        aligned = head[: max(plan.k, plan.align_top)]
        if alignments(aligned):
            head, ranked_by = aligned, ("explained_bp",)
    head.sort(key=lambda h: (tuple(-v for v in sort_key(h, ranked_by)), -embedding_key(h), h.genome_id))
    keys = [sort_key(h, ranked_by) for h in head]
    out = []
    for i, hit in enumerate(head[: plan.k]):
        rank = next(j for j in range(i + 1) if keys[j] == keys[i]) + 1
        tied = (i > 0 and keys[i - 1] == keys[i]) or (i + 1 < len(keys) and keys[i + 1] == keys[i])
        out.append((rank, tied, hit))
    return out, ranked_by
