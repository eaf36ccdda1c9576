"""Query views: a query cut the store's way, in every view that could meet a stored window.

Strand never matters: every query is embedded as given and as its reverse complement (each cut
the store's way: at sequence anchors, or in fixed windows from its own start), and a genome
keeps its best score over the views; a query and its reverse complement therefore produce the
same views. For models whose tokenizer cuts fixed k-mers from the start (NT: non-overlapping
6-mers; `Tokenizer.frames`) a fragment starting at another offset is tokenised into entirely
different tokens, so `frames` also embeds the query from offsets 1..k-1 (in an anchored store
only its head, the one window that does not start at a stored window's start).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genome_index.embedding.anchors import cut_points
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.tokenize import Chunk, Tokens, anchored_chunks, chunk_tokens, piece_chunks
from genome_index.io.fasta import Genome, Record, reverse_complement
from genome_index.progress import SILENT, Progress, Step
from genome_index.settings import QueryOptions

AUTO_GENOME_MODE_FROM_BP = 1_000_000  # auto mode: whole-genome-sized queries use genome mode
ALIGN_UP_TO_BP = 6_000_000  # queries up to this long are aligned by default (a large bacterial genome)


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
    overlap = options.window_overlap or 0.0  # 0.5 measured no better than 0 (docs/retrieval.md)
    frames = options.frames if options.frames is not None else fragment
    return mode, overlap, frames


def wants_alignment(options: QueryOptions, query: Query) -> bool:
    """--align as asked, or by default for queries up to ALIGN_UP_TO_BP."""
    return options.align if options.align is not None else query.length <= ALIGN_UP_TO_BP


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
    k = tokenizer.frames if frames else 1
    out = []
    forward = [r.sequence for r in query.records]
    forward_cuts = [cut_points(s, embedder.chunker.anchor_radius) for s in forward]
    mirrored = [len(s) - c[::-1] for s, c in zip(forward, forward_cuts, strict=True)]  # even ANCHOR_K: exact
    for sequences, cuts in ((forward, forward_cuts), ([reverse_complement(s) for s in forward], mirrored)):
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
    k = tokenizer.frames if frames else 1
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
