"""Write raw chunk embeddings to Parquet, one row per chunk, for users' own analyses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genome_index import __version__
from genome_index.embed import EmbeddedGenome, Embedder
from genome_index.errors import GenomeIndexError


def file_metadata(embedder: Embedder) -> dict[str, str]:
    """What made the vectors, kept in the Parquet file's key-value metadata (`genome_index.*`
    keys): model, weights revision, class, layer, pooling, windows, dimension, tool version."""
    chunker = embedder.chunker
    values = {
        "model": embedder.spec.name, "model_source": embedder.spec.source, "model_revision": embedder.spec.revision,
        "model_class": embedder.model_class, "layer": embedder.layer, "pooling": embedder.encoder.pooling,
        "chunk_tokens": chunker.chunk_tokens, "chunking": chunker.chunking, "anchor_radius": chunker.anchor_radius,
        "overlap": chunker.overlap, "dim": embedder.dim, "tool_version": __version__,
    }  # fmt: skip
    return {f"genome_index.{key}": str(value) for key, value in values.items()}


def schema(dim: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    return pa.schema(
        [
            ("file", pa.string()),
            ("genome", pa.string()),
            ("record", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("n_tokens", pa.int32()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ],
        metadata=metadata,
    )


def table(item: EmbeddedGenome, dim: int) -> pa.Table:
    """The rows of one embedded genome."""
    genome, chunks = item.genome, item.chunks
    flat = pa.array(np.ascontiguousarray(item.vectors, dtype=np.float32).ravel())
    return pa.table(
        {
            "file": [str(genome.path)] * len(chunks),
            "genome": [genome.name] * len(chunks),
            "record": [genome.records[c.record].id for c in chunks],
            "start": [c.start for c in chunks],
            "end": [c.end for c in chunks],
            "n_tokens": [c.n_tokens for c in chunks],
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        },
        schema=schema(dim),
    )


def write_parquet(items: Iterable[EmbeddedGenome], out: Path, embedder: Embedder) -> int:
    """Stream genomes into `out` (one row group each, with `file_metadata`); the file appears
    only when complete."""
    dim = embedder.dim
    out = Path(out)
    if out.is_dir():
        raise GenomeIndexError(f"{out}: is a folder; give a file name such as embeddings.parquet")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise GenomeIndexError(f"{out}: folder {folder} does not exist")
    rows = 0
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise GenomeIndexError(f"{out}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema(dim, file_metadata(embedder))) as writer:
            for item in items:
                writer.write_table(table(item, dim))
                rows += len(item.chunks)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return rows
