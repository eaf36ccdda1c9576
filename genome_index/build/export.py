"""Write raw chunk embeddings to Parquet, one row per chunk, for users' own analyses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genome_index import __version__
from genome_index.embedding.embedder import EmbeddedGenome, Embedder
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome
from genome_index.progress import SILENT, Progress
from genome_index.settings import ModelOptions, RunOptions, StoreOptions, StoreSettings, resolve
from genome_index.store.rows import NewGenome


def file_metadata(settings: StoreSettings) -> dict[str, str]:
    """What made the vectors, kept in the Parquet file's key-value metadata (`genome_index.*`
    keys): model, weights revision, class, layer, pooling, windows, dimension, tool version."""
    values = {
        "model": settings.model, "model_source": settings.model_source, "model_revision": settings.model_revision,
        "model_class": settings.model_class, "layer": settings.layer, "pooling": settings.pooling,
        "chunk_tokens": settings.chunk_tokens, "chunking": settings.chunking, "anchor_radius": settings.anchor_radius,
        "overlap": settings.overlap, "dim": settings.dim, "tool_version": __version__,
    }  # fmt: skip
    return {f"genome_index.{key}": str(value) for key, value in values.items()}


def embed_settings(embedder: Embedder) -> StoreSettings:
    """The settings an embedder's vectors are made with (the store options at their fallbacks)."""
    return embedder.settings(resolve(ModelOptions(), StoreOptions(), None)[1])


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
    records = [genome.records[c.record].id for c in chunks]
    spans = np.array([(c.start, c.end, c.n_tokens) for c in chunks], dtype=np.int64).reshape(-1, 3)
    return _table(str(genome.path), genome.name, records, spans.T, item.vectors, dim)


def stored_table(new: NewGenome, dim: int) -> pa.Table:
    """The same rows, of a genome's store rows with their vectors (what a Ray worker makes)."""
    names = [r["name"] for r in new.records]
    c = new.chunks
    spans = (c["start"], c["end"], c["n_tokens"])
    return _table(new.file, Genome(Path(new.file)).name, [names[i] for i in c["record"]], spans, new.vectors, dim)


def _table(file: str, genome: str, records: list[str], spans: Any, vectors: np.ndarray, dim: int) -> pa.Table:
    starts, ends, n_tokens = spans
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.table(
        {
            "file": [file] * len(records),
            "genome": [genome] * len(records),
            "record": records,
            "start": np.asarray(starts, dtype=np.int64),
            "end": np.asarray(ends, dtype=np.int64),
            "n_tokens": np.asarray(n_tokens, dtype=np.int32),
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
        with pq.ParquetWriter(tmp, schema(dim, file_metadata(embed_settings(embedder)))) as writer:
            for item in items:
                writer.write_table(table(item, dim))
                rows += len(item.chunks)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return rows


def embed_to_parquet(
    files: list[Path],
    out: Path,
    model: ModelOptions,
    run: RunOptions,
    ray_address: str | None = None,
    ray_actors: int | None = None,
    progress: Progress = SILENT,
) -> tuple[int, StoreSettings]:
    """`embed`: the chunk vectors of `files` written to `out` (rows written, and the settings
    they were made with): in this process into one file, or with `ray_address` on a Ray actor
    pool into a Parquet dataset (the folder `out`)."""
    if ray_actors is not None and ray_address is None:
        raise GenomeIndexError("--ray-actors applies with --ray")
    if ray_address is not None:
        from genome_index.build import cluster

        cluster.connect(ray_address)
        return cluster.embed_to_parquet(files, out, model, run, cluster.plan_pool(run, ray_actors), progress)
    embedder = Embedder(model, run)
    with progress.step("embedding", None, "bp", genomes=len(files)) as step:
        rows = write_parquet(embedder.embed_genomes(files, step=step), out, embedder)
    return rows, embed_settings(embedder)
