"""The genome pipeline: read, chunk and embed genomes in order, keeping the encoder busy.

A reader thread reads and chunks the next genomes while the encoder runs the current ones.
Genomes are embedded in groups, so the length-sorted batches are cut from many windows and
carry little padding even when genomes are small or their windows vary in length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genome_index.embedding.tokenize import Chunk
from genome_index.io.fasta import Genome, read_genome
from genome_index.progress import Step

if TYPE_CHECKING:
    from genome_index.embedding.embedder import Embedder

GROUP_BATCHES = 48  # genomes are embedded together up to this many batches' worth of windows (padding ~2 %)
FIRST_GROUP_BATCHES = 4  # ... starting with groups this small, so the encoder starts early


@dataclass
class EmbeddedGenome:
    """One genome with its chunks and their vectors (row i of `vectors` is chunk i)."""

    genome: Genome
    chunks: list[Chunk]
    vectors: np.ndarray

    @property
    def file(self) -> str:  # named as a store's rows name it (`NewGenome.file`)
        return str(self.genome.path)

    @property
    def sha256(self) -> str:
        return self.genome.sha256


Group = list[tuple[Genome, list[Chunk]]]


def embed_genomes(
    embedder: Embedder,
    paths: Iterable[Path],
    want: Callable[[Path], bool] | None = None,
    lookahead: int = 2,
    step: Step | None = None,
) -> Iterator[EmbeddedGenome]:
    """Embedded genomes in the order of `paths`; `want`, called in order before a file is
    read, may decline it (a duplicate, a genome stored already): a declined file is neither
    read nor cut. `step` hears of every batch's bases and windows, and of each genome embedded.

    The first group is FIRST_GROUP_BATCHES batches' worth of tokens, so the encoder starts once
    a few genomes are read; each next group doubles up to GROUP_BATCHES. The last genomes go in
    halving groups, so the caller's work on one group (commits) overlaps the encoder's on the
    next and little is left when the encoder is done. Read-ahead grows to two groups' worth of
    genomes: memory follows the group size, not the number of genomes. Stopping early (an
    error, Ctrl-C, or the caller leaving the loop) cancels the reads not yet started.
    """
    paths = list(paths)
    step = step or Step()
    ahead: deque[Future] = deque()
    submitted = 0
    budget = embedder.batch_tokens

    def prepare(path: Path) -> tuple[Genome, list[Chunk]] | None:
        if want is not None and not want(path):  # in the reader thread, in order
            return None
        genome = read_genome(path)
        return genome, embedder.chunk(genome)

    def read_ahead() -> None:
        nonlocal submitted
        while len(ahead) < lookahead and submitted < len(paths):
            ahead.append(pool.submit(prepare, paths[submitted]))
            submitted += 1

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genome-index-reader")
    try:
        read_ahead()
        group: Group = []
        tokens, target = 0, FIRST_GROUP_BATCHES
        for i in range(len(paths)):
            prepared = ahead.popleft().result()
            read_ahead()
            if prepared is not None:
                group.append(prepared)
                tokens += sum(c.n_tokens for c in prepared[1])
            if group and tokens >= target * budget:
                lookahead = max(lookahead, 2 * len(group))
                read_ahead()
                yield from embed_group(embedder, group, step)
                group, tokens, target = [], 0, min(2 * target, GROUP_BATCHES)
            elif group and i == len(paths) - 1:
                yield from embed_last(embedder, group, step)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def embed_group(embedder: Embedder, group: Group, step: Step) -> Iterator[EmbeddedGenome]:
    """Embed the windows of several genomes together and hand back each genome's share."""
    vectors = embedder.embed_chunks([c for _, chunks in group for c in chunks], step)
    offset = 0
    for genome, chunks in group:
        step.advance(genomes=1)
        yield EmbeddedGenome(genome, chunks, vectors[offset : offset + len(chunks)])
        offset += len(chunks)


def embed_last(embedder: Embedder, group: Group, step: Step) -> Iterator[EmbeddedGenome]:
    """The final genomes in groups of about half of what is left, down to the first size."""
    sizes = [sum(c.n_tokens for c in chunks) for _, chunks in group]
    left = sum(sizes)
    while group:
        half = max(left // 2, FIRST_GROUP_BATCHES * embedder.batch_tokens)
        cut, tokens = 0, 0
        while cut < len(group) and tokens < half:
            tokens += sizes[cut]
            cut += 1
        yield from embed_group(embedder, group[:cut], step)
        group, sizes, left = group[cut:], sizes[cut:], left - tokens
