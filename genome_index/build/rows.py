"""The rows an embedded genome adds to a store: records, windows, vectors, sketch, packed sequences."""

from __future__ import annotations

from typing import Any

import numpy as np

from genome_index.embedding.tokenize import Chunk
from genome_index.io.fasta import Genome, gc_fraction
from genome_index.io.sequences import pack
from genome_index.search.sketch import sketch_records  # sourmash (and scipy) only for a genome past 200 kb
from genome_index.store.rows import NewGenome


def new_genome(
    genome: Genome, chunks: list[Chunk], vectors: np.ndarray, name: str, labels: dict[str, str], sketch_scaled: int
) -> NewGenome:
    """The rows a genome with its windows' vectors adds to the store, under `name`."""
    columns: dict[str, list[Any]] = {k: [] for k in ("record", "start", "end", "n_tokens", "gc", "n_count")}
    for chunk in chunks:
        piece = genome.records[chunk.record].sequence[chunk.start : chunk.end]
        for key, value in (
            ("record", chunk.record),
            ("start", chunk.start),
            ("end", chunk.end),
            ("n_tokens", chunk.n_tokens),
            ("gc", gc_fraction(piece)),
            ("n_count", piece.count(b"N")),
        ):
            columns[key].append(value)
    return NewGenome(
        name=name,
        file=str(genome.path),
        sha256=genome.sha256,
        length=genome.length,
        gc=genome.gc,
        n_count=genome.n_count,
        records=[
            {
                "name": r.id,
                "description": r.description,
                "length": len(r.sequence),
                "gc": gc_fraction(r.sequence),
                "n_count": r.sequence.count(b"N"),
            }
            for r in genome.records
        ],
        chunks={k: np.asarray(v) for k, v in columns.items()},
        vectors=vectors,
        labels=labels,
        sketch=sketch_records(genome.records, sketch_scaled),
        sketch_scaled=sketch_scaled,
        sequences=[pack(r.sequence, r.line_width) for r in genome.records],
    )
